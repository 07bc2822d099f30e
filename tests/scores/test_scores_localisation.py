import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.scores import (
    box_area_fraction,
    boxes_to_mask,
    energy_in_box,
    energy_lift,
    peak_location,
    pointing_game_hit,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from tests.scores.scores_reference import (
    is_constant,
    nan_equal,
    random_boxes,
    ref_area_fraction,
    ref_energy,
    ref_masks,
    ref_mass,
    ref_peak,
    ref_pointing,
    ref_rank,
    smooth_maps,
)

T = torch.tensor


def _g(boxes, h, w, valid=None):
    boxes = T(boxes, dtype=torch.float32)
    if valid is None:
        valid = torch.ones(boxes.shape[:2], dtype=torch.bool)
    return boxes_to_mask(boxes, torch.as_tensor(valid, dtype=torch.bool), h, w)


# ----------------------------------------------------------------------------- hand-computed
def _hand_case():
    m = torch.zeros(1, 5, 8)
    m[0, 1, 3] = 1.0  # inside the box
    m[0, 0, 0] = 0.5
    m[0, 4, 7] = 0.5
    g = _g([[[2, 1, 5, 3]]], 5, 8)  # rows 1..2, cols 2..4: 6 pixels
    return m, g


def test_hand_energy_area_lift():
    m, g = _hand_case()
    assert g.sum() == 6
    e = energy_in_box(m, g)
    a = box_area_fraction(g)
    assert e.dtype == torch.float32 and e.shape == (1,)
    assert e.item() == pytest.approx(0.5)
    assert a.item() == pytest.approx(6 / 40)
    assert energy_lift(e, a).item() == pytest.approx(0.5 / 0.15, rel=1e-6)


def test_hand_pointing_rank_peak():
    m, g = _hand_case()
    assert pointing_game_hit(m, T([False]), g, 0.0).item() == 1.0
    # top-6 pixels: (1,3)=1, (0,0)=.5, (4,7)=.5, then zeros in raster order (0,1), (0,2), (0,3).
    assert relevance_rank_accuracy(m, g).item() == pytest.approx(1 / 6)
    assert peak_location(m).tolist() == [[1, 3]]
    assert peak_location(m).dtype == torch.long


def test_hand_relevance_mass_signed():
    _, g = _hand_case()
    r = torch.zeros(1, 5, 8)
    r[0, 1, 3] = 3.0
    r[0, 0, 0] = -1.0
    r[0, 1, 2] = -0.5
    assert relevance_mass_accuracy(r, g).item() == pytest.approx(2.5 / 1.5)
    r0 = torch.zeros(1, 5, 8)
    r0[0, 1, 3], r0[0, 0, 0] = 1.0, -1.0  # sum 0 -> NaN
    assert math.isnan(relevance_mass_accuracy(r0, g).item())


def test_transposed_indexing_would_fail():
    # Non-square 5 x 8 image, off-centre box rows 0..1, cols 4..7: the map's mass is all inside.
    m = torch.zeros(1, 5, 8)
    m[0, 0:2, 4:8] = torch.arange(1, 9, dtype=torch.float32).view(2, 4)
    g = _g([[[4, 0, 8, 2]]], 5, 8)
    assert energy_in_box(m, g).item() == pytest.approx(1.0)
    assert pointing_game_hit(m, T([False]), g, 0.0).item() == 1.0
    assert relevance_rank_accuracy(m, g).item() == pytest.approx(1.0)
    # A transposed mask [x1:x2, y1:y2] = rows 4..7 (clipped to 4), cols 0..1 scores 0.
    gt = torch.zeros(1, 5, 8, dtype=torch.bool)
    gt[0, 4:8, 0:2] = True
    assert energy_in_box(m, gt).item() == 0.0


def test_several_boxes_union_counted_once():
    m = torch.ones(1, 5, 8)
    g = _g([[[0, 0, 4, 3], [2, 1, 6, 4], [0, 0, 4, 3]]], 5, 8)
    assert box_area_fraction(g).item() == pytest.approx(20 / 40)
    assert energy_in_box(m, g).item() == pytest.approx(0.5)


def test_all_zero_map_and_no_box_give_nan():
    m = torch.zeros(2, 5, 8)
    m[1, 2, 2] = 1.0
    g = _g([[[0, 0, 4, 3]], [[0, 0, 0, 0]]], 5, 8, valid=[[True], [False]])
    empty = T([True, False])
    for v in (
        energy_in_box(m, g),
        pointing_game_hit(m, empty, g, 15.0),
        relevance_rank_accuracy(m, g),
        relevance_mass_accuracy(m, g),
    ):
        assert torch.isnan(v).all()
    assert math.isnan(box_area_fraction(g)[1].item())
    assert math.isnan(energy_lift(energy_in_box(m, g), box_area_fraction(g))[0].item())


def test_pointing_ties_one_inside_one_outside_is_hit():
    m = torch.zeros(1, 48, 64)
    m[0, 0, 0] = 1.0  # first maximum in raster order, outside
    m[0, 30, 50] = 1.0  # tie, inside
    g = _g([[[45, 25, 60, 40]]], 48, 64)
    assert pointing_game_hit(m, T([False]), g, 0.0).item() == 1.0
    m2 = m.clone()
    m2[0, 30, 50] = 0.99
    assert pointing_game_hit(m2, T([False]), g, 0.0).item() == 0.0
    assert peak_location(m).tolist() == [[0, 0]]


@pytest.mark.parametrize(
    "dy,dx,tol,hit",
    [
        (3, 4, 5.0, 1.0),  # distance exactly 5
        (3, 4, 4.99, 0.0),
        (9, 12, 15.0, 1.0),  # exactly 15, TorchRay's default
        (10, 12, 15.0, 0.0),  # sqrt(244) = 15.6
        (0, 15, 15.0, 1.0),
        (0, 16, 15.0, 0.0),
        (-2, -1, 2.0, 0.0),  # sqrt(5) > 2
        (-2, -1, 2.25, 1.0),
        (0, 0, 0.0, 1.0),
    ],
)
def test_pointing_tolerance_just_inside_outside(dy, dx, tol, hit):
    g = torch.zeros(1, 48, 64, dtype=torch.bool)
    g[0, 20, 30] = True  # one G pixel
    m = torch.zeros(1, 48, 64)
    m[0, 20 + dy, 30 + dx] = 1.0
    assert pointing_game_hit(m, T([False]), g, tol).item() == hit


def test_pointing_tolerance_with_box_not_pixel():
    # Box rows 10..14, cols 20..29; peak 15 px left of column 20 on row 12 -> hit; 16 -> miss.
    g = _g([[[20, 10, 30, 15]]], 48, 64)
    for dx, hit in ((15, 1.0), (16, 0.0)):
        m = torch.zeros(1, 48, 64)
        m[0, 12, 20 - dx] = 1.0
        assert pointing_game_hit(m, T([False]), g, 15.0).item() == hit


def test_pointing_rejects_bad_tolerance():
    m, g = _hand_case()
    with pytest.raises(ValueError):
        pointing_game_hit(m, T([False]), g, -1.0)


def test_rank_ties_stable_by_flat_index():
    m = torch.zeros(1, 3, 4)
    m[0, 0, 3] = 0.5  # flat 3
    m[0, 2, 0] = 0.5  # flat 8 (tie)
    m[0, 1, 1] = 1.0
    g = torch.zeros(1, 3, 4, dtype=torch.bool)
    g[0, 2, 0] = True
    g[0, 1, 1] = True  # K = 2: top-2 are (1,1) and flat 3 (earlier of the tie) -> 1/2
    assert relevance_rank_accuracy(m, g).item() == pytest.approx(0.5)


# ----------------------------------------------------------------------------- random vs reference
def _batch(seed, h, w, b=6, n=3, fractional=False):
    rng = np.random.default_rng(seed)
    maps = smooth_maps(rng, b, h, w, small=int(rng.integers(2, 8)))
    # a few special maps: empty, quantised (ties), plateau of maxima
    maps[0] = 0.0
    maps[1] = np.round(maps[1] * 4) / 4
    maps[2] = np.minimum(maps[2] * 1.5, 1.0)
    raw = (maps * rng.uniform(0.5, 3)) - rng.uniform(0, 0.4, (b, 1, 1)).astype(np.float32)
    raw = raw.astype(np.float32)
    boxes, valid = random_boxes(rng, b, n, h, w, fractional=fractional)
    empty = np.array([is_constant(m) for m in maps])
    return maps, raw, empty, boxes, valid


@pytest.mark.parametrize(
    "seed,h,w,fractional",
    [(0, 48, 64, False), (1, 5, 8, False), (2, 37, 23, True), (3, 64, 48, False), (4, 20, 20, True)],
)
def test_random_against_reference(seed, h, w, fractional):
    maps, raw, empty, boxes, valid = _batch(seed, h, w, fractional=fractional)
    g = ref_masks(boxes, valid, h, w)
    gt = boxes_to_mask(T(boxes), T(valid), h, w)
    assert (gt.numpy() == g).all()
    tm, tr, te = T(maps), T(raw), T(empty)
    b = len(maps)
    assert nan_equal(energy_in_box(tm, gt), [ref_energy(maps[i], g[i]) for i in range(b)])
    assert nan_equal(box_area_fraction(gt), [ref_area_fraction(g[i]) for i in range(b)])
    assert nan_equal(relevance_rank_accuracy(tm, gt), [ref_rank(maps[i], g[i]) for i in range(b)])
    assert nan_equal(relevance_mass_accuracy(tr, gt), [ref_mass(raw[i], g[i]) for i in range(b)], atol=1e-5)
    assert peak_location(tm).tolist() == [list(ref_peak(maps[i])) for i in range(b)]
    for tol in (0.0, 1.0, 2.5, 15.0):
        got = pointing_game_hit(tm, te, gt, tol)
        assert nan_equal(got, [ref_pointing(maps[i], g[i], tol) for i in range(b)]), tol


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    h=st.integers(1, 16),
    w=st.integers(1, 16),
    levels=st.integers(1, 5),
    tol=st.sampled_from([0.0, 1.0, 1.5, 3.0, 7.2]),
)
def test_hypothesis_quantised_maps(seed, h, w, levels, tol):
    # Coarsely quantised maps: many ties at the maximum and in the ranking.
    rng = np.random.default_rng(seed)
    maps = (rng.integers(0, levels + 1, (3, h, w)) / levels).astype(np.float32)
    boxes, valid = random_boxes(rng, 3, 2, h, w, fractional=bool(seed % 2))
    empty = np.array([is_constant(m) for m in maps])
    g = ref_masks(boxes, valid, h, w)
    gt = boxes_to_mask(T(boxes), T(valid), h, w)
    assert (gt.numpy() == g).all()
    tm = T(maps)
    assert nan_equal(pointing_game_hit(tm, T(empty), gt, tol), [ref_pointing(maps[i], g[i], tol) for i in range(3)])
    assert nan_equal(relevance_rank_accuracy(tm, gt), [ref_rank(maps[i], g[i]) for i in range(3)])
    assert nan_equal(energy_in_box(tm, gt), [ref_energy(maps[i], g[i]) for i in range(3)])


def test_pointing_huge_tolerance_always_hits():
    m = torch.zeros(1, 48, 64)
    m[0, 47, 0] = 1.0
    g = _g([[[60, 0, 64, 2]]], 48, 64)
    assert pointing_game_hit(m, T([False]), g, 1e6).item() == 1.0
    # nearest G pixel (1, 60): distance sqrt(46^2 + 60^2) = sqrt(5716) = 75.604
    assert pointing_game_hit(m, T([False]), g, 75.6).item() == 0.0
    assert pointing_game_hit(m, T([False]), g, 75.61).item() == 1.0


def test_pointing_many_peaks_in_several_chunks_matches_reference(monkeypatch):
    # Quantised maps have plateaus at the maximum (hundreds of peak pixels); a tiny chunk makes the gather run
    # over many chunks of the peak list, whose results must be those of the reference.
    import pipeline.scores.localisation as localisation

    rng = np.random.default_rng(5)
    maps = (rng.integers(0, 3, (4, 40, 40)) / 2).astype(np.float32)
    boxes, valid = random_boxes(rng, 4, 2, 40, 40, fractional=False)
    g = ref_masks(boxes, valid, 40, 40)
    gt = boxes_to_mask(T(boxes), T(valid), 40, 40)
    empty = T(np.array([is_constant(m) for m in maps]))
    expected = [ref_pointing(maps[i], g[i], 3.0) for i in range(4)]
    monkeypatch.setattr(localisation, "_PEAK_OFFSETS_PER_CHUNK", 7 * 10)  # 7 disk rows: 10 peaks per chunk
    assert int((T(maps) == T(maps).amax(dim=(1, 2), keepdim=True)).sum()) > 100
    assert nan_equal(pointing_game_hit(T(maps), empty, gt, 3.0), expected)
