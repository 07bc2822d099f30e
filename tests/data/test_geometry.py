"""Box transforms: hand-computed cases and properties against a direct computation."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.transforms import v2

from pipeline.data.geometry import boxes_to_input, boxes_to_stored, image_to_input, plan_placement


def test_resize_crop_hand_computed():
    # 500 x 375 -> shorter side 256: 341 x 256 (int(256 * 500 / 375) = 341); crop 224: left round(58.5)=58 (banker's: 58), top 16.
    p = plan_placement(500, 375, "resize_crop", 224, 256)
    assert (p.resized_width, p.resized_height, p.offset_x, p.offset_y) == (341, 256, -58, -16)
    boxes, kept = boxes_to_input(np.array([[0, 0, 375, 375], [0, 0, 10, 10]], np.float32), p)
    np.testing.assert_allclose(boxes[0], [0, 0, 375 * 341 / 500 - 58, 224], rtol=1e-6)
    assert kept.tolist() == [True, False]  # the 10x10 corner box falls outside the crop


def test_resize_square_and_letterbox_hand_computed():
    p = plan_placement(200, 100, "resize", 96)
    boxes, _ = boxes_to_input(np.array([[50, 25, 150, 75]], np.float32), p)
    np.testing.assert_allclose(boxes[0], [24, 24, 72, 72])
    p = plan_placement(200, 100, "letterbox", 100)
    assert (p.resized_width, p.resized_height, p.offset_x, p.offset_y) == (100, 50, 0, 25)
    boxes, _ = boxes_to_input(np.array([[0, 0, 200, 100]], np.float32), p)
    np.testing.assert_allclose(boxes[0], [0, 25, 100, 75])


def test_inverted_zero_area_and_outside_boxes_are_dropped():
    p = plan_placement(100, 100, "resize", 50)
    boxes, kept = boxes_to_input(
        np.array([[10, 10, 5, 20], [10, 10, 10, 20], [200, 200, 300, 300], [-10, -10, 20, 20]], np.float32), p
    )
    assert kept.tolist() == [False, False, False, True]
    np.testing.assert_allclose(boxes, [[0, 0, 10, 10]])


def test_image_matches_torchvision_resize_then_center_crop():
    image = torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8)
    p = plan_placement(500, 375, "resize_crop", 224, 256)
    expected = v2.functional.center_crop(v2.functional.resize(image, 256, antialias=True), 224)
    assert torch.equal(image_to_input(image, p), expected)


@settings(max_examples=200, deadline=None)
@given(
    w=st.integers(8, 3000),
    h=st.integers(8, 3000),
    mode=st.sampled_from(["resize_crop", "resize", "letterbox"]),
    size=st.integers(16, 512),
    data=st.data(),
)
def test_a_box_lands_where_its_pixels_land(w, h, mode, size, data):
    """A box follows the image: transform each corner directly with the per-axis scale of the resized
    image and the crop/pad shift, clip to the input, and compare; the inverse maps back."""
    p = plan_placement(w, h, mode, size, size + data.draw(st.integers(0, 64)) if mode == "resize_crop" else None)
    x1 = data.draw(st.floats(0, w - 1))
    x2 = data.draw(st.floats(x1 + 0.5, w))
    y1 = data.draw(st.floats(0, h - 1))
    y2 = data.draw(st.floats(y1 + 0.5, h))
    out, kept = boxes_to_input(np.array([[x1, y1, x2, y2]]), p)
    # direct computation: where does stored x land in the resized image, then the crop/pad shift
    sx, sy = p.resized_width / w, p.resized_height / h
    expected = np.array([x1 * sx + p.offset_x, y1 * sy + p.offset_y, x2 * sx + p.offset_x, y2 * sy + p.offset_y])
    clipped = np.clip(expected, 0, [size, size, size, size])
    visible = clipped[2] > clipped[0] and clipped[3] > clipped[1]
    assert kept[0] == visible
    if visible:
        np.testing.assert_allclose(out[0], clipped, rtol=1e-5, atol=1e-3)
        if (expected == clipped).all():
            np.testing.assert_allclose(boxes_to_stored(out, p)[0], [x1, y1, x2, y2], rtol=1e-4, atol=1e-2)
    # the crop/pad keeps the output inside the input canvas
    assert p.out_width == size and p.out_height == size
    if mode == "resize_crop":
        assert min(p.resized_width, p.resized_height) == p.resized_width if w <= h else p.resized_height


def test_box_pixels_match_image_pixels_after_resize():
    """Paint a box's pixels white on a black image; after the transform the white region is where the box went."""
    image = torch.zeros(3, 120, 200, dtype=torch.uint8)
    image[:, 30:90, 40:120] = 255  # box (40, 30, 120, 90)
    p = plan_placement(200, 120, "resize", 100)
    out = image_to_input(image, p, interpolation="nearest")
    boxes, _ = boxes_to_input(np.array([[40, 30, 120, 90]], np.float32), p)
    ys, xs = np.nonzero(out[0].numpy() > 127)
    x1, y1, x2, y2 = boxes[0]
    assert xs.min() >= np.floor(x1) and xs.max() + 1 <= np.ceil(x2)
    assert ys.min() >= np.floor(y1) and ys.max() + 1 <= np.ceil(y2)
