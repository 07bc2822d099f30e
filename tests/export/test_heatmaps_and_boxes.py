"""Heatmap files (16-bit PNG, stated range, on the stored image) and box conversion of the export (issue 24.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data.geometry import boxes_to_input, plan_placement
from pipeline.export.boxes import map_box_in_stored, relative_xywh
from pipeline.export.heatmaps import HEATMAP_RANGE, encode_png16, read_heatmap, stored_frame_maps, write_heatmap


def test_heatmap_files_are_16_bit_grayscale_and_read_back_to_the_values(tmp_path):
    values = np.linspace(0, 1, 7 * 9).reshape(7, 9)
    values[0, 0], values[0, 1] = np.nan, 1.7  # NaN -> 0, clipped to 1
    path = tmp_path / "m.png"
    write_heatmap(path, values)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode in ("I;16", "I;16B") and image.size == (9, 7)
        assert np.asarray(image).max() == HEATMAP_RANGE[1] == 65535
    back = read_heatmap(path)
    assert back.dtype == np.float32 and back.shape == (7, 9)
    assert back[0, 0] == 0 and back[0, 1] == 1
    np.testing.assert_allclose(back.ravel()[2:], values.ravel()[2:], atol=0.5 / 65535 + 1e-7)
    # finer than 8 bits: two values 1/1000 apart stay apart
    assert len(np.unique(read_back(tmp_path, np.array([[0.5, 0.501, 0.502]])))) == 3
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left


def read_back(folder, values):
    (folder / "x.png").write_bytes(encode_png16(values))
    return read_heatmap(folder / "x.png")


def test_a_map_lands_where_the_network_saw_it_on_the_stored_image():
    # a 60 x 40 stored image, resized to 60 x 40 (short side 40), centre-cropped to 32 x 32: columns 14..46 seen
    placement = plan_placement(60, 40, "resize_crop", 32, 40)
    assert (placement.offset_x, placement.offset_y) == (-14, -4)
    low = torch.zeros(1, 2, 4, 4)
    low[0, 0, 1, 2] = 1.0  # one hot cell: network input x in [16, 24), y in [8, 16)
    low[0, 1] = -1.0  # all negative: empty after ReLU
    (maps,) = stored_frame_maps(low, [placement], (32, 32), max_side=256)
    assert maps.shape == (2, 40, 60) and maps.dtype == np.float32
    assert maps[0].max() == pytest.approx(1.0) and maps[0].min() == 0
    row, col = np.unravel_index(maps[0].argmax(), maps[0].shape)
    # the cell's centre (20, 12) in the input is (20 + 14, 12 + 4) = (34, 16) in the stored image
    assert abs(col + 0.5 - 34) <= 1 and abs(row + 0.5 - 16) <= 1
    assert (maps[0][:, :14] == 0).all() and (maps[0][:, 46:] == 0).all()  # cropped away: 0
    assert (maps[1] == 0).all()
    # the grid keeps the image's aspect ratio under max_side
    (small,) = stored_frame_maps(low, [plan_placement(600, 400, "resize_crop", 32, 40)], (32, 32), max_side=30)
    assert small.shape == (2, 20, 30)


def test_boxes_become_relative_xywh_of_the_stored_image():
    boxes = np.array([[10, 5, 30, 25], [-3, 0, 20, 50], [5, 5, 5, 9], [80, 0, 90, 10]], dtype=np.float32)
    got = relative_xywh(boxes, width=40, height=50)
    assert got == [
        pytest.approx([0.25, 0.1, 0.5, 0.4]),
        pytest.approx([0.0, 0.0, 0.5, 1.0]),  # clipped to the image
    ]  # an empty box and one outside the image are left out


def test_a_thresholded_map_box_goes_back_to_stored_pixels():
    placement = plan_placement(120, 80, "resize_crop", 32, 40)  # scale 1/2, crop offset (-14, -4)
    stored = np.array([[50.0, 20.0, 86.0, 70.0]])  # inside the crop (stored x 28..92, y 8..72)
    in_input, _ = boxes_to_input(stored, placement)
    back = map_box_in_stored(tuple(in_input[0]), "input", placement)
    np.testing.assert_allclose(back, stored, atol=1e-3)
    assert map_box_in_stored((1.0, 2.0, 3.0, 4.0), "original", placement).tolist() == [[1.0, 2.0, 3.0, 4.0]]
    assert map_box_in_stored((None, 2.0, 3.0, 4.0), "input", placement) is None
    assert map_box_in_stored((float("nan"), 2.0, 3.0, 4.0), "input", placement) is None
