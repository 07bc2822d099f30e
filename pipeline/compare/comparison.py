"""The comparison itself: :func:`compare_runs` (what changed) and :func:`compare_with_statistics` (that, plus
the paired tests, the coverage, the gates and the verdict), from the modules of this package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.compare.changes import class_changes, sample_changes
from pipeline.compare.coverage import coverage, coverage_gates
from pipeline.compare.definitions import definition_differences, grids_differ
from pipeline.compare.gates import check_gated_metrics, evaluate_gates, verdict
from pipeline.compare.runs import RunPair, common_rows, first_tau, read_pair
from pipeline.compare.significance import add_holm, class_tests, paired_tests
from pipeline.scores.aggregates import ACCURACY, ACCURACY_COLUMN, aggregate_value, dataset_scores


def overall_numbers(before: pd.DataFrame, after: pd.DataFrame, before_tau: str, after_tau: str) -> dict:
    """Each run's dataset numbers on the common images (accuracy, then :func:`~pipeline.scores.aggregates.dataset_scores` of the
    true-class maps, each at its own first tau: the registry's aggregates, as in ``summary.json``) and their
    differences."""
    out = {}
    for name, frame, tau in (("baseline", before, before_tau), ("current", after, after_tau)):
        accuracy = aggregate_value(frame, ACCURACY_COLUMN, ACCURACY)
        out[name] = {ACCURACY.name: accuracy, **dataset_scores(frame, "true", tau)}
    out["delta"] = {key: out["current"][key] - out["baseline"][key] for key in out["baseline"]}
    return out


def compare_runs(baseline_dir: Path, current_dir: Path, pair: RunPair | None = None) -> dict:
    """Compare two finished runs; see the package docstring for what comes back. ``pair``: what
    :func:`~pipeline.compare.runs.read_pair` gave for these folders, when the caller has read them already."""
    before_all, after_all, before_definitions, after_definitions, data_notes = pair or read_pair(
        baseline_dir, current_dir
    )
    before, after = common_rows(before_all, after_all)
    samples = sample_changes(before, after)
    differences = definition_differences(before_definitions, after_definitions)
    if grids_differ(differences):
        samples["true_peak_shift_px"] = np.nan  # peaks of two different pixel grids: no distance between them
    overall: dict = {
        "images_compared": len(before),
        "only_in_baseline": len(before_all) - len(before),
        "only_in_current": len(after_all) - len(after),
        "fixed": int((samples["change"] == "fixed").sum()),
        "broke": int((samples["change"] == "broke").sum()),
    }
    if len(before):
        overall.update(overall_numbers(before, after, first_tau(before_definitions), first_tau(after_definitions)))
    return {
        "baseline": str(baseline_dir),
        "current": str(current_dir),
        "data": data_notes,
        "definitions": differences,
        "overall": overall,
        "samples": samples,
        "classes": class_changes(before, after) if len(before) else pd.DataFrame(),
    }


def compare_with_statistics(
    baseline_dir: Path,
    current_dir: Path,
    max_drops: dict[str, float] | None = None,
    max_class_drops: dict[str, float] | None = None,
    alpha: float = 0.05,
    resamples: int = 2000,
    seed: int = 0,
    min_class_images: int = 10,
    min_coverage: float | None = None,
    min_reference_coverage: float | None = None,
    max_skipped_rise: float | None = None,
) -> dict:
    """:func:`compare_runs` plus the paired tests, the per-class tests, the coverage and the gates (see the
    package docstring); ``verdict`` (``pass`` / ``fail``) and ``tripped`` (the gates that tripped, with their
    numbers)."""
    pair = read_pair(baseline_dir, current_dir)  # each run's samples read once for the whole comparison
    result = compare_runs(baseline_dir, current_dir, pair)
    before_all, after_all, definitions, _, _ = pair
    before, after = common_rows(before_all, after_all)
    tau = first_tau(definitions)
    max_drops, max_class_drops = dict(max_drops or {}), dict(max_class_drops or {})
    tests = paired_tests(before, after, tau, resamples, seed, alpha) if len(before) else {}
    if len(before):
        check_gated_metrics(before, after, tau, tests, max_drops, max_class_drops, baseline_dir, current_dir)
    metrics = sorted(set(max_class_drops) | {"accuracy", "true_energy_in_box"})
    per_class = class_tests(before, after, tau, metrics, resamples, seed, alpha) if len(before) else pd.DataFrame()
    per_class = add_holm(per_class, metrics, min_class_images)
    found = coverage(baseline_dir, current_dir, before_all, after_all)
    gates = coverage_gates(found, min_coverage, min_reference_coverage, max_skipped_rise)
    gates += evaluate_gates(tests, per_class, max_drops, max_class_drops, alpha, min_class_images)
    outcome, tripped = verdict(gates)
    result.update(
        verdict=outcome,
        tripped=tripped,
        coverage=found,
        tests=tests,
        per_class=per_class,
        gates=gates,
        settings={
            "alpha": alpha,
            "resamples": resamples,
            "seed": seed,
            "min_class_images": min_class_images,
            "max_drop": max_drops,
            "max_class_drop": max_class_drops,
            "min_coverage": min_coverage,
            "min_reference_coverage": min_reference_coverage,
            "max_skipped_rise": max_skipped_rise,
        },
    )
    return result
