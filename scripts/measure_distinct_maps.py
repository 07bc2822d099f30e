"""What scoring each distinct map once saves: the compute path with :func:`pipeline.scores.distinct.distinct_maps`
against the same path scoring every map, in alternating rounds in one process (issue 12).

    .venv/bin/python scripts/measure_distinct_maps.py [--batch-size 16] [--batches 2] [--rounds 5] [--threads 2]

EfficientNet-Lite0 on the 42 sample photos (as ``scripts/benchmark.py``). Prints the best round's process CPU
time of each variant and checks that both give the same columns (NaN counted equal).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchmark import benchmark_config, in_memory_batches, photo_folder  # noqa: E402

import pipeline.compute as run  # noqa: E402
import pipeline.setup as setup_module  # noqa: E402


def every_map(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The baseline: every map scored, each its own source (what the run did before)."""
    flat = torch.arange(targets.numel(), device=targets.device)
    return flat, flat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = {"every map": every_map, "distinct maps": run.distinct_maps}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        photo_folder(tmp / "data", args.batch_size * args.batches)
        setup = setup_module.prepare(benchmark_config(tmp, "lite0", args.batch_size, []), tmp / "prepare")
        batches, labels = in_memory_batches(setup, args.batch_size, args.batches)
        seconds = {name: [] for name in variants}
        columns = {}
        for _ in range(args.rounds):
            for name, choose in variants.items():
                run.distinct_maps = choose
                start = time.process_time()
                columns[name] = [run.audit_batch(setup, b, y)[0] for b, y in zip(batches, labels)]
                seconds[name].append(time.process_time() - start)
        run.distinct_maps = variants["distinct maps"]
        for every, once in zip(columns["every map"], columns["distinct maps"]):
            for key, values in every.items():
                assert torch.equal(
                    torch.nan_to_num(values.float(), nan=-9.0), torch.nan_to_num(once[key].float(), nan=-9.0)
                ), key
    right = sum(int(c["correct"].sum()) for c in columns["every map"])
    n = args.batch_size * args.batches
    print(
        f"{n} images, {right} right, {torch.get_num_threads()} threads, best of {args.rounds} rounds (process CPU time):"
    )
    for name, values in seconds.items():
        print(f"  {name:14s} {min(values) * 1e3:8.0f} ms   rounds: {', '.join(f'{v * 1e3:.0f}' for v in values)}")
    print("columns identical")


if __name__ == "__main__":
    main()
