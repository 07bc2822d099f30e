"""Paired tests on the images both runs scored: is a change more than chance?

Every metric of :func:`compared_metrics` (the score registry's gateable aggregates) is tested over all common images (:func:`paired_tests`) and per true class
(:func:`class_tests`, with Holm's correction over the classes: :func:`add_holm`). Accuracy uses McNemar's exact
test (only the images that changed carry information); the map numbers a paired bootstrap.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.compare.paired_stats import (
    Statistic,
    class_mean_statistic,
    holm_adjusted,
    mcnemar_exact,
    mean_statistic,
    paired_bootstrap,
)
from pipeline.scores.aggregates import gate_metrics

# The paired statistic of each aggregation kind compare can test: on every bootstrap resample the same number
# the summary reports (a share of the defined values is their mean). A kind without one cannot be gated.
STATISTICS: dict[str, Statistic] = {
    "mean": mean_statistic,
    "share_with_box": mean_statistic,
    "class_balanced_mean": class_mean_statistic,
}


def compared_metrics() -> dict[str, tuple[str, Statistic]]:
    """The metrics compare tests and gates (:func:`pipeline.scores.aggregates.gate_metrics`): name ->
    (samples column, with ``{tau}`` where the first tau's key goes; paired statistic of its kind).
    accuracy is tested with McNemar's exact test (and also bootstrapped)."""
    return {name: (metric.column, STATISTICS[metric.aggregate.kind]) for name, metric in gate_metrics().items()}


# z of the two-sided 95% normal interval: a percentile interval's half-width / Z95 is its standard error.
Z95 = 1.959963984540054


def _paired_values(before: pd.DataFrame, after: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``before``/``after`` values of ``column`` and class indices on the images where both are defined
    (both frames sorted by id, same ids)."""
    x = pd.to_numeric(before[column].astype("Float64"), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    y = pd.to_numeric(after[column].astype("Float64"), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    both = ~np.isnan(x) & ~np.isnan(y)
    labels = np.unique(before["label"].to_numpy(), return_inverse=True)[1]
    return x[both], y[both], labels[both]


def normal_p(delta: float, standard_error: float) -> float:
    """Two-sided p of ``delta`` under a normal approximation with ``standard_error`` (bootstrap-z):
    ``erfc(|delta| / se / sqrt(2))``."""
    if not standard_error > 0:
        return 1.0 if delta == 0 or delta != delta else 0.0
    return math.erfc(abs(delta) / standard_error / math.sqrt(2.0))


def _broke_fixed(x: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """Images right (1) before and wrong (0) now, and the reverse."""
    return int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())


def paired_tests(before: pd.DataFrame, after: pd.DataFrame, tau: str, resamples: int, seed: int, alpha: float) -> dict:
    """Every metric's change on the common images: point delta, percentile CI at ``1 - alpha`` (paired
    bootstrap), and for accuracy McNemar's exact p. ``significant``: the CI excludes 0 (accuracy: p < alpha)."""
    tests = {}
    for name, (template, statistic) in compared_metrics().items():
        column = template.format(tau=tau)
        if column not in before.columns or column not in after.columns:
            continue
        x, y, labels = _paired_values(before, after, column)
        result = paired_bootstrap(x, y, labels, statistic, resamples=resamples, seed=seed, confidence=1 - alpha)
        result.update(
            baseline=float(statistic(x, labels, np.arange(len(x))[None])[0]) if len(x) else float("nan"),
            current=float(statistic(y, labels, np.arange(len(y))[None])[0]) if len(y) else float("nan"),
            significant=bool(result["high"] < 0 or result["low"] > 0),
            test="paired bootstrap, percentile interval",
        )
        if name == "accuracy":
            broke, fixed = _broke_fixed(x, y)
            p = mcnemar_exact(broke, fixed)
            result.update(broke=broke, fixed=fixed, p=p, significant=bool(p < alpha), test="McNemar exact (two-sided)")
        tests[name] = result
    return tests


def _class_metric(x: np.ndarray, y: np.ndarray, metric: str, resamples: int, seed: int, alpha: float) -> dict:
    """One metric's columns of one class's row: baseline, current, delta, CI, n and p (see :func:`class_tests`)."""
    boot = paired_bootstrap(
        x, y, np.zeros(len(x), dtype=np.int64), mean_statistic, resamples=resamples, seed=seed, confidence=1 - alpha
    )
    row = {
        f"{metric}_baseline": float(x.mean()) if len(x) else float("nan"),
        f"{metric}_current": float(y.mean()) if len(y) else float("nan"),
        f"{metric}_delta": boot["delta"],
        f"{metric}_low": boot["low"],
        f"{metric}_high": boot["high"],
        f"{metric}_n": boot["n"],
    }
    if metric == "accuracy":
        broke, fixed = _broke_fixed(x, y)
        row.update(broke=broke, fixed=fixed, accuracy_p=mcnemar_exact(broke, fixed))
    else:
        spread = (boot["high"] - boot["low"]) / (2 * Z95) if len(x) > 1 else float("nan")
        row[f"{metric}_p"] = normal_p(boot["delta"], spread) if len(x) > 1 else 1.0
    return row


def class_tests(
    before: pd.DataFrame, after: pd.DataFrame, tau: str, metrics: list[str], resamples: int, seed: int, alpha: float
) -> pd.DataFrame:
    """Per true class, for each of ``metrics``: baseline, current, delta, CI at ``1 - alpha`` and a two-sided p
    (accuracy: McNemar exact; others: normal approximation with the bootstrap's standard error, so that a
    Holm-corrected p of many classes stays resolvable). One row per class."""
    columns = {metric: compared_metrics()[metric][0].format(tau=tau) for metric in metrics}
    rows = []
    for (label, name), index in before.groupby(["label", "label_name"]).groups.items():
        b, a = before.loc[index], after.loc[index]
        row = {"label": int(label), "label_name": name, "count": len(index)}
        for metric in metrics:
            x, y, _ = _paired_values(b, a, columns[metric])
            row.update(_class_metric(x, y, metric, resamples, seed, alpha))
        rows.append(row)
    return pd.DataFrame(rows)


def add_holm(per_class: pd.DataFrame, metrics: list[str], min_class_images: int) -> pd.DataFrame:
    """``per_class`` with ``{metric}_p_holm`` for each of ``metrics``: Holm's adjusted p over the classes with at
    least ``min_class_images`` images (the family a per-class gate tests; :func:`holm_adjusted`), NaN for the
    smaller classes, which are reported but never gated."""
    if not len(per_class):
        return per_class
    per_class = per_class.copy()
    eligible = (per_class["count"] >= min_class_images).to_numpy()
    for metric in metrics:
        adjusted = np.full(len(per_class), np.nan)
        adjusted[eligible] = holm_adjusted(per_class.loc[eligible, f"{metric}_p"].to_numpy(dtype=np.float64))
        per_class[f"{metric}_p_holm"] = adjusted
    return per_class
