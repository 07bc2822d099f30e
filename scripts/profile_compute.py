"""Where the compute path's time goes: ``torch.profiler`` over ``audit_batch`` on in-memory batches.

    python scripts/profile_compute.py [--model lite0] [--batch-size 16] [--batches 2] [-- hydra overrides]

Prints the process CPU time of forward-only inference and of the compute path on the same batches (best of 3),
then the operators by self CPU time and the time of each stage (forward and maps, upsampling, scores) from
``record_function`` ranges.
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

from benchmark import benchmark_config, in_memory_batches, photo_folder

from pipeline.compute import audit_batch  # noqa: E402
from pipeline.setup import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lite0")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--rows", type=int, default=25, help="operators listed")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args, overrides = parser.parse_known_args()
    overrides = [o for o in overrides if o != "--"]
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        photo_folder(tmp / "data", args.batch_size * args.batches)
        cfg = benchmark_config(tmp, args.model, args.batch_size, overrides)
        setup = prepare(cfg, tmp / "prepare")
        batches, labels = in_memory_batches(setup, int(cfg.runtime.batch_size), args.batches)
        model = setup.engine.model

        def forward_only() -> None:
            with torch.inference_mode():
                for batch in batches:
                    images = (batch.image.float() / 255 - setup.input_mean) / setup.input_std
                    if setup.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    model(images)

        def compute_path() -> None:
            for batch, label in zip(batches, labels):
                audit_batch(setup, batch, label)

        cpu = {}
        for name, work in (("forward-only", forward_only), ("compute path", compute_path)):
            work()  # warm-up
            best = float("inf")
            for _ in range(3):  # process CPU time: what other jobs on a shared machine distort least
                start = time.process_time()
                work()
                best = min(best, time.process_time() - start)
            cpu[name] = best
        print(
            f"best of 3, process CPU time, {torch.get_num_threads()} threads: forward-only {cpu['forward-only'] * 1e3:.0f} ms, "
            f"compute path {cpu['compute path'] * 1e3:.0f} ms, ratio {cpu['forward-only'] / cpu['compute path']:.2f} "
            f"({args.batches} x {args.batch_size} images)"
        )
        start = time.perf_counter()
        forward_only()
        forward = time.perf_counter() - start
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            start = time.perf_counter()
            for batch, label in zip(batches, labels):
                audit_batch(setup, batch, label)
            ours = time.perf_counter() - start
        print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
        stages = [e for e in profile.key_averages() if e.key.startswith("audit.")]
        for event in sorted(stages, key=lambda e: -e.cpu_time_total):
            print(f"{event.key:32s} {event.cpu_time_total / 1e3:9.1f} ms")
        print(
            f"forward-only {forward * 1e3:.0f} ms, compute path (profiled) {ours * 1e3:.0f} ms for {args.batches} x {args.batch_size}"
        )


if __name__ == "__main__":
    main()
