"""Triage categories on crafted rows: each rule, its order, and the configured threshold."""

import numpy as np
import pandas as pd
import pytest

from pipeline.reports.triage import CATEGORIES, TriageSettings, triage, triage_counts, triage_with_reasons
from pipeline.settings import group_settings

NAN = float("nan")
# (correct, no_box, pred_empty, true_empty, pred_hit, pred_excess, true_hit, true_excess, box_area) -> expected
ROWS = [
    ((True, True, False, False, NAN, NAN, NAN, NAN, NAN), "object_not_in_input"),
    ((False, False, True, False, NAN, NAN, 1.0, 0.6, 0.2), "empty_map"),  # wrong: the predicted-class map is empty
    ((True, False, True, True, NAN, NAN, NAN, NAN, 0.2), "empty_map"),  # right: the true-class map is empty
    ((False, False, False, True, 1.0, 0.5, NAN, NAN, 0.2), "confused_on_object"),  # the true map does not matter
    (
        (False, False, False, False, 1.0, 0.1, 1.0, 0.7, 0.2),
        "wrong_mixed_evidence",
    ),  # peak on, energy barely above uniform
    ((False, False, False, False, 0.0, 0.8, 1.0, 0.7, 0.2), "wrong_mixed_evidence"),  # energy on, peak elsewhere
    ((False, False, False, False, 0.0, 0.1, 1.0, 0.7, 0.2), "distracted"),  # both measures say off
    ((True, False, False, False, 1.0, 0.6, 0.0, 0.6, 0.2), "right_mixed_evidence"),  # pointing miss, energy on
    ((True, False, False, False, 1.0, -0.3, 0.0, -0.3, 0.2), "right_for_wrong_reason"),  # peak off, avoids the box
    ((True, False, False, False, 1.0, 0.2, 1.0, 0.2, 0.2), "ok"),  # exactly at the threshold counts as on
    ((True, False, False, False, 1.0, NAN, 1.0, NAN, 1.0), "right_not_testable"),  # box = whole image
    ((True, False, False, False, 1.0, 0.05, 1.0, 0.05, 0.98), "right_not_testable"),  # the koala: box 98 %
    ((False, False, False, False, 0.0, -0.1, 1.0, 0.7, 0.8), "wrong_not_testable"),  # judged on the pred map's box
    ((True, False, False, False, 1.0, 0.5, 1.0, 0.5, 0.75), "ok"),  # exactly at max_box_fraction is testable
]
COLUMNS = [
    "correct",
    "no_box_in_input",
    "pred_empty",
    "true_empty",
    "pred_pointing_hit",
    "pred_excess_energy",
    "true_pointing_hit",
    "true_excess_energy",
]


def frame_of(rows) -> pd.DataFrame:
    """Rows as stored: nullable booleans for the flags and pointing game, float32 for the rest."""
    frame = pd.DataFrame([values[:8] for values, _ in rows], columns=COLUMNS)
    for column in ("pred_pointing_hit", "true_pointing_hit"):
        frame[column] = pd.array([None if np.isnan(v) else bool(v) for v in frame[column]], dtype="boolean")
    for column in ("pred_excess_energy", "true_excess_energy"):
        frame[column] = frame[column].astype(np.float32)
    area = np.array([values[8] for values, _ in rows], dtype=np.float32)
    frame["pred_box_area_fraction"] = area
    frame["true_box_area_fraction"] = area
    return frame


def test_each_rule_on_crafted_rows():
    frame = frame_of(ROWS)
    assert triage(frame).tolist() == [expected for _, expected in ROWS]


def test_thresholds_come_from_the_settings():
    frame = frame_of(ROWS)
    strict = triage(frame, TriageSettings(on_object_min_excess_energy=0.65))
    assert strict[3] == "wrong_mixed_evidence" and strict[9] == "right_mixed_evidence"
    lenient = triage(frame, TriageSettings(on_object_min_excess_energy=-1.0))
    assert lenient[4] == "confused_on_object" and lenient[8] == "right_mixed_evidence"
    everything_testable = triage(frame, TriageSettings(max_box_fraction=1.0))
    assert everything_testable[10] == "ok" and everything_testable[11] == "right_mixed_evidence"
    assert everything_testable[12] == "distracted"


def test_off_the_object_never_holds_a_pointing_hit():
    """The promise of the categories that say "off the object": the judged map's peak is off every box."""
    rng = np.random.default_rng(0)
    n = 2000
    rows = [
        (
            (
                bool(rng.random() < 0.5),
                False,
                False,
                False,
                float(rng.random() < 0.5),
                float(rng.uniform(-1, 1)),
                float(rng.random() < 0.5),
                float(rng.uniform(-1, 1)),
                float(rng.uniform(0, 1)),
            ),
            None,
        )
        for _ in range(n)
    ]
    frame = frame_of(rows)
    categories = triage(frame)
    judged_hit = np.where(frame["correct"], frame["true_pointing_hit"], frame["pred_pointing_hit"]).astype(bool)
    off = categories.isin(["distracted", "right_for_wrong_reason"]).to_numpy()
    assert off.any() and not (off & judged_hit).any()
    assert set(categories) <= set(CATEGORIES)


def test_reasons_state_the_evidence():
    reasons = triage_with_reasons(frame_of(ROWS))["triage_reason"].tolist()
    assert reasons[0] == "no annotated box is left in the network input"
    assert reasons[1] == "pred map is constant: no spatial evidence"
    assert reasons[6] == "pred map: peak off every box, excess energy +0.10 < 0.20"
    assert reasons[9] == "true map: peak in a box, excess energy +0.20 >= 0.20"
    assert reasons[11].startswith("98 % of the scored image is box (> 75 %)")


def test_settings_from_config_and_counts():
    settings = group_settings({"report": {"triage": {"on_object_min_excess_energy": 0.5}}}, "report").triage
    assert settings.on_object_min_excess_energy == pytest.approx(0.5)
    assert group_settings({"report": {}}, "report").triage == TriageSettings()
    counts = triage_counts(triage(frame_of(ROWS)))
    assert list(counts) == list(CATEGORIES) and sum(counts.values()) == len(ROWS)
    assert counts["wrong_mixed_evidence"] == 2 and counts["ok"] == 2 and counts["empty_map"] == 2
