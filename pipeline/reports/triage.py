"""Triage: which images need a look, and why (the ``triage`` and ``triage_reason`` columns of ``samples.parquet``).

Every scored image gets exactly one category, the first that applies in this order. The **judged map** is
the predicted-class map for a wrong prediction and the true-class (= predicted-class) map for a right one.

1. ``object_not_in_input``: no annotated box is left in the network input (e.g. cropped away by the
   centre crop); its box scores are null, so nothing below can be judged.
2. ``empty_map``: the judged map is constant: the model gives no spatial evidence.
3. ``wrong_not_testable`` / ``right_not_testable``: the boxes cover more than ``max_box_fraction`` of the
   scored image (default 0.75). From about there a peak anywhere in the input lies within the pointing
   tolerance of the box (a centred box of 75 % of a 224 px input, dilated by 15 px, covers all of it; a
   peak placed at random already hits 83 % of the time at 60 %), so the pointing game can no longer say
   "off", and the verdict would rest on the excess energy alone, whose room ``1 - A`` is then a thin border
   narrower than one cell of a 7 x 7 backbone map.
4. ``confused_on_object``: wrong, and the predicted-class map lies **on** the object: the model looks at
   the right thing and names it wrongly (a fine-grained confusion, or a label to check).
5. ``distracted``: wrong, and the predicted-class map lies **off** the object (background, another
   object, a marker).
6. ``wrong_mixed_evidence``: wrong, and the two measures disagree about the predicted-class map (its peak
   is on the object but most of its energy is not, or the reverse).
7. ``right_for_wrong_reason``: correct, but the true-class map lies **off** the object.
8. ``right_mixed_evidence``: correct, and the two measures disagree about the true-class map.
9. ``ok``: correct, and the true-class map lies **on** the object.

Two measures judge a map: the **pointing game** (its peak hits a box, with the run's tolerance) and the
**excess energy** ``(E - A) / (1 - A)`` against ``on_object_min_excess_energy`` (E energy in box, A box
area fraction). A map lies **on** the object when both say so (peak in a box, excess at least the
threshold) and **off** it when both say so (peak off every box, excess below the threshold); otherwise the
evidence is **mixed**. So an "off the object" category (``distracted``, ``right_for_wrong_reason``) never
holds a map whose peak hits a box, which is what its overlay shows. An undefined excess energy (A = 1; only
reachable with ``max_box_fraction`` = 1) leaves the pointing game alone to decide.

``triage_reason`` states the evidence behind each category in one line, e.g.
``pred map: peak off every box, excess energy -0.07 < 0.20``; the overlay and the review page print it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.settings import TriageSettings

# The categories in the order they are assigned.
CATEGORIES: tuple[str, ...] = (
    "object_not_in_input",
    "empty_map",
    "wrong_not_testable",
    "right_not_testable",
    "confused_on_object",
    "distracted",
    "wrong_mixed_evidence",
    "right_for_wrong_reason",
    "right_mixed_evidence",
    "ok",
)
# Shown first on the review page: the categories that call for a decision, most severe first.
SEVERITY_ORDER: tuple[str, ...] = (
    "distracted",
    "right_for_wrong_reason",
    "wrong_mixed_evidence",
    "confused_on_object",
    "right_mixed_evidence",
    "wrong_not_testable",
    "empty_map",
    "object_not_in_input",
    "right_not_testable",
    "ok",
)
# Nothing to look at: a right answer whose map is on the object, or whose box leaves nothing to judge.
NO_LOOK_NEEDED: tuple[str, ...] = ("ok", "right_not_testable")
# One line per category, for the summary, the review page and the data dictionary.
MEANINGS: dict[str, str] = {
    "object_not_in_input": "no annotated box is left in the network input: check the crop or the box",
    "empty_map": "the judged map is constant: the target layer gives no spatial evidence",
    "wrong_not_testable": "wrong, and the box fills so much of the input that on / off the object cannot be told",
    "right_not_testable": "right, and the box fills so much of the input that on / off the object cannot be told",
    "confused_on_object": "wrong, and the predicted-class map lies on the object: a fine-grained confusion or a label to check",
    "distracted": "wrong, and the predicted-class map lies off the object (peak off every box, energy not on it)",
    "wrong_mixed_evidence": "wrong, and the predicted-class map's peak and its energy disagree about the object",
    "right_for_wrong_reason": "right, but the true-class map lies off the object (peak off every box, energy not on it)",
    "right_mixed_evidence": "right, and the true-class map's peak and its energy disagree about the object",
    "ok": "right, and the true-class map lies on the object",
}


def _as_float(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A nullable boolean or float column as float64 with NaN for null (a missing column: all NaN)."""
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column].astype("Float64"), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _as_bool(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A nullable boolean column as bool, null read as False."""
    return _as_float(frame, column) == 1.0


def on_object(pointing_hit: pd.Series, excess_energy: pd.Series, settings: TriageSettings) -> np.ndarray:
    """Per row: the map's peak hits a box and its excess energy reaches the threshold (NaN excess: the
    pointing game decides). ``[N]`` bool; False where the pointing game is undefined."""
    frame = pd.DataFrame({"hit": pointing_hit, "excess": excess_energy})
    hit = _as_float(frame, "hit") == 1.0
    excess = _as_float(frame, "excess")
    enough = np.isnan(excess) | (excess >= settings.on_object_min_excess_energy)
    return hit & enough


def _judged(frame: pd.DataFrame, correct: np.ndarray, score: str) -> np.ndarray:
    """The judged map's value of ``score`` (true-class map when right, predicted-class map when wrong)."""
    return np.where(correct, _as_float(frame, f"true_{score}"), _as_float(frame, f"pred_{score}"))


def triage_with_reasons(frame: pd.DataFrame, settings: TriageSettings = TriageSettings()) -> pd.DataFrame:
    """``triage`` (the category, see the module docstring) and ``triage_reason`` (its evidence in one line)
    of every row of ``samples.parquet``, as a two-column frame on ``frame``'s index.

    Reads ``correct``, ``no_box_in_input``, and ``<pred|true>_empty``, ``_pointing_hit``,
    ``_excess_energy`` and ``_box_area_fraction``.
    """
    correct = _as_bool(frame, "correct")
    no_box = _as_bool(frame, "no_box_in_input")
    empty = np.where(correct, _as_bool(frame, "true_empty"), _as_bool(frame, "pred_empty"))
    hit = _judged(frame, correct, "pointing_hit") == 1.0
    excess = _judged(frame, correct, "excess_energy")
    area = _judged(frame, correct, "box_area_fraction")
    threshold = settings.on_object_min_excess_energy
    enough = np.isnan(excess) | (excess >= threshold)
    crowded = area > settings.max_box_fraction  # NaN area (no box / old runs) is never crowded
    on = hit & enough
    off = ~hit & ~enough
    category = np.select(
        # one condition per category of CATEGORIES, in its order; the last, ok, is the default
        [no_box, empty, crowded & ~correct, crowded, ~correct & on, ~correct & off, ~correct, off, ~on],
        list(CATEGORIES[:-1]),
        default=CATEGORIES[-1],
    )
    which = np.where(correct, "true", "pred")
    peak = np.where(hit, "peak in a box", "peak off every box")
    excess_text = pd.Series(excess).map(lambda v: "n/a" if np.isnan(v) else f"{v:+.2f}").to_numpy(dtype=object)
    compare = np.where(np.isnan(excess), "(box = whole image)", np.where(enough, ">=", "<"))
    evidence = (
        pd.Series(which, dtype=object)
        + " map: "
        + peak
        + ", excess energy "
        + excess_text
        + " "
        + compare
        + np.where(np.isnan(excess), "", f" {threshold:.2f}")
    ).to_numpy(dtype=object)
    area_text = pd.Series(area).map(lambda v: f"{100 * v:.0f} %" if np.isfinite(v) else "n/a").to_numpy(dtype=object)
    crowded_text = (
        pd.Series(area_text, dtype=object)
        + f" of the scored image is box (> {100 * settings.max_box_fraction:.0f} %): too little room to tell on from off the object"
    ).to_numpy(dtype=object)
    reason = np.select(
        [no_box, empty, crowded],
        [
            np.full(len(frame), "no annotated box is left in the network input", dtype=object),
            (pd.Series(which, dtype=object) + " map is constant: no spatial evidence").to_numpy(dtype=object),
            crowded_text,
        ],
        default=evidence,
    )
    return pd.DataFrame({"triage": category.astype(object), "triage_reason": reason}, index=frame.index)


def triage_rule_text(settings: TriageSettings) -> str:
    """The rule in one line, for the summary and the review page."""
    return (
        "the judged map (predicted class when wrong, true class when right) is on the object when its peak hits a "
        f"box and its excess energy is at least {settings.on_object_min_excess_energy:g}, off it when neither "
        f"holds, mixed otherwise; not testable when the boxes cover more than {100 * settings.max_box_fraction:g} % "
        "of the scored image"
    )


def triage(frame: pd.DataFrame, settings: TriageSettings = TriageSettings()) -> pd.Series:
    """The category of every row of ``samples.parquet`` (see the module docstring), as a string Series."""
    return triage_with_reasons(frame, settings)["triage"].rename("triage")


def triage_counts(categories: pd.Series) -> dict[str, int]:
    """``{category: images}`` for every category (zeros included), in :data:`CATEGORIES` order."""
    counts = categories.value_counts()
    return {name: int(counts.get(name, 0)) for name in CATEGORIES}
