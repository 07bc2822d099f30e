"""The export's per-sample records, built without FiftyOne (issue 24.1): what the FiftyOne adapter receives."""

from __future__ import annotations

import shutil
from importlib.util import find_spec

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.data.geometry import boxes_to_input
from pipeline.export.checks import ExportError
from pipeline.export.heatmaps import HEATMAP_RANGE, read_heatmap, stored_frame_maps
from pipeline.export.samples import (
    FLAG_FIELDS,
    field_name,
    field_types,
    iter_sample_batches,
    load_annotations,
    open_run,
    review_flags,
)
from tests.export.helpers import tiny_run
from tests.helpers_corpus import run_command_here


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run = open_run(tiny_run(root))
    run.records = load_annotations(run)
    batches = list(iter_sample_batches(run, root / "heatmaps", batch_size=5))
    return run, batches, root / "heatmaps"


def test_one_record_per_row_in_batches_with_the_rows_fields(exported):
    run, batches, _ = exported
    assert [len(b) for b in batches] == [5, 5, 2]
    records = [r for b in batches for r in b]
    assert sorted(r["audit_id"] for r in records) == sorted(run.frame["id"])
    kinds = field_types(run)
    for record in records:
        row = run.frame.loc[record["audit_id"]]
        assert record["filepath"] == row["path"]
        assert record["ground_truth"] == {"_type": "Classification", "label": row["label_name"]}
        assert record["prediction"]["label"] == row["pred_name"]
        assert record["prediction"]["confidence"] == pytest.approx(row["confidence"])
        for column in ("hardness", "mistakenness", "triage", "triage_reason", "pred_energy_in_box", "correct"):
            assert record[column] == (row[column] if not isinstance(row[column], float) else pytest.approx(row[column]))
        assert "pred_strategy" in record and kinds["pred_strategy"] == "int"  # null in a run this small: still typed
        assert set(FLAG_FIELDS) <= set(record) and "pred_map_grid" not in record and "id" not in record
        assert {key for key in record if not key.startswith("_")} - {"filepath"} <= set(kinds) | {
            "ground_truth",
            "ground_truth_boxes",
            "prediction",
            "pred_heatmap",
            "true_heatmap",
            "pred_map_box",
            "true_map_box",
        }


def test_ground_truth_boxes_are_the_annotations_relative_to_the_stored_image(exported):
    run, batches, _ = exported
    records = {r["audit_id"]: r for b in batches for r in b}
    # VOC (3, 4, 19, 22) 1-based inclusive on 24 x 24 -> pixel edges (2, 3, 19, 22)
    (box,) = records["img_00000"]["ground_truth_boxes"]["detections"]
    assert box["label"] == "cat" and box["bounding_box"] == pytest.approx([2 / 24, 3 / 24, 17 / 24, 19 / 24])
    boxes = [d["bounding_box"] for d in records["wide_b"]["ground_truth_boxes"]["detections"]]
    assert boxes == [
        pytest.approx([1 / 60, 1 / 30, 14 / 60, 27 / 30]),
        pytest.approx([29 / 60, 4 / 30, 29 / 60, 21 / 30]),
    ]


def test_heatmaps_are_the_saved_maps_on_the_stored_image(exported):
    run, batches, folder = exported
    records = {r["audit_id"]: r for b in batches for r in b}
    maps = pq.read_table(run.run_dir / "maps.parquet").to_pylist()
    for row in maps:
        record = records[row["id"]]
        signed = torch.tensor(np.asarray(row["maps"], np.float32).reshape(row["map_shape"]))[None]
        width, height = record["width"], record["height"]
        (expected,) = stored_frame_maps(signed, [run.placement(width, height)], run.input_size)
        for k, name in enumerate(row["map_names"][:2]):
            heatmap = record[f"{name}_heatmap"]
            assert heatmap["range"] == list(HEATMAP_RANGE) and heatmap["map_path"].startswith(str(folder))
            values = read_heatmap(heatmap["map_path"])
            assert values.shape[1] / values.shape[0] == pytest.approx(width / height, rel=0.05)
            np.testing.assert_allclose(values, expected[k], atol=0.5 / 65535 + 1e-6)
        same = record["pred_heatmap"]["map_path"] == record["true_heatmap"]["map_path"]
        assert same == bool(record["correct"])  # a right prediction's two maps are one map: one file
    assert len(list(folder.glob("*.png"))) == sum(2 - bool(r["correct"]) for r in records.values())


def test_thresholded_map_boxes_go_back_to_the_rows_input_coordinates(exported):
    run, batches, _ = exported
    checked = 0
    for record in (r for b in batches for r in b):
        for name in ("pred", "true"):
            detections = record[f"{name}_map_box"]["detections"]
            corners = [record[f"{name}_box_{e}_tau015"] for e in ("x1", "y1", "x2", "y2")]
            if any(c is None for c in corners):
                assert detections == []
                continue
            (detection,) = detections
            x, y, w, h = detection["bounding_box"]
            width, height = record["width"], record["height"]
            stored = np.array([[x * width, y * height, (x + w) * width, (y + h) * height]])
            back, _ = boxes_to_input(stored, run.placement(width, height))
            np.testing.assert_allclose(back[0], corners, atol=1e-3)
            assert detection["iou"] == pytest.approx(record[f"{name}_iou_tau015"])
            assert detection["label"] == record["pred_name" if name == "pred" else "label_name"]
            checked += 1
    assert checked >= 12


def test_review_flags_follow_the_summary():
    grid = np.zeros((4, 4))
    hot, cold = grid.copy(), grid.copy()
    hot[0, 3], cold[3, 0] = 1.0, 1.0
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "pred_name": ["triangle", "triangle", "circle", None],
            "label_name": ["circle", "triangle", "circle", "circle"],
            "pred_pointing_hit": pd.array([False, True, True, pd.NA], dtype="boolean"),
            "pred_off_box_grid": [hot.ravel(), cold.ravel(), cold.ravel(), None],
            "pred_strategy": pd.array([1, 0, pd.NA, pd.NA], dtype="Int32"),
        }
    )
    summary = {
        "shortcuts": {
            "flagged": ["triangle"],
            "classes": [
                {"pred_name": "triangle", "flagged": True, "hot_spot": {"significant": True, "cells": [0, 2, 2, 4]}},
                {"pred_name": "circle", "flagged": False},
            ],
        },
        "strategies": {"settings": {"by": "pred"}, "suspects": [{"name": "triangle", "clusters": [1]}]},
    }
    flags = review_flags(frame, summary)
    assert flags["shortcut_suspect_class"].tolist() == [True, True, False, False]
    assert flags["shortcut_peak_off_object"].tolist() == [True, False, False, None]
    assert flags["shortcut_peak_in_hot_spot"].tolist() == [True, False, None, None]
    assert flags["strategy_looks_off_object"].tolist() == [True, False, None, None]
    summary["shortcuts"]["classes"][0]["hot_spot"]["significant"] = False  # no fixed location: not asked
    assert review_flags(frame, summary)["shortcut_peak_in_hot_spot"].tolist() == [None] * 4
    assert review_flags(frame, {})["shortcut_suspect_class"].tolist() == [False] * 4


def test_column_names_fiftyone_reserves_are_prefixed():
    assert field_name("triage") == "triage" and field_name("tags") == "audit_tags"
    assert field_name("metadata") == "audit_metadata" and field_name("prediction") == "audit_prediction"
    assert field_name("a.b") == "a_b" and field_name("_x") == "audit_x" and field_name("$x") == "audit_x"


def test_a_run_without_saved_maps_is_refused_in_one_line(exported, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(exported[0].run_dir, run_dir)
    (run_dir / "maps.parquet").unlink()  # as a run with cam.save_maps=false (the default) leaves it
    with pytest.raises(ExportError, match="cam.save_maps=true"):
        open_run(run_dir)
    done = run_command_here(["export", "fiftyone", str(run_dir)])
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "cam.save_maps=true" in done.stderr
    missing = run_command_here(["export", "fiftyone", str(tmp_path / "nothing")])
    assert missing.returncode == 2 and "not a finished audit" in missing.stderr


@pytest.mark.skipif(find_spec("fiftyone") is not None, reason="FiftyOne is installed here")
def test_without_fiftyone_the_command_says_how_to_install_the_extra(exported):
    run, _, _ = exported
    done = run_command_here(["export", "fiftyone", str(run.run_dir)])
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert ".[fiftyone]" in done.stderr and "setup_fiftyone.sh" in done.stderr


def test_the_commands_default_heatmap_side_is_the_modules():
    from pipeline.export import command, heatmaps

    assert command.DEFAULT_MAX_SIDE == heatmaps.DEFAULT_MAX_SIDE
