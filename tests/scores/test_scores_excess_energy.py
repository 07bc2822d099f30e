"""Excess energy (E - A) / (1 - A): added through the score registry, checked against NumPy."""

import math

import numpy as np
import pytest
import torch

from pipeline.scores import excess_energy, score_map
from tests.scores.scores_reference import nan_equal, ref_area_fraction, ref_energy, ref_masks, score_inputs

T = torch.tensor


def test_excess_energy_matches_a_numpy_reference():
    maps, boxes, valid, empty = score_inputs(seed=3)
    h, w = maps.shape[1:]
    out = score_map(T(maps), T(maps), T(empty), T(boxes), T(valid))
    g = ref_masks(boxes, valid, h, w)
    e = np.array([ref_energy(maps[i], g[i]) for i in range(len(maps))])
    a = np.array([ref_area_fraction(g[i]) for i in range(len(maps))])
    with np.errstate(divide="ignore", invalid="ignore"):
        reference = np.where(a < 1.0, (e - a) / (1.0 - a), np.nan)
    assert nan_equal(out["excess_energy"], reference, atol=1e-6)
    assert math.isnan(out["excess_energy"][2].item())  # the box is the whole image: A = 1
    assert math.isnan(out["excess_energy"][1].item())  # no box
    assert np.isfinite(reference[3:]).all()


def test_excess_energy_fixed_points():
    # uniform map -> 0, all energy in the box -> 1, all energy outside -> -A / (1 - A), whatever the box size
    energy = T([0.25, 1.0, 0.0, 0.5, float("nan"), 0.9])
    area = T([0.25, 0.25, 0.25, 1.0, 0.5, float("nan")])
    out = excess_energy(energy, area)
    assert out[:3].tolist() == pytest.approx([0.0, 1.0, -1.0 / 3.0])
    assert torch.isnan(out[3:]).all()
