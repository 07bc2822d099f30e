"""How much of its dataset each run audited, and the coverage gates: counts against thresholds, no test (a
missing image is not noise). A night that audited 60 of 300 images is a failed night, not a smaller one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.compare.runs import run_identity

# Coverage gates: name (the option without --, underscores) -> what its value is.
COVERAGE_GATES = {
    "min_coverage": "images audited / the current run's dataset size (the rest were skipped)",
    "min_reference_coverage": "share of the baseline's audited images that the current run audited too",
    "max_skipped_rise": "share of the dataset skipped now minus the share skipped in the baseline",
}


def run_coverage(run_dir: Path, rows: pd.DataFrame) -> dict:
    """How much of its dataset a finished run audited: ``audited`` (rows of ``samples.parquet``), ``skipped``
    (ids with an ``errors.parquet`` row at any stage but ``overlay``, not audited: unreadable, unannotated,
    duplicate...), ``dataset_size`` (``summary.json`` -> provenance.dataset.samples, the records indexed after
    ``data.limit``; ``audited + skipped`` when absent) and the two shares of ``dataset_size``."""
    skipped = 0
    errors_path = Path(run_dir) / "errors.parquet"
    if errors_path.is_file():
        errors = pd.read_parquet(errors_path, columns=["id", "stage"])
        failed = set(errors.loc[errors["stage"] != "overlay", "id"].astype(str))
        skipped = len(failed - set(rows["id"].astype(str)))
    audited = len(rows)
    size = (run_identity(run_dir)["dataset"] or {}).get("samples")
    size = int(size) if isinstance(size, (int, float)) and size > 0 else audited + skipped
    return {
        "audited": audited,
        "skipped": skipped,
        "dataset_size": size,
        "audited_fraction": audited / size if size else float("nan"),
        "skipped_fraction": skipped / size if size else float("nan"),
    }


def coverage(baseline_dir: Path, current_dir: Path, before_all: pd.DataFrame, after_all: pd.DataFrame) -> dict:
    """Both runs' :func:`run_coverage` and ``reference_coverage``: the share of the baseline's audited images
    that the current run audited too (``common`` of ``baseline.audited``)."""
    common = len(set(before_all["id"]) & set(after_all["id"]))
    first, second = run_coverage(baseline_dir, before_all), run_coverage(current_dir, after_all)
    return {
        "baseline": first,
        "current": second,
        "common": common,
        "reference_coverage": common / first["audited"] if first["audited"] else float("nan"),
    }


def coverage_gates(
    found: dict, min_coverage: float | None, min_reference_coverage: float | None, max_skipped_rise: float | None
) -> list[dict]:
    """One entry per coverage gate asked for (None: off): ``{"metric", "scope": "coverage", "threshold",
    "value", "audited", "skipped", "dataset_size", "tripped", "means"}``. Counts, not estimates: no test."""
    current, baseline = found["current"], found["baseline"]
    gates = []
    for name, threshold, value, tripped_when in (
        ("min_coverage", min_coverage, current["audited_fraction"], "below"),
        ("min_reference_coverage", min_reference_coverage, found["reference_coverage"], "below"),
        (
            "max_skipped_rise",
            max_skipped_rise,
            current["skipped_fraction"] - baseline["skipped_fraction"],
            "above",
        ),
    ):
        if threshold is None:
            continue
        tripped = bool(value < threshold) if tripped_when == "below" else bool(value > threshold)
        gates.append(
            {
                "metric": name,
                "scope": "coverage",
                "threshold": threshold,
                "value": float(value) + 0.0,
                "audited": current["audited"],
                "skipped": current["skipped"],
                "dataset_size": current["dataset_size"],
                "baseline_audited": baseline["audited"],
                "baseline_skipped": baseline["skipped"],
                "common": found["common"],
                "tripped": tripped,
                "means": COVERAGE_GATES[name],
            }
        )
    return gates
