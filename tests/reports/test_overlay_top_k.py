"""With ``cam.top_k`` > 1 an overlay shows every map the row scores: pred, true, then top2.. (issue 10)."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.reports.overlays import (
    COLOUR_BAR_WIDTH,
    JPEG_MAX_SIDE,
    draw_overlay,
    overlay_map_names,
    panel_size,
    safe_file_stem,
)
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process


def test_map_names_follow_the_top_k_columns():
    columns = ["id", "pred_energy_in_box", "top3_class_name", "top2_class_name", "top2_prob", "top10_class_name"]
    assert overlay_map_names(columns) == ["pred", "true", "top2", "top3", "top10"]
    assert overlay_map_names(["id", "pred_name"]) == ["pred", "true"]


def test_one_panel_per_map_and_a_caption_for_each():
    image = np.zeros((64, 64, 3), np.uint8)
    maps = [np.random.default_rng(k).random((64, 64), dtype=np.float32) for k in range(4)]
    captions = [["picture"]] + [[f"map {k}"] for k in range(4)]
    boxes = np.array([[8, 8, 40, 40]], np.float32)
    picture = draw_overlay(image, boxes, maps, captions, map_boxes=[(8.0, 8.0, 30.0, 30.0)] * 4)
    panel_height, panel_width = panel_size(64, 64, panels=5)
    assert picture.shape[1] == 5 * panel_width + COLOUR_BAR_WIDTH
    with pytest.raises(ValueError, match="4 maps need 5 captions"):
        draw_overlay(image, boxes, maps, captions[:3])


def test_many_panels_stay_under_the_jpeg_limit():
    for panels in (3, 11, 41, 101):
        height, width = panel_size(300, 4000, panels=panels)
        assert panels * width + COLOUR_BAR_WIDTH <= JPEG_MAX_SIDE and height >= 1


def test_a_top_3_run_draws_four_map_panels(tmp_path):
    """pred, true, top2, top3 for a wrong prediction; pred = true, top2, top3 for a right one (one panel)."""
    root = tmp_path / "data"
    good_dataset(root, 4)
    panels = {}
    for top_k in (1, 3):
        overrides = base_overrides(root, tmp_path / "cache", **{"cam.top_k": top_k, "report.overlays": "all"})
        run_in_process(overrides, tmp_path / f"run{top_k}")
        frame = pd.read_parquet(tmp_path / f"run{top_k}" / "samples.parquet")
        assert len(list((tmp_path / f"run{top_k}" / "overlays").glob("*.jpg"))) == 4
        for sample_id, correct in zip(frame["id"], frame["correct"]):
            width = cv2.imread(str(tmp_path / f"run{top_k}" / "overlays" / f"{safe_file_stem(sample_id)}.jpg")).shape[1]
            maps = top_k + (1 if correct else 2) - 1  # the picture is one more panel
            assert width == (maps + 1) * panel_size(32, 32, maps + 1)[1] + COLOUR_BAR_WIDTH
            panels[(top_k, sample_id)] = maps
    assert {panels[(3, i)] - panels[(1, i)] for i in frame["id"]} == {2}  # top2 and top3 added to each
