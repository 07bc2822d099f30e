"""The headline numbers of a finished run as the reports show them, from the registry's list
(:func:`pipeline.scores.aggregates.headline_metrics`): the printed summary and the review page read them here."""

from __future__ import annotations

from pipeline.scores.aggregates import Metric, headline_metrics
from pipeline.scores.registry import Aggregate


def is_missing(value) -> bool:
    """None or NaN."""
    return value is None or value != value


def format_number(value, aggregate: Aggregate) -> str:
    """``value`` as the aggregate says: a share as a percentage with one decimal, else with its ``digits``
    decimals; ``n/a`` when undefined."""
    if is_missing(value):
        return "n/a"
    return f"{100 * value:.1f}%" if aggregate.percent else f"{value:.{aggregate.digits}f}"


def summary_value(summary: dict, metric: Metric):
    """A headline metric's value in ``summary.json``: top level for the row's numbers (accuracy), else in the
    true-class maps' section (None when absent)."""
    section = summary if metric.map_name is None else (summary.get("true_class_maps") or {})
    return section.get(metric.aggregate.name)


def headline_values(summary: dict) -> list[tuple[Metric, object]]:
    """Each headline metric with its value in ``summary``, in the registry's order."""
    return [(metric, summary_value(summary, metric)) for metric in headline_metrics()]


def headline_line(summary: dict) -> str:
    """The printed summary's headline: the row's numbers, then the true-class maps' (``a 1.0% | true-class
    maps: b 0.500, ...``)."""
    values = headline_values(summary)
    rows = [f"{m.aggregate.label} {format_number(v, m.aggregate)}" for m, v in values if m.map_name is None]
    maps = [f"{m.aggregate.label} {format_number(v, m.aggregate)}" for m, v in values if m.map_name is not None]
    return f"  {', '.join(rows)} | true-class maps: {', '.join(maps)}"
