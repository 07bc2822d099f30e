"""Similarity of two batches of maps: Spearman rank correlation and SSIM, batched on the device.

Both follow the reference implementations the tests compare against: ``scipy.stats.spearmanr`` (ties get
the mean of their ranks) and ``skimage.metrics.structural_similarity`` with its defaults.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def average_ranks(values: Tensor) -> Tensor:
    """Ranks ``1..P`` of each row, ties given the mean of the ranks they span (``scipy.stats.rankdata``,
    method ``average``).

    Args:
        values: ``[N, P]``.
    Returns:
        ``[N, P]`` float64.
    """
    rows, count = values.shape
    ordered, order = values.sort(dim=1, stable=True)
    positions = torch.arange(count, device=values.device).expand(rows, count)
    starts_run = torch.ones_like(ordered, dtype=torch.bool)
    starts_run[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends_run = torch.ones_like(starts_run)
    ends_run[:, :-1] = starts_run[:, 1:]
    first = torch.where(starts_run, positions, torch.zeros_like(positions)).cummax(dim=1).values
    last = torch.where(ends_run, positions, torch.full_like(positions, count)).flip(1).cummin(dim=1).values.flip(1)
    mean_rank = (first + last).double() / 2 + 1
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of each pair of maps: the Pearson correlation of their average ranks
    (Spearman 1904; ``scipy.stats.spearmanr``, which Quantus's ``correlation_spearman`` calls).

    Args:
        a, b: ``[N, ...]`` maps (flattened after the first dimension).
    Returns:
        ``[N]`` float64 in ``[-1, 1]``; NaN where either map is constant (no ranking), as scipy gives.
    """
    ranks_a = average_ranks(a.flatten(1))
    ranks_b = average_ranks(b.flatten(1))
    centred_a = ranks_a - ranks_a.mean(dim=1, keepdim=True)
    centred_b = ranks_b - ranks_b.mean(dim=1, keepdim=True)
    covariance = (centred_a * centred_b).sum(dim=1)
    spread = (centred_a.square().sum(dim=1) * centred_b.square().sum(dim=1)).sqrt()
    return torch.where(spread > 0, covariance / spread.clamp_min(1e-300), torch.full_like(spread, float("nan")))


# skimage.metrics.structural_similarity's defaults (Wang et al. 2004 constants, uniform 7 x 7 window)
SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """Mean structural similarity of each pair of maps (Wang et al. 2004, *Image quality assessment: from
    error visibility to structural similarity*, IEEE TIP 13), as ``skimage.metrics.structural_similarity``
    computes it with its defaults: a uniform ``7 x 7`` window, ``K1 = 0.01``, ``K2 = 0.03``, sample
    (co)variances (``N / (N - 1)``), averaged over the positions where the window lies inside the map.

    ``SSIM = (2 mu_a mu_b + C1) (2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1) (s_a^2 + s_b^2 + C2))`` with
    ``C1 = (K1 R)^2``, ``C2 = (K2 R)^2`` and ``R = data_range`` (1 for maps normalised to ``[0, 1]``).

    Args:
        a, b: ``[N, H, W]`` with ``H, W >= 7``.
    Returns:
        ``[N]`` float64.
    """
    a, b = a.double()[:, None], b.double()[:, None]
    window = SSIM_WINDOW
    mean_a, mean_b = F.avg_pool2d(a, window, stride=1), F.avg_pool2d(b, window, stride=1)
    mean_aa, mean_bb = F.avg_pool2d(a * a, window, stride=1), F.avg_pool2d(b * b, window, stride=1)
    mean_ab = F.avg_pool2d(a * b, window, stride=1)
    sample = window * window / (window * window - 1)  # sample (co)variances, as skimage's default
    var_a = sample * (mean_aa - mean_a * mean_a)
    var_b = sample * (mean_bb - mean_b * mean_b)
    cov = sample * (mean_ab - mean_a * mean_b)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    index = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
    return index.flatten(1).mean(dim=1)
