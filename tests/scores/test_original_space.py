"""Scores in original-image coordinates (``scores.space=original``) against a per-image reference.

The reference warps each network-input map back with ``cv2.remap`` (bilinear, pixel centres at integer
coordinates, border replicate) onto a grid planned per preprocessing mode by hand, and scores it with the
slow NumPy references of ``tests/scores``, one image at a time, over the pixels the network saw. The
product does the same for a batch of images of different sizes and modes on one canvas.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pipeline.data.batch import INPUT_FRAME, STORED_FRAME, Batch, Boxes, Placements
from pipeline.data.dataset import _pad_boxes
from pipeline.data.geometry import boxes_in_stored, boxes_to_input, plan_placement
from pipeline.maps.engine import upsample_and_normalise
from pipeline.maps.warp import original_grid_sizes, warp_to_original
from pipeline.scores import score_map
from pipeline.scores.space import coordinates_to_stored, scoring_view
from tests.scores.scores_reference import (
    ref_area_fraction,
    ref_best_iou,
    ref_energy,
    ref_largest_box,
    ref_mask,
    ref_mass,
    ref_pointing,
    ref_rank,
)

SIZE, RESIZE, MAX_SIDE, TOL, TAU = 64, 73, 128, 5.0, 0.15
# (width, height, mode): landscape, portrait, a panorama whose grid is capped, letterbox, square resize.
IMAGES = [
    (100, 75, "resize_crop"),
    (53, 76, "resize_crop"),
    (300, 40, "resize_crop"),
    (60, 100, "letterbox"),
    (100, 75, "resize"),
    (90, 90, "resize_crop"),
    (120, 60, "resize_crop"),
]
# The last image's only box lies left of its centre crop (columns 41.. of the 146-wide resize are kept).
OUTSIDE_THE_CROP = np.array([[0.0, 5.0, 10.0, 30.0]])


def hand_grid(width: int, height: int, mode: str) -> tuple[int, int, float, float]:
    """The scoring grid by the rule as documented, per mode: ``(h, w, grid_scale_x, grid_scale_y)``."""
    p = plan_placement(width, height, mode, SIZE, RESIZE)
    if mode in ("resize_crop", "letterbox"):
        h, w = p.resized_height, p.resized_width
    else:
        scale = max(SIZE / width, SIZE / height)
        h, w = round(height * scale), round(width * scale)
    if max(h, w) > MAX_SIDE:
        scale = MAX_SIDE / max(width, height)
        h, w = round(height * scale), round(width * scale)
    return h, w, w / width, h / height


def test_grid_sizes_by_hand():
    expected = {
        (100, 75, "resize_crop"): (73, 97),
        (53, 76, "resize_crop"): (104, 73),
        (300, 40, "resize_crop"): (17, 128),
        (60, 100, "letterbox"): (64, 38),
        (100, 75, "resize"): (64, 85),
        (90, 90, "resize_crop"): (73, 73),
    }
    for (width, height, mode), size in expected.items():
        p = plan_placement(width, height, mode, SIZE, RESIZE)
        got = original_grid_sizes(Placements.of([p]), torch.tensor([width]), torch.tensor([height]), MAX_SIDE)
        assert tuple(got[0].tolist()) == size, (width, height, mode)
        assert hand_grid(width, height, mode)[:2] == size
    # ImageNet: the grid of a 500 x 375 photo is its 341 x 256 resized image; 376 x 263 keeps the truncated 365.
    for (width, height), size in {(500, 375): (256, 341), (376, 263): (256, 365)}.items():
        p = plan_placement(width, height, "resize_crop", 224, 256)
        assert (
            tuple(
                original_grid_sizes(Placements.of([p]), torch.tensor([width]), torch.tensor([height]), 512)[0].tolist()
            )
            == size
        )


def make_batch(seed: int):
    """Random maps at the network input, boxes in stored pixels (some cut by the crop), a collated batch."""
    rng = np.random.default_rng(seed)
    placements, stored, moved, kept_any = [], [], [], []
    for width, height, mode in IMAGES:
        p = plan_placement(width, height, mode, SIZE, RESIZE)
        n = int(rng.integers(1, 4))
        x1 = rng.uniform(-10, width * 0.8, n)
        y1 = rng.uniform(-10, height * 0.8, n)
        boxes = np.stack([x1, y1, x1 + rng.uniform(3, width, n), y1 + rng.uniform(3, height, n)], axis=1)
        if len(placements) == len(IMAGES) - 1:
            boxes = OUTSIDE_THE_CROP
        in_input, kept = boxes_to_input(boxes, p)
        placements.append(p)
        stored.append(torch.from_numpy(boxes_in_stored(boxes, width, height)))
        moved.append(torch.from_numpy(in_input))
        kept_any.append(bool(kept.any()))
    boxes, valid = _pad_boxes(moved)
    boxes_stored, stored_valid = _pad_boxes(stored)
    n_images = len(IMAGES)
    batch = Batch(
        index=torch.arange(n_images),
        image=torch.zeros(n_images, 3, SIZE, SIZE, dtype=torch.uint8),
        boxes=Boxes(boxes, valid, INPUT_FRAME),
        boxes_stored=Boxes(boxes_stored, stored_valid, STORED_FRAME),
        placement=Placements.of(placements),
        width=torch.tensor([w for w, _, _ in IMAGES]),
        height=torch.tensor([h for _, h, _ in IMAGES]),
        n_boxes_dropped=torch.zeros(n_images, dtype=torch.long),
        n_boxes_over_cap=torch.zeros(n_images, dtype=torch.long),
    )
    signed = torch.from_numpy(rng.normal(size=(len(IMAGES), 2, 5, 5)).astype(np.float32))
    maps = upsample_and_normalise(signed, (SIZE, SIZE))
    assert not kept_any[-1]  # the flagged image
    return batch, maps, kept_any, placements


def reference_view(input_map: np.ndarray, placement, mode: str, width: int, height: int):
    """One image's map on its original-space grid, by cv2.remap; returns (map, domain, gx, gy)."""
    h, w, gx, gy = hand_grid(width, height, mode)
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    x_in = (u + 0.5) / gx * placement.scale_x + placement.offset_x
    y_in = (v + 0.5) / gy * placement.scale_y + placement.offset_y
    domain = (x_in >= 0) & (x_in < SIZE) & (y_in >= 0) & (y_in < SIZE)  # pixel-edge: [0, SIZE)
    # cv2 puts pixel centres at integer coordinates: pixel-edge x is x - 0.5 there.
    warped = cv2.remap(
        input_map.astype(np.float32),
        (x_in - 0.5).astype(np.float32),
        (y_in - 0.5).astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    values = warped[domain]
    low, high = values.min(), values.max()
    empty = not high - low > 1e-6
    normalised = np.where(domain & (not empty), (warped - low) / (high - low if not empty else 1.0), 0.0)
    return normalised, domain, gx, gy, empty


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_original_space_scores_match_a_per_image_reference(seed):
    batch, maps, kept_any, placements = make_batch(seed)
    view = scoring_view(
        maps, batch, batch.boxes, original_grid_sizes(batch.placement, batch.width, batch.height, MAX_SIDE)
    )
    scores = score_map(
        view.maps[:, 0],
        view.raw[:, 0],
        view.empty[:, 0],
        view.boxes,
        view.box_valid,
        tolerance=TOL,
        taus=(TAU, 0.0),
        domain=view.domain,
    )
    scores = coordinates_to_stored(scores, view.grid_scale)
    for i, (width, height, mode) in enumerate(IMAGES):
        ref_map, domain, gx, gy, empty = reference_view(
            maps.normalised[i, 0].numpy(), placements[i], mode, width, height
        )
        h, w = ref_map.shape
        got_map = view.maps[i, 0].numpy()
        assert got_map[:h, :w] == pytest.approx(ref_map, abs=2e-5)
        assert not got_map[h:].any() and not got_map[:, w:].any()  # canvas padding stays empty
        assert bool(view.empty[i, 0]) == empty
        n = int(batch.boxes_stored.valid[i].sum())
        grid_boxes = batch.boxes_stored.coords[i, :n].numpy().astype(np.float64) * np.array([gx, gy, gx, gy])
        # An image with no box in the network input is flagged: no ground truth in either space.
        g = ref_mask(grid_boxes, np.full(n, kept_any[i]), h, w) & domain
        if not kept_any[i]:
            assert np.isnan(scores["energy_in_box"][i].item()) and np.isnan(scores["iou_tau015"][i].item())
            continue
        assert scores["energy_in_box"][i].item() == pytest.approx(ref_energy(ref_map, g), abs=1e-4, nan_ok=True)
        assert scores["box_area_fraction"][i].item() == pytest.approx(
            ref_area_fraction(g[domain]) if g.any() else float("nan"), abs=1e-6, nan_ok=True
        )
        assert scores["pointing_hit"][i].item() == pytest.approx(
            ref_pointing(ref_map, g, TOL) if not empty else float("nan"), nan_ok=True
        )
        assert scores["relevance_rank_accuracy"][i].item() == pytest.approx(
            ref_rank(ref_map[domain], g[domain]), abs=1e-6, nan_ok=True
        )
        if not empty:
            ref_box = ref_largest_box(np.where(domain, ref_map, -np.inf), empty, TAU)
            assert scores["iou_tau015"][i].item() == pytest.approx(
                ref_best_iou(ref_box, grid_boxes, np.ones(n, bool)), abs=1e-5, nan_ok=True
            )
            stored_box = ref_box / np.array([gx, gy, gx, gy])
            # tau = 0 takes every pixel the network saw, and only those (not the canvas padding)
            seen_box = ref_largest_box(np.where(domain, ref_map, -np.inf), empty, 0.0) / np.array([gx, gy, gx, gy])
            assert [scores[f"box_{c}_tau000"][i].item() for c in ("x1", "y1", "x2", "y2")] == pytest.approx(
                seen_box, abs=1e-3
            )
            got_box = [scores[f"box_{c}_tau015"][i].item() for c in ("x1", "y1", "x2", "y2")]
            assert got_box == pytest.approx(stored_box, abs=1e-3)
            row, col = np.unravel_index(int(np.argmax(np.where(domain, ref_map, -1))), ref_map.shape)
            assert (scores["peak_row"][i].item(), scores["peak_col"][i].item()) == (
                np.floor((row + 0.5) / gy),
                np.floor((col + 0.5) / gx),
            )
        raw = view.raw[i, 0].numpy()[:h, :w]
        assert scores["relevance_mass_accuracy"][i].item() == pytest.approx(
            ref_mass(np.where(domain, raw, 0.0), g), abs=1e-4, nan_ok=True
        )


def test_crop_window_keeps_the_network_input_values_exactly():
    """resize_crop: the grid is the resized image, so the seen window holds the input map pixel for pixel."""
    batch, maps, kept_any, placements = make_batch(5)
    grid = original_grid_sizes(batch.placement, batch.width, batch.height, MAX_SIDE)
    original = warp_to_original(maps, batch.placement, batch.width, batch.height, grid)
    for i, (width, height, mode) in enumerate(IMAGES):
        if mode != "resize_crop" or max(width, height) / min(width, height) > MAX_SIDE / RESIZE:
            continue
        top, left = -placements[i].offset_y, -placements[i].offset_x
        window = original.normalised[i, :, top : top + SIZE, left : left + SIZE]
        assert torch.allclose(window, maps.normalised[i], atol=1e-5)
        assert int(original.domain[i].sum()) == SIZE * SIZE  # nothing outside the crop counts


def test_letterbox_padding_is_not_part_of_the_image():
    """A map whose only bump sits in the letterbox padding is empty on the stored image."""
    p = plan_placement(60, 100, "letterbox", SIZE, RESIZE)  # image columns 13..50 of 64, padding beside
    signed = torch.zeros(1, 1, SIZE, SIZE)
    signed[0, 0, 20:40, 0:6] = 1.0  # in the left padding only
    maps = upsample_and_normalise(signed, (SIZE, SIZE))
    assert not maps.empty[0, 0]
    placement, width, height = Placements.of([p]), torch.tensor([60]), torch.tensor([100])
    grid = original_grid_sizes(placement, width, height, MAX_SIDE)
    original = warp_to_original(maps, placement, width, height, grid)
    assert bool(original.empty[0, 0]) and int(original.domain[0].sum()) == 64 * 38


def test_maxboxacc_candidates_stay_inside_the_domain():
    """At tau = 0 every seen pixel is foreground: the one candidate is the domain's bounding box, never the canvas."""
    from pipeline.scores.maxboxacc import MaxBoxAccV2

    batch, maps, kept_any, placements = make_batch(3)
    view = scoring_view(
        maps, batch, batch.boxes, original_grid_sizes(batch.placement, batch.width, batch.height, MAX_SIDE)
    )
    best = MaxBoxAccV2(thresholds=4).best_iou_per_threshold(
        view.maps[:, 0], view.empty[:, 0], view.boxes, view.box_valid, view.domain
    )
    for i in range(len(IMAGES)):
        if not kept_any[i] or bool(view.empty[i, 0]):
            continue
        rows, cols = torch.nonzero(view.domain[i], as_tuple=True)
        seen_box = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
        n = int(view.box_valid[i].sum())
        expected = ref_best_iou(
            np.array(seen_box, float), view.boxes[i, :n].numpy().astype(np.float64), np.ones(n, bool)
        )
        assert best[i, 0].item() == pytest.approx(expected, abs=1e-5), i
