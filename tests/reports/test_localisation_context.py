"""summary.json -> localisation_context: the fixed-threshold localisation accuracy read beside the maps' box size."""

import numpy as np
import pandas as pd
import pytest

from pipeline.reports.finalize import localisation_context


def frame_of(map_side: float, box_fraction: float, n: int = 5) -> pd.DataFrame:
    """``n`` rows whose thresholded-map box is ``map_side`` px square and whose boxes cover ``box_fraction``."""
    return pd.DataFrame(
        {
            "true_box_x1_tau015": np.zeros(n),
            "true_box_y1_tau015": np.zeros(n),
            "true_box_x2_tau015": np.full(n, map_side),
            "true_box_y2_tau015": np.full(n, map_side),
            "true_box_area_fraction": np.full(n, box_fraction, dtype=np.float32),
        }
    )


def test_wide_maps_are_called_wide_with_the_ratio():
    frame = frame_of(100.0, 0.1)  # map box 10,000 px against 0.1 x 224^2 = 5,017.6 px of box
    summary = {"true_class_maps": {"gt_known_localisation_accuracy": 0.188}, "maxboxacc_v2": None}
    context = localisation_context(frame, summary, 0.15, np.full(5, 224.0**2))
    assert context["median_box_to_object_area"] == pytest.approx(10000 / (0.1 * 224**2), rel=1e-5)
    assert context["reading"].startswith("maps are wider than the objects: at tau 0.15 the map's box is 2.0 x")
    assert context["best_tau"] is None and "scores.maxboxacc.enabled=true" in context["reading"]


def test_best_tau_from_maxboxacc_and_undefined_rows_left_out():
    frame = frame_of(50.0, 0.05)
    frame.loc[0, "true_box_x2_tau015"] = np.nan  # an empty map: no thresholded box
    frame.loc[1, "true_box_area_fraction"] = np.nan  # no box in the input
    summary = {
        "true_class_maps": {"gt_known_localisation_accuracy": 0.2},
        "maxboxacc_v2": {"best_tau_iou50": 0.42, "maxboxacc_iou50": 0.61},
    }
    context = localisation_context(frame, summary, 0.15, np.full(5, 224.0**2))
    assert context["images"] == 3
    assert context["best_tau"] == 0.42 and context["gt_known_at_best_tau"] == 0.61
    assert "61.0 % at the dataset-best tau 0.42" in context["reading"]
    assert context["reading"].startswith("at tau 0.15 the map's box is about the object's size")
