import math

import numpy as np
import pytest
import torch

from pipeline.scores import MaxBoxAccV2, score_map
from tests.scores.scores_reference import (
    is_constant,
    nan_equal,
    random_boxes,
    ref_area_fraction,
    ref_best_iou,
    ref_energy,
    ref_largest_box,
    ref_masks,
    ref_mass,
    ref_peak,
    ref_pointing,
    ref_rank,
    smooth_maps,
)

T = torch.tensor

KEYS = {
    "energy_in_box",
    "box_area_fraction",
    "energy_lift",
    "excess_energy",
    "pointing_hit",
    "relevance_rank_accuracy",
    "relevance_mass_accuracy",
    "peak_row",
    "peak_col",
}


def _inputs(seed=0, b=8, h=48, w=64):
    rng = np.random.default_rng(seed)
    maps = smooth_maps(rng, b, h, w, small=5)
    maps[0] = 0.0
    raw = (maps * 2.0 - 0.3).astype(np.float32)
    boxes, valid = random_boxes(rng, b, 3, h, w, fractional=(seed % 2 == 1))
    valid[1] = False
    empty = np.array([is_constant(m) for m in maps])
    return maps, raw, empty, boxes, valid


def test_keys_shapes_and_nan_rules():
    maps, raw, empty, boxes, valid = _inputs()
    out = score_map(T(maps), T(raw), T(empty), T(boxes), T(valid), taus=(0.15, 0.2))
    tau_keys = {
        f"{p}_{t}" for t in ("tau015", "tau020") for p in ("iou", "localised", "box_x1", "box_y1", "box_x2", "box_y2")
    }
    assert set(out) == KEYS | tau_keys
    for k, v in out.items():
        assert v.shape == (8,) and v.dtype == torch.float32, k
    # empty map (image 0): every peak/threshold-based score NaN
    for k in (
        "pointing_hit",
        "relevance_rank_accuracy",
        "peak_row",
        "peak_col",
        "iou_tau015",
        "localised_tau015",
        "box_x1_tau015",
        "energy_in_box",
    ):
        assert math.isnan(out[k][0].item()), k
    # no valid box (image 1): every box-based score NaN, map-based box still defined
    for k in (
        "energy_in_box",
        "box_area_fraction",
        "energy_lift",
        "pointing_hit",
        "relevance_rank_accuracy",
        "relevance_mass_accuracy",
        "iou_tau015",
        "localised_tau015",
    ):
        assert math.isnan(out[k][1].item()), k
    assert not math.isnan(out["box_x1_tau015"][1].item())
    assert not math.isnan(out["peak_row"][1].item())
    loc = out["localised_tau015"][2:]
    assert set(loc.tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("seed,h,w", [(0, 48, 64), (1, 37, 23), (2, 5, 8)])
def test_against_reference(seed, h, w):
    maps, raw, empty, boxes, valid = _inputs(seed, 8, h, w)
    out = score_map(T(maps), T(raw), T(empty), T(boxes), T(valid), tolerance=3.0, taus=(0.15,), iou_threshold=0.5)
    g = ref_masks(boxes, valid, h, w)
    b = len(maps)
    ref_e = [ref_energy(maps[i], g[i]) for i in range(b)]
    ref_a = [ref_area_fraction(g[i]) for i in range(b)]
    assert nan_equal(out["energy_in_box"], ref_e)
    assert nan_equal(out["box_area_fraction"], ref_a)
    assert nan_equal(out["energy_lift"], np.array(ref_e) / np.array(ref_a), atol=1e-5)
    assert nan_equal(out["pointing_hit"], [ref_pointing(maps[i], g[i], 3.0) for i in range(b)])
    assert nan_equal(out["relevance_rank_accuracy"], [ref_rank(maps[i], g[i]) for i in range(b)])
    assert nan_equal(out["relevance_mass_accuracy"], [ref_mass(raw[i], g[i]) for i in range(b)], atol=1e-5)
    peaks = [ref_peak(maps[i]) if not empty[i] else (np.nan, np.nan) for i in range(b)]
    assert nan_equal(out["peak_row"], [p[0] for p in peaks], atol=0)
    assert nan_equal(out["peak_col"], [p[1] for p in peaks], atol=0)
    rbox = [ref_largest_box(maps[i], empty[i], 0.15) for i in range(b)]
    for j, name in enumerate(("x1", "y1", "x2", "y2")):
        assert nan_equal(out[f"box_{name}_tau015"], [r[j] for r in rbox], atol=0)
    ious = [ref_best_iou(rbox[i], boxes[i], valid[i]) for i in range(b)]
    assert nan_equal(out["iou_tau015"], ious, atol=1e-6)
    assert nan_equal(out["localised_tau015"], [np.nan if np.isnan(v) else float(v >= 0.5) for v in ious], atol=0)


def test_localised_threshold_is_inclusive():
    # Largest-component box (0, 0, 4, 4) vs GT (0, 0, 4, 2): IoU exactly 0.5 -> localised.
    maps = torch.zeros(1, 8, 8)
    maps[0, 0:4, 0:4] = 1.0
    out = score_map(maps, maps, T([False]), T([[[0.0, 0.0, 4.0, 2.0]]]), T([[True]]))
    assert out["iou_tau015"].item() == 0.5 and out["localised_tau015"].item() == 1.0


def test_duplicate_tau_keys_rejected():
    maps, raw, empty, boxes, valid = _inputs()
    with pytest.raises(ValueError):
        score_map(T(maps), T(raw), T(empty), T(boxes), T(valid), taus=(0.15, 0.151))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    maps, raw, empty, boxes, valid = _inputs(3, 16, 64, 48)
    cpu = score_map(T(maps), T(raw), T(empty), T(boxes), T(valid), taus=(0.15, 0.5))
    gpu = score_map(T(maps).cuda(), T(raw).cuda(), T(empty).cuda(), T(boxes).cuda(), T(valid).cuda(), taus=(0.15, 0.5))
    for k in cpu:
        assert gpu[k].device.type == "cuda"
        assert nan_equal(cpu[k], gpu[k].cpu(), atol=1e-5), k
    metric = MaxBoxAccV2(thresholds=20)
    best_cpu = metric.best_iou_per_threshold(T(maps), T(empty), T(boxes), T(valid))
    best_gpu = metric.best_iou_per_threshold(T(maps).cuda(), T(empty).cuda(), T(boxes).cuda(), T(valid).cuda())
    assert torch.equal(best_cpu, best_gpu.cpu())
