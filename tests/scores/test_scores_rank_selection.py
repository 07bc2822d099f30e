"""Relevance rank accuracy by radix selection equals the stable-sort definition, bit for bit.

The reference is the definition written directly: a stable descending sort of the flattened map, the first
K = |G| positions, the share in G. Cases that break a naive selection: many ties (quantised maps, where
the K-th value is shared by pixels in and out of G), ``-0.0`` beside ``+0.0``, negative values (the key
flip), ``-inf`` outside a domain, K = 1 and K = all pixels.
"""

import math

import pytest
import torch

from pipeline.scores.localisation import _kth_largest_key, _order_keys, relevance_rank_accuracy


def reference_rank(maps: torch.Tensor, gt: torch.Tensor, domain: torch.Tensor | None = None) -> torch.Tensor:
    B = maps.shape[0]
    flat, g = maps.reshape(B, -1), gt.reshape(B, -1)
    k = g.sum(1)
    if domain is None:
        constant = flat.amax(1) == flat.amin(1)
    else:
        inside = domain.reshape(B, -1)
        constant = flat.masked_fill(~inside, -math.inf).amax(1) == flat.masked_fill(~inside, math.inf).amin(1)
        flat = flat.masked_fill(~inside, -math.inf)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    top = torch.arange(flat.shape[1])[None, :] < k[:, None]
    hits = (g.gather(1, order) & top).sum(1, dtype=torch.float64)
    ok = (k > 0) & ~constant
    return torch.where(ok, hits / torch.where(ok, k, 1).double(), math.nan).float()


def boxes_mask(generator: torch.Generator, b: int, h: int, w: int) -> torch.Tensor:
    corners = torch.randint(0, min(h, w), (b, 2, 2), generator=generator)
    lo, hi = corners.amin(1), corners.amax(1) + 1
    ys, xs = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    return (
        (ys >= lo[:, 1, None, None])
        & (ys < hi[:, 1, None, None])
        & (xs >= lo[:, 0, None, None])
        & (xs < hi[:, 0, None, None])
    )


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(a.nan_to_num(-7.0), b.nan_to_num(-7.0))


@pytest.mark.parametrize("levels", [0, 2, 5, 64])
def test_equals_the_stable_sort_on_maps_with_ties(levels):
    generator = torch.Generator().manual_seed(levels)
    maps = torch.rand(24, 31, 37, generator=generator)
    if levels:
        maps = torch.round(maps * levels) / levels  # few distinct values: the K-th value is a large tie
    gt = boxes_mask(generator, 24, 31, 37)
    gt[0] = True  # K = every pixel
    gt[1] = False
    gt[1, 3, 4] = True  # K = 1
    assert same(relevance_rank_accuracy(maps, gt), reference_rank(maps, gt))


def test_negative_values_signed_zeros_and_a_domain():
    generator = torch.Generator().manual_seed(3)
    maps = torch.randn(16, 20, 20, generator=generator)
    maps[0] = -0.0
    maps[1, :10] = 0.0
    maps[1, 10:] = -0.0  # equal to +0.0: ties in raster order, not -0.0 after +0.0
    maps[2] = torch.round(maps[2])
    gt = boxes_mask(generator, 16, 20, 20)
    domain = boxes_mask(generator, 16, 20, 20) | gt
    assert same(relevance_rank_accuracy(maps, gt), reference_rank(maps, gt))
    assert same(relevance_rank_accuracy(maps, gt, domain), reference_rank(maps, gt, domain))


def test_the_selected_key_is_the_kth_largest_value():
    values = torch.tensor([[0.5, -1.0, 2.0, 0.5, -0.0, 0.0, 3.0]])
    keys = _order_keys(values)
    for k, expected in [(1, 3.0), (2, 2.0), (3, 0.5), (4, 0.5), (5, 0.0), (6, 0.0), (7, -1.0)]:
        value, ties, need = _kth_largest_key(keys, torch.tensor([k]))
        assert value.item() == _order_keys(torch.tensor([expected])).item(), k
        assert torch.equal(ties[0], values[0] == expected)
        assert need.item() == k - int((values[0] > expected).sum())
