"""The score registry drives score_map, the samples schema, the space conversion and the summary tables."""

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from pipeline.reports import finalize, schema
from pipeline.scores import aggregates, registry, score_map
from pipeline.scores.registry import Aggregate, Score, describe, score_columns, score_for_column
from pipeline.scores.space import coordinates_to_stored
from tests.scores.scores_reference import nan_equal, score_inputs

T = torch.tensor


def test_score_map_returns_the_registry_columns_in_order():
    maps, boxes, valid, empty = score_inputs()
    out = score_map(T(maps), T(maps), T(empty), T(boxes), T(valid), taus=(0.15, 0.3))
    assert list(out) == [column for column, _, _ in score_columns((0.15, 0.3))]
    assert "iou_tau030" in out and "box_y2_tau015" in out


def test_every_score_describes_itself_on_one_line_with_a_valid_dtype():
    for score in registry.SCORES:
        assert score.description and "\n" not in score.description, score.name
        assert pa.type_for_alias(score.dtype) is not None
        assert ("{tau}" in score.description) == score.per_tau, score.name  # per-tau scores name their threshold
    assert describe("iou_tau030").startswith("IoU") and "0.3 x max" in describe("iou_tau030")
    assert describe("energy_in_box_tau015") is None and describe("iou") is None and describe("pred") is None


def test_coordinates_to_stored_converts_exactly_the_registry_coordinates():
    maps, boxes, valid, empty = score_inputs()
    out = score_map(T(maps), T(maps), T(empty), T(boxes), T(valid), taus=(0.15,))
    scale = torch.full((len(maps), 2), 2.0)
    scale[:, 1] = 4.0
    stored = coordinates_to_stored(out, scale)
    for column, values in out.items():
        coordinate = score_for_column(column).coordinate
        if coordinate is None:
            assert torch.equal(stored[column].nan_to_num(-7), values.nan_to_num(-7)), column
        elif coordinate.endswith("edge"):
            assert nan_equal(stored[column], values / (2.0 if coordinate[0] == "x" else 4.0), atol=0), column
        else:
            assert nan_equal(
                stored[column], torch.floor((values + 0.5) / (2.0 if coordinate[0] == "x" else 4.0)), atol=0
            ), column
    assert {c for c in out if score_for_column(c).coordinate} == {
        "peak_row",
        "peak_col",
        "box_x1_tau015",
        "box_y1_tau015",
        "box_x2_tau015",
        "box_y2_tau015",
    }


def _half(x, tau=None):
    """A made-up score for the test below: half the energy in box."""
    return registry._energy(x) / 2


def test_a_new_registry_entry_reaches_score_map_schema_space_and_summary(monkeypatch):
    extra = Score(
        "half_energy",
        _half,
        "half the energy in box (test)",
        dtype="float64",
        coordinate="x_edge",
        aggregates=(Aggregate("half_energy_mean", "mean", ("true", "pred")),),
    )
    monkeypatch.setattr(registry, "SCORES", registry.SCORES + (extra,))
    maps, boxes, valid, empty = score_inputs()
    out = score_map(T(maps), T(maps), T(empty), T(boxes), T(valid))
    assert nan_equal(out["half_energy"], out["energy_in_box"] / 2)
    assert nan_equal(
        coordinates_to_stored(out, torch.full((len(maps), 2), 2.0))["half_energy"], out["half_energy"] / 2, atol=0
    )
    assert ("half_energy", pa.float64()) in schema.score_fields([0.15])
    frame = pd.DataFrame(
        {
            "label": [0, 0, 1],
            "label_name": ["a", "a", "b"],
            "correct": [True, False, True],
            "confidence": [0.9, 0.8, 0.7],
        }
    )
    for m in ("true", "pred"):
        for column in out:
            frame[f"{m}_{column}"] = out[column][:3].numpy()
        frame[f"{m}_empty"] = empty[:3]
    assert nan_equal(
        [finalize.dataset_scores(frame, "true", "tau015")["half_energy_mean"]], [np.nanmean(frame["true_half_energy"])]
    )
    classes = finalize.class_table(frame, "tau015")
    assert {"true_half_energy_mean", "pred_half_energy_mean"} <= set(classes.columns)


def test_summary_aggregates_follow_the_registry_order():
    names = [name for _, name, _ in aggregates.summary_aggregates("tau015")]
    assert names[:4] == ["energy_in_box", "energy_lift", "excess_energy", "pointing_game_accuracy"]
    assert names[-2:] == ["gt_known_localisation_accuracy", "top1_localisation_accuracy"]
    for score in registry.SCORES:  # every declared kind can be computed
        assert all(aggregate.kind in aggregates.AGGREGATIONS for aggregate in score.aggregates), score.name
