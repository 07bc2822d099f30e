"""Spearman rank correlation and SSIM of maps against SciPy and scikit-image (the references Quantus calls)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.faithfulness.similarity import average_ranks, spearman, ssim

scipy_stats = pytest.importorskip("scipy.stats")
skimage_metrics = pytest.importorskip("skimage.metrics")


def maps_with_ties(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Six pairs of 20 x 24 maps: continuous, with a zero block (a ReLU'd region), quantised (many ties)."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.rand(6, 20, 24, generator=generator)
    b = 0.4 * a + torch.rand(6, 20, 24, generator=generator)
    a[1, :7] = 0
    b[2] = (b[2] * 3).round()
    a[3], b[3] = (a[3] * 5).floor(), -(b[3] * 4).floor()
    return a, b


def test_average_ranks_match_scipy_rankdata_with_ties():
    a, _ = maps_with_ties()
    ours = average_ranks(a.flatten(1)).numpy()
    reference = np.stack([scipy_stats.rankdata(row) for row in a.flatten(1).numpy()])
    np.testing.assert_allclose(ours, reference, atol=1e-9)


def test_spearman_matches_scipy():
    a, b = maps_with_ties()
    ours = spearman(a, b).numpy()
    reference = [scipy_stats.spearmanr(x.ravel(), y.ravel())[0] for x, y in zip(a.numpy(), b.numpy())]
    np.testing.assert_allclose(ours, reference, atol=1e-9)
    assert ours[3] < 0  # a decreasing relation gives a negative correlation, not its absolute value


def test_spearman_of_a_constant_map_is_undefined():
    result = spearman(torch.zeros(2, 5, 5), torch.rand(2, 5, 5))
    assert torch.isnan(result).all()


def test_ssim_matches_skimage_defaults():
    a, b = maps_with_ties(1)
    a, b = a / a.amax(dim=(1, 2), keepdim=True), b.clamp(0, 1)
    ours = ssim(a, b).numpy()
    reference = [
        skimage_metrics.structural_similarity(x.astype(np.float64), y.astype(np.float64), data_range=1.0)
        for x, y in zip(a.numpy(), b.numpy())
    ]
    np.testing.assert_allclose(ours, reference, atol=1e-9)
    assert ssim(a, a).numpy() == pytest.approx(1.0)
