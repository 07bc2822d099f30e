import math
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.scores import best_box_iou, label_components, largest_component_box
from tests.scores.scores_reference import (
    canonical,
    is_constant,
    nan_equal,
    random_boxes,
    ref_best_iou,
    ref_label,
    ref_largest_box,
    smooth_maps,
)

T = torch.tensor


def _check_partition(binary: np.ndarray) -> None:
    lab = label_components(torch.from_numpy(binary)).numpy()
    assert lab.dtype == np.int64 and lab.shape == binary.shape
    assert ((lab > 0) == binary).all()
    seen: set[int] = set()
    for i in range(len(binary)):
        assert (canonical(lab[i]) == canonical(ref_label(binary[i]))).all(), i
        ids = set(np.unique(lab[i]).tolist()) - {0}
        assert not (ids & seen), "labels must be unique across the batch"
        seen |= ids


# ----------------------------------------------------------------------------- shapes
def spiral(n: int) -> np.ndarray:
    """Square spiral walked inwards, laps separated by one background pixel: one long component."""
    a = np.zeros((n, n), bool)
    y, x, d = 0, 0, 0
    dirs = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    a[y, x] = True
    while True:
        moved = False
        dy, dx = dirs[d]
        while True:
            ny, nx, ay, ax = y + dy, x + dx, y + 2 * dy, x + 2 * dx
            if not (0 <= ny < n and 0 <= nx < n) or a[ny, nx]:
                break
            if 0 <= ay < n and 0 <= ax < n and a[ay, ax]:
                break
            y, x = ny, nx
            a[y, x] = True
            moved = True
        if not moved:
            return a
        d = (d + 1) % 4


def snake(h: int, w: int, diagonal: bool = False) -> np.ndarray:
    """Boustrophedon path: rows 0, 2, 4, ... full, joined alternately at the right / left end.

    With ``diagonal`` the joins are diagonal steps only (8-connected, not 4-connected)."""
    a = np.zeros((h, w), bool)
    for r in range(0, h, 2):
        a[r, :] = True
        if r + 2 < h:
            c = w - 1 if (r // 2) % 2 == 0 else 0
            if diagonal:
                a[r, c] = False
                a[r + 1, c] = True
                a[r, w - 2 if c == w - 1 else 1] = True
            else:
                a[r + 1, c] = True
    return a


def staircase(n: int) -> np.ndarray:
    """Pixels on a diagonal: n single-pixel runs linked only diagonally."""
    return np.eye(n, dtype=bool)


@pytest.mark.parametrize(
    "binary",
    [
        np.zeros((1, 5, 8), bool),
        np.ones((2, 5, 8), bool),
        np.indices((9, 11)).sum(0)[None] % 2 == 0,  # checkerboard: one 8-connected component
        staircase(30)[None],
        np.fliplr(staircase(30))[None].copy(),
        np.stack([snake(41, 37), snake(41, 37, diagonal=True)]),
        spiral(45)[None],
    ],
    ids=["empty", "full", "checker", "diag", "antidiag", "snakes", "spiral"],
)
def test_adversarial_shapes(binary):
    _check_partition(binary)


def test_snake_and_spiral_are_one_component():
    import scipy.ndimage as ndi

    assert ndi.label(snake(41, 37, diagonal=True))[1] > 1  # 4-connectivity would split it
    for b in (snake(41, 37), snake(41, 37, diagonal=True), spiral(45), spiral(224)):
        assert len(np.unique(label_components(torch.from_numpy(b[None])).numpy())) == 2


def test_big_snake_is_fast_and_one_component():
    b = np.stack([snake(224, 224), snake(224, 224, diagonal=True), spiral(224)] * 3)
    t = time.perf_counter()
    lab = label_components(torch.from_numpy(b)).numpy()
    assert time.perf_counter() - t < 10.0
    for i in range(len(b)):
        assert len(np.unique(lab[i])) == 2
    _check_partition(b[:2])


@pytest.mark.parametrize("seed", range(4))
def test_random_blobs_against_scipy(seed):
    rng = np.random.default_rng(seed)
    h, w = [(48, 64), (31, 17), (64, 48), (1, 40)][seed]
    maps = smooth_maps(rng, 5, h, w, small=int(rng.integers(3, 9)))
    binary = maps >= rng.uniform(0.2, 0.8, (5, 1, 1))
    _check_partition(binary)
    noise = rng.random((4, h, w)) < rng.uniform(0.3, 0.7)
    _check_partition(noise)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 3),
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    p=st.floats(0.0, 1.0),
)
def test_hypothesis_against_scipy(seed, b, h, w, p):
    rng = np.random.default_rng(seed)
    _check_partition(rng.random((b, h, w)) < p)


# ----------------------------------------------------------------------------- largest component box
def test_largest_component_hand():
    m = torch.zeros(2, 5, 8)
    # image 0: component A 3 px (rows 0, cols 0..2), component B 4 px diagonal chain (8-connected)
    m[0, 0, 0:3] = 1.0
    for k in range(4):
        m[0, 1 + k % 4, 4 + k] = 0.6
    # image 1: two components of 2 px each: tie -> the one with the earliest raster pixel
    m[1, 3, 5:7] = 1.0
    m[1, 4, 0:2] = 0.8
    m[1, 2, 7] = 0.1  # below tau * max
    box = largest_component_box(m, T([False, False]), 0.5)
    assert box.dtype == torch.float32 and box.shape == (2, 4)
    assert box[0].tolist() == [4.0, 1.0, 8.0, 5.0]
    assert box[1].tolist() == [5.0, 3.0, 7.0, 4.0]
    # with tau above 0.6 only component A remains
    assert largest_component_box(m[:1], T([False]), 0.7)[0].tolist() == [0.0, 0.0, 3.0, 1.0]


def test_largest_component_empty_is_nan():
    m = torch.zeros(2, 5, 8)
    m[1] = 0.3
    box = largest_component_box(m, T([True, True]), 0.15)
    assert torch.isnan(box).all()


@pytest.mark.parametrize("seed,h,w", [(0, 48, 64), (1, 5, 8), (2, 64, 48), (3, 29, 33)])
def test_largest_component_random_against_reference(seed, h, w):
    rng = np.random.default_rng(seed)
    maps = smooth_maps(rng, 8, h, w, small=int(rng.integers(3, 9)))
    maps[0] = 0.0
    maps[1] = (rng.random((h, w)) < 0.5).astype(np.float32)  # many equal-size components
    maps[2] = np.round(maps[2] * 3) / 3
    empty = np.array([is_constant(x) for x in maps])
    for tau in (0.0, 0.15, 0.2, 0.5, 0.9, 1.0):
        got = largest_component_box(T(maps), T(empty), tau).numpy()
        ref = np.stack([ref_largest_box(maps[i], empty[i], tau) for i in range(len(maps))])
        assert nan_equal(got, ref, atol=0), tau


# ----------------------------------------------------------------------------- IoU
def test_iou_hand():
    pred = T([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 2.0, 2.0], [math.nan] * 4, [0.0, 0.0, 1.0, 1.0]])
    boxes = T(
        [
            [[2.0, 2.0, 6.0, 6.0], [0.0, 0.0, 4.0, 2.0]],  # IoUs 4/28, 8/16 -> 0.5
            [[5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 0.0, 0.0]],  # disjoint -> 0 (second invalid)
            [[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0]],  # pred NaN -> NaN
            [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]],  # no valid box -> NaN
        ]
    )
    valid = T([[True, True], [True, False], [True, True], [False, False]])
    iou = best_box_iou(pred, boxes, valid)
    assert iou.dtype == torch.float32
    assert iou[0].item() == 0.5 and iou[1].item() == 0.0
    assert math.isnan(iou[2].item()) and math.isnan(iou[3].item())


def test_iou_fractional_and_random_against_reference():
    rng = np.random.default_rng(7)
    boxes, valid = random_boxes(rng, 20, 4, 40, 60, fractional=True)
    pred, _ = random_boxes(rng, 20, 1, 40, 60, fractional=True)
    pred = pred[:, 0]
    pred[3] = np.nan
    got = best_box_iou(T(pred), T(boxes), T(valid)).numpy()
    ref = [ref_best_iou(pred[i], boxes[i], valid[i]) for i in range(20)]
    assert nan_equal(got, ref, atol=1e-6)
