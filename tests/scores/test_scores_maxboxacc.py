import math

import numpy as np
import pytest
import torch

from pipeline.scores import MaxBoxAccV2
from pipeline.scores.maxboxacc import boxacc_per_threshold, maxboxacc_from_best_iou
from tests.scores.scores_reference import is_constant, random_boxes, ref_contour_boxes, ref_maxboxacc, smooth_maps

T = torch.tensor


def _run(maps, empty, boxes, valid, thresholds, include_holes=True, batch=None):
    """As a run does it: the per-image best IoUs batch by batch, then the one aggregation over all rows
    (plus ``boxacc``, the ``[T, D]`` table it maximises)."""
    metric = MaxBoxAccV2(thresholds=thresholds, include_holes=include_holes)
    batch = batch or len(maps)
    best = torch.cat(
        [
            metric.best_iou_per_threshold(T(maps[sl]), T(empty[sl]), T(boxes[sl]), T(valid[sl]))
            for sl in (slice(s, s + batch) for s in range(0, len(maps), batch))
        ]
    ).numpy()
    counted = valid.any(axis=1)
    out = maxboxacc_from_best_iou(best, counted, thresholds)
    out["boxacc"] = boxacc_per_threshold(best, counted).tolist()
    return out


def test_hand_blob_and_empty_map():
    maps = np.zeros((3, 6, 8), np.float32)
    maps[0, 1:4, 2:6] = 1.0  # blob == GT box (2, 1, 6, 4)
    boxes = np.array([[[2, 1, 6, 4]], [[0, 0, 8, 6]], [[0, 0, 8, 6]]], np.float32)
    valid = np.array([[True], [True], [False]])  # image 2 has no box: not counted
    empty = np.array([False, True, True])
    out = _run(maps, empty, boxes, valid, thresholds=4)
    # tau = 0: whole image (0, 0, 8, 6), IoU 12/48 = 0.25 < 0.3; tau = .25, .5, .75: IoU 1.
    assert out["num_images"] == 2 and out["num_images_without_box"] == 1
    assert out["boxacc"][0] == [0.0, 0.0, 0.0]
    assert out["boxacc"][1] == [0.5, 0.5, 0.5]
    assert out["maxboxacc_v2"] == 0.5
    assert out["maxboxacc_iou50"] == 0.5 and out["best_tau_iou50"] == 0.25
    assert MaxBoxAccV2(thresholds=4).taus().tolist() == [0.0, 0.25, 0.5, 0.75]


def test_hand_hole_box_is_a_candidate():
    # A ring: rows/cols 1..7 foreground, hole rows/cols 3..5.  Outer box (1, 1, 8, 8) (area 49);
    # the hole's contour box is (2, 2, 7, 7) (area 25) = the GT box.
    maps = np.zeros((1, 9, 9), np.float32)
    maps[0, 1:8, 1:8] = 1.0
    maps[0, 3:6, 3:6] = 0.0
    boxes = np.array([[[2, 2, 7, 7]]], np.float32)
    valid = np.array([[True]])
    empty = np.array([False])
    assert sorted(ref_contour_boxes(maps[0] >= 0.5, True)) == [(1, 1, 8, 8), (2, 2, 7, 7)]
    with_holes = _run(maps, empty, boxes, valid, thresholds=2, include_holes=True)
    without = _run(maps, empty, boxes, valid, thresholds=2, include_holes=False)
    # IoU with the outer box 25/49 = 0.51: correct at 0.3 and 0.5 either way; 0.7 needs the hole.
    assert with_holes["maxboxacc_iou70"] == 1.0 and without["maxboxacc_iou70"] == 0.0
    assert with_holes["maxboxacc_iou50"] == 1.0 and without["maxboxacc_iou50"] == 1.0
    assert with_holes["maxboxacc_v2"] == 1.0
    assert without["maxboxacc_v2"] == pytest.approx(2 / 3)


def test_no_images_gives_nan():
    out = maxboxacc_from_best_iou(np.zeros((0, 5)), np.zeros(0, bool), 5)
    assert out["num_images"] == 0 and math.isnan(out["maxboxacc_v2"])


def _data(seed, b, h, w, kind):
    rng = np.random.default_rng(seed)
    if kind == "smooth":
        maps = smooth_maps(rng, b, h, w, small=int(rng.integers(2, 9)))
    else:  # noisy maps: many components and holes
        maps = smooth_maps(rng, b, h, w, small=5)
        maps = np.clip(maps + rng.normal(0, 0.25, maps.shape).astype(np.float32), 0, 1)
        maps = (maps - maps.min(axis=(1, 2), keepdims=True)) / np.ptp(maps, axis=(1, 2), keepdims=True)
        maps = maps.astype(np.float32)
    maps[0] = 0.0  # empty
    boxes, valid = random_boxes(rng, b, 3, h, w, fractional=(seed % 2 == 1))
    # plant well-matching boxes so that all deltas get non-trivial accuracies
    for i in range(1, b, 2):
        ys, xs = np.nonzero(maps[i] >= 0.6)
        boxes[i, 0] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        valid[i, 0] = True
    valid[-1] = False  # one image without a box
    empty = np.array([is_constant(x) for x in maps])
    return maps, empty, boxes, valid


@pytest.mark.parametrize(
    "seed,h,w,kind,include_holes",
    [
        (0, 24, 40, "smooth", True),
        (1, 40, 24, "smooth", False),
        (2, 33, 29, "noisy", True),
        (3, 33, 29, "noisy", False),
        (4, 5, 8, "noisy", True),
    ],
)
def test_random_against_cv2_reference(seed, h, w, kind, include_holes):
    maps, empty, boxes, valid = _data(seed, 10, h, w, kind)
    thresholds = 25
    ref = ref_maxboxacc(maps, empty, boxes, valid, thresholds, include_holes=include_holes)
    out = _run(maps, empty, boxes, valid, thresholds, include_holes, batch=4)
    assert out["num_images"] == ref["count"] == 9
    np.testing.assert_allclose(np.array(out["boxacc"]), ref["acc"], atol=1e-12)
    assert out["maxboxacc_v2"] == pytest.approx(ref["v2"], abs=1e-12)
    for d, name in enumerate(("iou30", "iou50", "iou70")):
        assert out[f"maxboxacc_{name}"] == pytest.approx(ref["max"][d], abs=1e-12)
        assert out[f"best_tau_{name}"] == pytest.approx(ref["best_tau"][d], abs=1e-7)  # the same k: k / T vs float32
    assert 0 < ref["v2"] < 1  # the data is not trivial


def test_hundred_thresholds_default_against_reference():
    maps, empty, boxes, valid = _data(11, 6, 28, 36, "smooth")
    ref = ref_maxboxacc(maps, empty, boxes, valid, 100)
    out = _run(maps, empty, boxes, valid, 100)
    np.testing.assert_allclose(np.array(out["boxacc"]), ref["acc"], atol=1e-12)
    assert out["maxboxacc_v2"] == pytest.approx(ref["v2"], abs=1e-12)


@pytest.mark.parametrize("include_holes", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_candidate_boxes_equal_cv2_contour_boxes(seed, include_holes):
    # The candidate set itself, image by image, against cv2.findContours bounding rects: noisy
    # binaries have many components, nested components and holes (also diagonal-only ones).
    from pipeline.scores.maxboxacc import _candidate_boxes

    rng = np.random.default_rng(seed)
    h, w = [(30, 41), (41, 30), (7, 9)][seed]
    binary = rng.random((6, h, w)) < rng.uniform(0.3, 0.8, (6, 1, 1))
    binary[0] = False
    binary[1] = True
    image, boxes = _candidate_boxes(torch.from_numpy(binary), include_holes)
    for i in range(len(binary)):
        got = sorted(tuple(b) for b in boxes[image == i].tolist())
        ref = sorted(ref_contour_boxes(binary[i], include_holes))
        assert got == ref, i
