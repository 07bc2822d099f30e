"""Triage: which images need a look, and why (the ``triage`` column of ``samples.parquet``).

Every scored image gets exactly one category, the first that applies in this order:

1. ``object_not_in_input``: no annotated box is left in the network input (e.g. cropped away by the
   centre crop); its box scores are NaN, so nothing below can be judged.
2. ``empty_map``: the map the verdict rests on is constant (the predicted-class map for a wrong
   prediction, the true-class map for a right one): the model gives no spatial evidence.
3. ``confused_on_object``: wrong, and the predicted-class map lies on the annotated object: the model
   looks at the right thing and names it wrongly (a fine-grained confusion, or a label to check).
4. ``distracted``: wrong, and the predicted-class map lies off the object (background, another object,
   a marker).
5. ``right_for_wrong_reason``: correct, but the true-class map lies off the object.
6. ``ok``: correct, and the true-class map lies on the object.

A map lies **on the object** when its peak hits a box (pointing game, with the run's tolerance) **and**
its excess energy ``(E - A) / (1 - A)`` reaches ``on_object_min_excess_energy``
(``conf/report/default.yaml``, ``triage``); otherwise it lies off it. An undefined excess energy (the box
covers the whole scored image, A = 1) leaves the pointing game alone to decide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# The categories in the order they are assigned (and shown, most in need of a look first after the
# two that cannot be judged).
CATEGORIES: tuple[str, ...] = (
    "object_not_in_input",
    "empty_map",
    "confused_on_object",
    "distracted",
    "right_for_wrong_reason",
    "ok",
)
# Shown first on the review page: the categories that call for a decision, most severe first.
SEVERITY_ORDER: tuple[str, ...] = (
    "distracted",
    "right_for_wrong_reason",
    "confused_on_object",
    "empty_map",
    "object_not_in_input",
    "ok",
)


@dataclass
class TriageSettings:
    """``report.triage``: when a map counts as lying on the annotated object.

    Also the schema of ``report.triage`` (:mod:`pipeline.settings`): not frozen, since OmegaConf makes a
    frozen dataclass a read-only node that the YAML values cannot be merged into."""

    on_object_min_excess_energy: float = 0.2


def on_object(pointing_hit: pd.Series, excess_energy: pd.Series, settings: TriageSettings) -> np.ndarray:
    """Per row: the map's peak hits a box and its excess energy reaches the threshold (NaN excess: the
    pointing game decides). ``[N]`` bool; False where the pointing game is undefined."""
    hit = pointing_hit.to_numpy(dtype=np.float64) == 1.0
    excess = excess_energy.to_numpy(dtype=np.float64)
    enough = np.isnan(excess) | (excess >= settings.on_object_min_excess_energy)
    return hit & enough


def triage(frame: pd.DataFrame, settings: TriageSettings = TriageSettings()) -> pd.Series:
    """The category of every row of ``samples.parquet`` (see the module docstring), as a string Series.

    Reads ``correct``, ``no_box_in_input``, ``pred_empty``/``true_empty``, ``pred_pointing_hit``/
    ``true_pointing_hit`` and ``pred_excess_energy``/``true_excess_energy``.
    """
    correct = frame["correct"].to_numpy(dtype=bool)
    no_box = frame["no_box_in_input"].to_numpy(dtype=bool)
    # The map the verdict rests on: predicted class when wrong, true (= predicted) class when right.
    empty = np.where(correct, frame["true_empty"].to_numpy(dtype=bool), frame["pred_empty"].to_numpy(dtype=bool))
    pred_on = on_object(frame["pred_pointing_hit"], frame["pred_excess_energy"], settings)
    true_on = on_object(frame["true_pointing_hit"], frame["true_excess_energy"], settings)
    category = np.select(
        [no_box, empty, ~correct & pred_on, ~correct, ~true_on],
        ["object_not_in_input", "empty_map", "confused_on_object", "distracted", "right_for_wrong_reason"],
        default="ok",
    )
    return pd.Series(category, index=frame.index, name="triage", dtype=object)


def triage_counts(categories: pd.Series) -> dict[str, int]:
    """``{category: images}`` for every category (zeros included), in :data:`CATEGORIES` order."""
    counts = categories.value_counts()
    return {name: int(counts.get(name, 0)) for name in CATEGORIES}
