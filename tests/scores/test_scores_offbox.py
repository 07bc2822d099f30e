"""Off-box energy grid against a per-pixel NumPy reference."""

import numpy as np
import torch

from pipeline.scores.offbox import off_box_energy_grid
from tests.scores.scores_reference import random_boxes, ref_masks, smooth_maps


def reference(m: np.ndarray, g: np.ndarray, grid: int) -> np.ndarray:
    out = np.zeros((grid, grid))
    if m.sum() == 0 or not g.any():
        return out
    h, w = m.shape
    for y in range(h):
        for x in range(w):
            if not g[y, x]:
                out[y * grid // h, x * grid // w] += m[y, x]
    return out / m.sum()


def test_matches_reference_and_sums_to_one_minus_energy_in_box():
    rng = np.random.default_rng(0)
    maps = smooth_maps(rng, 5, 30, 41, small=5)
    maps[0] = 0.0
    boxes, valid = random_boxes(rng, 5, 2, 30, 41)
    valid[1] = False
    g = ref_masks(boxes, valid, 30, 41)
    out = off_box_energy_grid(torch.tensor(maps), torch.tensor(g), 7).numpy()
    assert out.shape == (5, 7, 7)
    for i in range(5):
        np.testing.assert_allclose(out[i], reference(maps[i], g[i], 7), atol=1e-5)
    assert (out[0] == 0).all() and (out[1] == 0).all()  # empty map; no box
    energy_in = np.array([(maps[i] * g[i]).sum() / maps[i].sum() for i in range(2, 5)])
    np.testing.assert_allclose(out[2:].sum(axis=(1, 2)), 1 - energy_in, atol=1e-5)
