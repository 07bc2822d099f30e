"""What ``cam-audit compare`` writes: ``compare.json``, ``samples_diff.parquet`` and ``classes_diff.parquet``,
every table column with its ``description`` (Parquet field metadata, like the audit's tables)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.jsonio import write_json_atomic
from pipeline.reports.parts import write_table_atomic
from pipeline.reports.schema import with_descriptions
from pipeline.scores.aggregates import gate_metrics

# compare.json's keys, in order: the verdict first.
COMPARE_JSON_KEYS = (
    "verdict",
    "tripped",
    "baseline",
    "current",
    "data",
    "definitions",
    "coverage",
    "overall",
    "tests",
    "gates",
    "settings",
)


def compare_json(result: dict) -> dict:
    """What ``compare.json`` holds (and ``cam-audit compare --format json`` prints): :data:`COMPARE_JSON_KEYS`."""
    return {key: result[key] for key in COMPARE_JSON_KEYS if key in result}


# samples_diff.parquet's columns (Parquet field metadata ``description``, like the audit's tables).
SAMPLES_DIFF_COLUMNS = {
    "id": "sample id, in both runs",
    "label": "true class: index into the baseline's outputs (the current run's aligned to it by key and name)",
    "label_name": "true class name",
    "pred_baseline": "class the baseline predicted (name)",
    "pred_current": "class the current run predicted (name)",
    "change": "fixed: wrong in the baseline, right now; broke: right in the baseline, wrong now; same: neither",
    "true_energy_in_box_baseline": "share of the true-class map's energy inside the annotated boxes, baseline; "
    "null for an empty map or no box",
    "true_energy_in_box_current": "share of the true-class map's energy inside the annotated boxes, current run",
    "true_energy_in_box_delta": "true_energy_in_box_current - true_energy_in_box_baseline (negative: less energy "
    "on the object now)",
    "true_energy_lift_delta": "current - baseline of the true-class energy lift (energy in box / box area fraction)",
    "true_peak_shift_px": "distance between the true-class map's maxima of the two runs, pixels of the scoring grid; "
    "null for an empty map, or when the coordinate space or the preprocessing differ (two pixel grids)",
}


def classes_diff_descriptions(columns: list[str], alpha: float, min_class_images: int) -> dict[str, str]:
    """Each ``classes_diff.parquet`` column's description (``{metric}_{kind}`` columns from the metric's
    meaning and the kind's)."""
    confidence = f"{100 * (1 - alpha):g}%"
    fixed = {
        "label": "true class: index into the baseline's outputs",
        "label_name": "true class name",
        "count": "the class's images in both runs",
        "broke": "the class's images right in the baseline and wrong now",
        "fixed": "the class's images wrong in the baseline and right now",
    }
    kinds = {
        "baseline": "in the baseline, over the class's images where it is defined in both runs",
        "current": "in the current run, over the same images",
        "delta": "current - baseline (negative: fell)",
        "low": f"lower bound of the {confidence} paired bootstrap percentile interval of the delta (--alpha)",
        "high": f"upper bound of the {confidence} paired bootstrap percentile interval of the delta",
        "n": "images where it is defined in both runs (what the test uses)",
        "p": "two-sided p of the change, uncorrected (accuracy: McNemar's exact test on broke / fixed; others: "
        "normal approximation with the bootstrap's standard error)",
        "p_holm": f"p after Holm's correction over the classes with at least {min_class_images} images "
        "(--min-class-images); a --max-class-drop gate trips when this is below --alpha and the drop beyond its "
        "threshold; null for smaller classes: reported, never gated",
    }
    meanings = {name: metric.description for name, metric in gate_metrics().items()}
    out = {}
    for column in columns:
        if column in fixed:
            out[column] = fixed[column]
            continue
        for metric, meaning in meanings.items():
            kind = column[len(metric) + 1 :] if column.startswith(f"{metric}_") else None
            if kind in kinds:
                out[column] = f"{meaning}: {kinds[kind]}"
                break
    return out


def classes_table(result: dict) -> pd.DataFrame:
    """``classes_diff.parquet``'s rows: :func:`~pipeline.compare.changes.class_changes`'s columns and the per-class tests' others (a column
    both have is the same number by construction: kept once)."""
    classes = result["classes"]
    if len(result.get("per_class", [])) and len(classes):
        tested = result["per_class"].drop(columns=[c for c in result["per_class"] if c in classes and c != "label"])
        classes = classes.merge(tested, on="label", how="left")
    return classes


def write_comparison(result: dict, out: Path) -> None:
    """``compare.json`` (:data:`COMPARE_JSON_KEYS`), ``samples_diff.parquet`` and ``classes_diff.parquet`` (per
    class: :func:`classes_table`) into ``out``, every table column with its ``description`` (field metadata)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "compare.json", compare_json(result))
    samples = pa.Table.from_pandas(result["samples"], preserve_index=False)
    write_table_atomic(with_descriptions(samples, SAMPLES_DIFF_COLUMNS), out / "samples_diff.parquet")
    classes = classes_table(result)
    settings = result.get("settings", {})
    described = classes_diff_descriptions(
        list(classes.columns), settings.get("alpha", 0.05), settings.get("min_class_images", 10)
    )
    table = with_descriptions(pa.Table.from_pandas(classes, preserve_index=False), described)
    write_table_atomic(table, out / "classes_diff.parquet")


def default_out(baseline: Path, current: Path) -> Path:
    """Beside the current run: ``<current>.compare/<baseline name>/`` (never inside a run folder)."""
    current = Path(current).absolute()
    return current.parent / f"{current.name}.compare" / Path(baseline).absolute().name
