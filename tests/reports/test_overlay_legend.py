"""Overlays that explain themselves (issue 17.4): a legend strip drawn into the picture, the triage category
and reason on top (as samples.parquet has them, with the run's report.triage), one map panel when the
predicted and true class are the same, and a thumbnail beside every overlay."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.reports import overlay_text, overlays
from pipeline.reports.overlays import (
    COLOUR_BAR_WIDTH,
    GREEN,
    HEADER_BACKGROUND,
    LEGEND_BACKGROUND,
    MAGENTA,
    MIN_PANEL_WIDTH,
    THUMB_DIR,
    THUMB_SIDE,
    draw_overlay_and_thumbnail,
    panel_size,
    safe_file_stem,
)
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process

IMAGE = np.full((64, 64, 3), 90, np.uint8)
HEAT = np.random.default_rng(0).random((64, 64), dtype=np.float32)
BOXES = np.array([[8, 8, 40, 40]], np.float32)


def _draw(header=(), map_boxes=((10.0, 10.0, 30.0, 30.0),), tau=0.15):
    return draw_overlay_and_thumbnail(
        IMAGE, BOXES, [HEAT], [["picture"], ["map"]], map_boxes=map_boxes, header=header, tau=tau
    )


def _legend(picture: np.ndarray) -> np.ndarray:
    """The legend strip: the rows whose left edge has the legend's background (the captions' is white)."""
    rows = np.flatnonzero((picture[:, 0] == LEGEND_BACKGROUND).all(axis=-1))
    assert rows.size and np.array_equal(rows, np.arange(rows[0], picture.shape[0]))  # one strip, at the bottom
    return picture[rows[0] :]


def _has(colour, region: np.ndarray) -> bool:
    return bool((region == np.array(colour, np.uint8)).all(axis=-1).any())


def test_the_legend_strip_shows_the_box_colours_and_the_cross():
    picture, _ = _draw()
    legend = _legend(picture)
    assert legend.shape[0] >= 3 * 18  # swatches and two lines of notes, each at least 14 px text
    assert _has(GREEN, legend) and _has(MAGENTA, legend)  # the annotated and the thresholded-map boxes
    assert _has((255, 255, 255), legend[:, : picture.shape[1] // 2]) and _has((0, 0, 0), legend)
    without_map_box, _ = _draw(map_boxes=None)
    assert not _has(MAGENTA, _legend(without_map_box))  # no magenta box drawn: none in the legend


def test_the_legend_text_grows_with_the_panels():
    small, _ = _draw()
    large, _ = draw_overlay_and_thumbnail(
        np.full((1000, 1000, 3), 90, np.uint8), BOXES * 15, [np.ones((1000, 1000), np.float32)], [["a"], ["b"]]
    )
    assert overlay_text.font_size_for(MIN_PANEL_WIDTH) >= 14  # legible at the smallest overlay's own size
    assert _legend(large).shape[0] > 2 * _legend(small).shape[0]  # a 1,000 px panel: larger text, same lines


def test_the_header_names_the_triage_category_and_its_reason():
    plain, _ = _draw()
    one, _ = _draw(header=["triage: distracted", "why: pred map: peak off every box"])
    other, _ = _draw(header=["triage: confused_on_object", "why: pred map: peak in a box"])
    assert one.shape[0] > plain.shape[0] and one.shape[1] == plain.shape[1]
    top = one[: one.shape[0] - plain.shape[0]]
    assert _has(HEADER_BACKGROUND[::-1], top)  # the header band's background (RGB, the picture BGR)
    assert not np.array_equal(top, other[: other.shape[0] - plain.shape[0]])  # the text is drawn


def test_the_thumbnail_is_the_picture_and_the_judged_map_small():
    picture, thumbnail = _draw()
    assert thumbnail.shape[0] <= THUMB_SIDE and thumbnail.shape[1] <= 2 * THUMB_SIDE + 2
    assert thumbnail.shape[0] == min(THUMB_SIDE, panel_size(64, 64, 2)[0])
    tall, thumbnail = draw_overlay_and_thumbnail(
        np.zeros((900, 30, 3), np.uint8), BOXES, [np.ones((900, 30), np.float32)], [["a"], ["b"]]
    )
    assert thumbnail.shape[0] == THUMB_SIDE and thumbnail.shape[1] < 30  # the long side fitted


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An audit with every overlay drawn and a triage setting that is not the default (so the overlay's
    category must come from the run's report.triage); records what each overlay was given."""
    tmp = tmp_path_factory.mktemp("legend")
    good_dataset(tmp / "data", 12)
    drawn: dict[str, dict] = {}
    real = overlays.draw_overlay_and_thumbnail

    def recording(image, boxes, maps, captions, seen=None, map_boxes=None, header=(), tau=None):
        drawn[captions[0][0]] = {"maps": len(maps), "header": list(header), "tau": tau}
        return real(image, boxes, maps, captions, seen, map_boxes, header, tau)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(overlays, "draw_overlay_and_thumbnail", recording)
        overrides = base_overrides(
            tmp / "data",
            tmp / "cache",
            **{"report.overlays": "all", "report.triage.max_box_fraction": 0.95, "cam.top_k": 2},
        )
        run_in_process(overrides, tmp / "run")
    return tmp / "run", drawn, pd.read_parquet(tmp / "run" / "samples.parquet").set_index("id")


def test_each_overlay_names_the_triage_and_reason_of_its_row(run):
    _, drawn, frame = run
    assert set(drawn) == set(frame.index)
    assert frame["triage"].nunique() > 1 and not frame["triage"].str.endswith("not_testable").all()
    for sample_id, row in frame.iterrows():
        assert drawn[sample_id]["header"] == [f"triage: {row['triage']}", f"why: {row['triage_reason']}"]
        assert drawn[sample_id]["tau"] == 0.15


def test_a_right_prediction_gets_one_map_panel_a_wrong_one_two(run):
    run_dir, drawn, frame = run
    assert frame["correct"].any() and not frame["correct"].all()
    for sample_id, row in frame.iterrows():
        assert drawn[sample_id]["maps"] == (2 if row["correct"] else 3)  # (pred = true or pred, true) + top2
        picture = cv2.imread(str(run_dir / "overlays" / f"{safe_file_stem(sample_id)}.jpg"))
        panel = panel_size(32, 32, drawn[sample_id]["maps"] + 1)[1]
        assert picture.shape[1] == (drawn[sample_id]["maps"] + 1) * panel + COLOUR_BAR_WIDTH


def test_every_overlay_has_a_thumbnail(run):
    run_dir, _, frame = run
    for sample_id in frame.index:
        thumbnail = cv2.imread(str(run_dir / "overlays" / THUMB_DIR / f"{safe_file_stem(sample_id)}.jpg"))
        assert thumbnail is not None and thumbnail.shape[0] <= THUMB_SIDE and thumbnail.shape[1] <= 2 * THUMB_SIDE + 2


def test_the_thumbnail_marks_the_judged_maps_peak_at_its_own_size():
    heat = np.zeros((224, 224), np.float32)
    heat[60, 170] = 1.0
    _, thumbnail = draw_overlay_and_thumbnail(np.full((224, 224, 3), 120, np.uint8), BOXES, [heat], [["a"], ["b"]])
    zoom = THUMB_SIDE / panel_size(224, 224, 2)[0]
    x = THUMB_SIDE + 2 + int(170 * panel_size(224, 224, 2)[1] / 224 * zoom)  # in the map half
    y = int(60 * panel_size(224, 224, 2)[0] / 224 * zoom)
    white = (thumbnail[y - 6 : y + 7, x - 6 : x + 7] >= 250).all(axis=-1)
    assert white.sum() >= 12  # a cross a few pixels wide, not a speck
    assert not (thumbnail[:, :THUMB_SIDE] >= 250).all(axis=-1).any()  # none on the picture half
