"""Triage categories on crafted rows: each rule, its order, and the configured threshold."""

import numpy as np
import pandas as pd
import pytest

from pipeline.reports.triage import CATEGORIES, TriageSettings, triage, triage_counts
from pipeline.settings import group_settings

NAN = float("nan")
# (correct, no_box, pred_empty, true_empty, pred_hit, pred_excess, true_hit, true_excess) -> expected
ROWS = [
    ((True, True, False, False, NAN, NAN, NAN, NAN), "object_not_in_input"),
    ((False, False, True, False, NAN, NAN, 1.0, 0.6), "empty_map"),  # wrong: the predicted-class map is empty
    ((True, False, True, True, NAN, NAN, NAN, NAN), "empty_map"),  # right: the true-class map is empty
    ((False, False, False, True, 1.0, 0.5, NAN, NAN), "confused_on_object"),  # the true map's emptiness does not matter
    (
        (False, False, False, False, 1.0, 0.1, 1.0, 0.7),
        "distracted",
    ),  # peak on the box, but energy barely above uniform
    ((False, False, False, False, 0.0, 0.8, 1.0, 0.7), "distracted"),  # energy in box but the peak elsewhere
    ((True, False, False, False, 1.0, 0.6, 0.0, 0.6), "right_for_wrong_reason"),  # pointing miss
    ((True, False, False, False, 1.0, -0.3, 1.0, -0.3), "right_for_wrong_reason"),  # avoids the box
    ((True, False, False, False, 1.0, 0.2, 1.0, 0.2), "ok"),  # exactly at the threshold counts as on the object
    ((True, False, False, False, 1.0, NAN, 1.0, NAN), "ok"),  # box = whole image: the pointing game decides
]


def frame_of(rows) -> pd.DataFrame:
    columns = [
        "correct",
        "no_box_in_input",
        "pred_empty",
        "true_empty",
        "pred_pointing_hit",
        "pred_excess_energy",
        "true_pointing_hit",
        "true_excess_energy",
    ]
    frame = pd.DataFrame([values for values, _ in rows], columns=columns)
    for column in columns[4:]:
        frame[column] = frame[column].astype(np.float32)  # as stored
    return frame


def test_each_rule_on_crafted_rows():
    frame = frame_of(ROWS)
    assert triage(frame).tolist() == [expected for _, expected in ROWS]


def test_threshold_comes_from_the_settings():
    frame = frame_of(ROWS)
    strict = triage(frame, TriageSettings(on_object_min_excess_energy=0.65))
    assert strict[3] == "distracted" and strict[8] == "right_for_wrong_reason" and strict[9] == "ok"
    lenient = triage(frame, TriageSettings(on_object_min_excess_energy=-1.0))
    assert lenient[4] == "confused_on_object" and lenient[7] == "ok"


def test_settings_from_config_and_counts():
    settings = group_settings({"report": {"triage": {"on_object_min_excess_energy": 0.5}}}, "report").triage
    assert settings.on_object_min_excess_energy == pytest.approx(0.5)
    assert group_settings({"report": {}}, "report").triage == TriageSettings()
    counts = triage_counts(triage(frame_of(ROWS)))
    assert list(counts) == list(CATEGORIES) and sum(counts.values()) == len(ROWS)
    assert counts["distracted"] == 2 and counts["ok"] == 2 and counts["empty_map"] == 2
