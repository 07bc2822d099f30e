"""The summary numbers of the audit, declared once beside the scores: every list of numbers a report shows
is derived here from :data:`~pipeline.scores.registry.SCORES` (each score's ``aggregates`` and
``group_maps``) and :data:`ACCURACY`.

- :func:`aggregate_value`: one :class:`~pipeline.scores.registry.Aggregate` of one column over a set of rows
  (the functions of :data:`AGGREGATIONS`, each with its formula);
- :func:`summary_aggregates`, :func:`dataset_scores`: what ``summary.json``'s map sections and
  ``classes.parquet`` hold;
- :func:`headline_metrics`: the headline numbers (the printed summary, the review page, compare's text);
- :func:`gate_metrics`: what ``cam-audit compare`` tests and gates (``--max-drop`` names them);
- :func:`group_columns`: the plain means in each group of ``report.group_by``.

So a new headline number that compare can gate is one registry entry and its maths; nothing else names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from pipeline.scores import registry
from pipeline.scores.registry import Aggregate

# The maps a sample's row scores, in the order of every report: the true class's, the predicted class's.
MAPS = ("true", "pred")
MAP_WORDS = {"true": "true-class", "pred": "predicted-class"}
MAP_SHORT = {"true": "true map", "pred": "pred. map"}  # in tables and lists of several maps' numbers

# The classifier's accuracy: not a score of a map but of the row (column ``correct``); compare tests it with
# McNemar's exact test. ``gate_maps`` is empty: its compare name is ``gate`` alone.
ACCURACY = Aggregate(
    "accuracy", "mean", (), label="accuracy", percent=True, headline=True, gate="accuracy", gate_maps=()
)
ACCURACY_COLUMN = "correct"


def mean_defined(values: pd.Series) -> float:
    """sum(v) / n over the n defined (non-null) values; NaN when none is."""
    values = values.dropna()
    return float(values.mean()) if len(values) else float("nan")


def share_with_box(frame: pd.DataFrame, column: str) -> float:
    """#(rows where the value is 1) / #(rows where it is defined: a box in the input, a non-empty map)."""
    values = frame[column]
    defined = values.notna()
    return float(values[defined].mean()) if defined.any() else float("nan")


def share_with_box_and_correct(frame: pd.DataFrame, column: str) -> float:
    """#(rows where the value is 1 and ``correct``) / #(rows where it is defined) (ILSVRC's top-1 localisation)."""
    values = frame[column]
    defined = values.notna()
    return (
        float((values[defined].astype(bool) & frame.loc[defined, "correct"]).mean()) if defined.any() else float("nan")
    )


def class_balanced_mean(frame: pd.DataFrame, column: str) -> float:
    """mean over true classes c of (mean of the defined values of class c) (TorchRay's pointing game:
    hits / (hits + misses) per class, then the mean over classes)."""
    per_class = frame.assign(_value=frame[column]).dropna(subset=["_value"]).groupby("label")["_value"].mean()
    return float(per_class.mean()) if len(per_class) else float("nan")


# The aggregation kinds a score can declare (pipeline.scores.registry.AggregationKind): (rows, column) -> one number.
AGGREGATIONS: dict[str, Callable[[pd.DataFrame, str], float]] = {
    "mean": lambda frame, column: mean_defined(frame[column]),
    "class_balanced_mean": class_balanced_mean,
    "share_with_box": share_with_box,
    "share_with_box_and_correct": share_with_box_and_correct,
}


def aggregate_value(frame: pd.DataFrame, column: str, aggregate: Aggregate) -> float:
    """One aggregate of one column; NaN when the rows lack the column (a run from before the score existed,
    read by compare), so that two runs' summaries always have the same keys."""
    return AGGREGATIONS[aggregate.kind](frame, column) if column in frame.columns else float("nan")


def score_column(score: registry.Score, tau: str) -> str:
    """The column suffix a score is summarised at: its name, or for a per-tau score its ``tau`` column."""
    return f"{score.name}_{tau}" if score.per_tau else score.name


def summary_aggregates(tau: str) -> list[tuple[str, str, Aggregate]]:
    """``(column suffix, summary name, aggregate)`` of every registry score with aggregates, in registry
    order; a per-tau score is summarised at ``tau`` (the first of ``scores.taus``) only."""
    return [
        (score_column(score, tau), aggregate.name, aggregate)
        for score in registry.SCORES
        for aggregate in score.aggregates
    ]


def dataset_scores(frame: pd.DataFrame, map_name: str, tau: str, class_table_only: bool = False) -> dict[str, float]:
    """The summary numbers of one map (``true`` or ``pred``) over the rows of ``frame``: each aggregate the
    score registry declares (with ``class_table_only``, those whose ``class_maps`` name this map), then
    the count of empty maps (true-class maps only in the class table)."""
    out = {
        name: aggregate_value(frame, f"{map_name}_{column}", aggregate)
        for column, name, aggregate in summary_aggregates(tau)
        if not class_table_only or map_name in aggregate.class_maps
    }
    if not class_table_only or map_name == "true":
        out["empty_maps"] = int(frame[f"{map_name}_empty"].sum())
    return out


@dataclass(frozen=True)
class Metric:
    """One aggregate of one samples column, as the reports name it: ``name`` (compare's test and gate name:
    ``accuracy``, ``true_energy_in_box``), ``column`` (``{tau}`` where the first tau's key goes),
    ``map_name`` (None for :data:`ACCURACY`)."""

    name: str
    column: str
    aggregate: Aggregate
    map_name: str | None
    description: str  # what it is, in one line (its label, map and the score's description)


def _accuracy_metric() -> Metric:
    name = ACCURACY.gate or ACCURACY.name
    return Metric(name, ACCURACY_COLUMN, ACCURACY, None, "accuracy (share of the images predicted right)")


def _map_metric(map_name: str, score: registry.Score, aggregate: Aggregate, name: str) -> Metric:
    meaning = score.description.replace("{tau}", "the first tau")
    description = f"{aggregate.label} of the {MAP_WORDS[map_name]} map ({meaning})"
    return Metric(name, f"{map_name}_{score_column(score, '{tau}')}", aggregate, map_name, description)


def headline_metrics() -> list[Metric]:
    """Accuracy, then each headline aggregate of the true-class maps, in registry order."""
    out = [_accuracy_metric()]
    for score in registry.SCORES:
        out += [_map_metric("true", score, a, f"true_{a.name}") for a in score.aggregates if a.headline]
    return out


def gate_metrics() -> dict[str, Metric]:
    """What compare tests and gates, by name: accuracy, then per map (true, pred) each aggregate with a
    ``gate`` for that map (``<map>_<gate>``), in registry order."""
    accuracy = _accuracy_metric()
    out = {accuracy.name: accuracy}
    for map_name in MAPS:
        for score in registry.SCORES:
            for aggregate in score.aggregates:
                if aggregate.gate and map_name in aggregate.gate_maps:
                    name = f"{map_name}_{aggregate.gate}"
                    out[name] = _map_metric(map_name, score, aggregate, name)
    return out


def group_columns() -> list[tuple[str, str, registry.Score]]:
    """``(column, map, score)`` of each plain mean in a summary group (``report.group_by``), in registry
    order: ``<map>_<score>`` for each map of the score's ``group_maps``."""
    return [(f"{m}_{score.name}", m, score) for score in registry.SCORES for m in score.group_maps]


def display(score: registry.Score) -> Aggregate:
    """How a person reads a score's column (label and format): its first aggregate, else its name in words."""
    return (
        score.aggregates[0] if score.aggregates else Aggregate(score.name, "mean", label=score.name.replace("_", " "))
    )
