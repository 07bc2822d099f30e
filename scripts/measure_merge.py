"""How long the merge of a sharded run takes, and its peak memory, for N rows (issue 22).

Writes N small images (24 x 24 noise, one box each, tests/helpers_corpus.good_dataset), audits them with the
tests' TinyNet on the CPU as K shards (``runtime.merge_when_last=false``, one after the other), then merges them
in a process of its own (what ``cam-audit merge RUN`` runs: pipeline.merge.merge_run) with a timer around each
step: the set-up rebuilt (``prepare``: index and model), the exactly-once check over the shards, the sanity check,
``finalize_run`` (the id-ordered merge of the parts and the report); and that process's peak RSS. With
``--compare`` it also audits the same images in one process (in-process, the same timers) and reports the same
steps of its end, so the merge's extra cost shows.

    python scripts/measure_merge.py --images 20000 --shards 4 --compare
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers_corpus import base_overrides, cli_command, good_dataset  # noqa: E402


def run(command: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])} ... failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def timed_steps() -> dict[str, float]:
    """Wrap the steps of a run's end (and of the merge) with timers; returns the dict they add their seconds to."""
    from pipeline import merge, shards

    seconds: dict[str, float] = {}

    def timer(module, name: str, label: str) -> None:
        inner = getattr(module, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - started

        setattr(module, name, timed)

    timer(merge, "prepare", "set-up (index, model)")
    timer(shards, "check_every_sample_once", "exactly-once check")
    timer(merge, "run_sanity_check", "sanity check")
    timer(merge, "finalize_run", "finalize (id-ordered merge of the parts, report)")
    return seconds


def in_this_process(mode: str, run_dir: Path, overrides: list[str]) -> None:
    """``--merge``: merge_run(run_dir); ``--single``: a one-process audit; prints the steps' seconds, the wall
    time and the peak RSS as one JSON line."""
    seconds = timed_steps()
    started = time.perf_counter()
    if mode == "merge":
        from pipeline.merge import merge_run

        merge_run(run_dir)
    else:
        from tests.helpers_corpus import run_in_process

        run_in_process(overrides, run_dir)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"steps": seconds, "wall": wall, "peak_rss_mib": peak}))


def measured(mode: str, run_dir: Path, overrides: list[str]) -> dict:
    command = [sys.executable, __file__, f"--{mode}", str(run_dir), *overrides]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def show(what: str, result: dict) -> None:
    steps = ", ".join(f"{name} {value:.1f}s" for name, value in result["steps"].items())
    print(f"{what}: {result['wall']:.1f}s in this process, peak RSS {result['peak_rss_mib']:.0f} MiB; {steps}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] in ("--merge", "--single"):
        in_this_process(sys.argv[1][2:], Path(sys.argv[2]), sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--compare", action="store_true", help="also audit them in one process")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.workdir or Path(scratch)
        started = time.perf_counter()
        good_dataset(work / "data", args.images)
        print(f"{args.images} images written in {time.perf_counter() - started:.0f}s", flush=True)
        options = base_overrides(
            work / "data",
            work / "cache",
            **{"runtime.batch_size": 64, "report.rows_per_part": 512, "report.review_page": "false"},
        )
        run_dir = work / "sharded"
        for shard in range(args.shards):
            sharded = [*options, f"runtime.shards={args.shards}", f"runtime.shard={shard}"]
            seconds = run(cli_command([*sharded, "runtime.merge_when_last=false"], run_dir))
            print(f"shard {shard} of {args.shards}: {seconds:.0f}s", flush=True)
        rows = json.loads((run_dir / "parts" / "shard-000" / "complete.json").read_text())
        show(
            f"merge of {args.images} rows from {args.shards} shards ({rows['images']} in shard 0)",
            measured("merge", run_dir, []),
        )
        if args.compare:
            show(f"one process, {args.images} rows (whole run)", measured("single", work / "single", options))


if __name__ == "__main__":
    main()
