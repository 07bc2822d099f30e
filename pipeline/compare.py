"""Compare two audits: ``python -m pipeline.compare BASELINE_RUN CURRENT_RUN [--out DIR] [--max-accuracy-drop X]``.

Writes ``compare.json`` (definition changes, headline numbers before / after / delta, counts),
``samples_diff.parquet`` (one row per common image) and ``classes_diff.parquet`` (per true class) to
``--out`` (default: ``CURRENT_RUN/compare``), and prints a short report (``pipeline/reports/compare.py``).
Exit status: 0; 1 when ``--max-accuracy-drop`` is given and accuracy fell by more than it (a nightly job can
fail on it); 2 when a folder is not a finished audit, cannot be read, or the runs share no image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa

from pipeline.reports.compare import compare_runs, render_comparison
from pipeline.reports.finalize import write_json_atomic
from pipeline.reports.parts import write_table_atomic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="run folder of the earlier audit (e.g. last night's)")
    parser.add_argument("current", type=Path, help="run folder of the audit to judge")
    parser.add_argument("--out", type=Path, default=None, help="where to write the comparison (default: CURRENT/compare)")
    parser.add_argument("--max-accuracy-drop", type=float, default=None,
                        help="exit 1 when accuracy on the common images fell by more than this (a fraction, 0.01 = 1 point)")
    parser.add_argument("--top", type=int, default=5, help="how many broken images and classes to print")
    args = parser.parse_args(argv)
    try:
        result = compare_runs(args.baseline, args.current)
    except Exception as error:  # noqa: BLE001 -- any unreadable run is exit 2, never the gate's exit 1
        print(f"cam-audit compare: cannot compare: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    if result["overall"]["images_compared"] == 0:
        print("cam-audit compare: the two runs have no image in common: nothing to compare", file=sys.stderr)
        return 2
    out = args.out or args.current / "compare"
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "compare.json", {k: result[k] for k in ("baseline", "current", "definitions", "overall")})
    write_table_atomic(pa.Table.from_pandas(result["samples"], preserve_index=False), out / "samples_diff.parquet")
    write_table_atomic(pa.Table.from_pandas(result["classes"], preserve_index=False), out / "classes_diff.parquet")
    print(render_comparison(result, args.top))
    print(f"  comparison: {out}")
    drop = -result["overall"].get("delta", {}).get("accuracy", 0.0)
    if args.max_accuracy_drop is not None and drop > args.max_accuracy_drop:
        print(f"cam-audit compare: accuracy fell by {drop:.3f}, more than --max-accuracy-drop={args.max_accuracy_drop}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
