"""One map post-processing and one empty-map rule for both scoring spaces (``min_max_normalise``)."""

from __future__ import annotations

import torch

from pipeline.data.batch import Placements
from pipeline.maps.engine import EMPTY_SPREAD, min_max_normalise, upsample_and_normalise
from pipeline.maps.warp import original_grid_sizes, warp_to_original


def _both_spaces(signed: torch.Tensor):
    """The maps at the network input (32 x 32) and warped back onto 40 x 24 stored images (letterbox)."""
    at_input = upsample_and_normalise(signed, (32, 32))
    batch = signed.shape[0]
    width, height = torch.full((batch,), 40), torch.full((batch,), 24)
    scale = torch.full((batch,), 32 / 40, dtype=torch.float64)
    placement = Placements(
        scale_x=scale,
        scale_y=scale,
        offset_x=torch.zeros(batch, dtype=torch.float64),
        offset_y=torch.full((batch,), (32 - 24 * 0.8) / 2, dtype=torch.float64),
    )
    original = warp_to_original(at_input, placement, width, height, original_grid_sizes(placement, width, height, 64))
    return at_input, original


def test_the_empty_rule_is_the_same_in_both_spaces():
    """Zero, constant non-zero (a wobble in the last bits included) and NaN maps are empty at the network
    input and on the stored image; a map with a real peak is not, in either space."""
    signed = torch.zeros(5, 1, 6, 6)
    signed[1] = 2.5
    signed[2] = 2.5 * (1 + 1e-8 * torch.rand(6, 6))  # rounding noise: relative spread far below EMPTY_SPREAD
    signed[3] = float("nan")
    signed[4, 0, 2, 3] = 1.0  # a peak
    at_input, original = _both_spaces(signed)
    assert at_input.empty[:, 0].tolist() == [True, True, True, True, False]
    assert original.empty[:, 0].tolist() == at_input.empty[:, 0].tolist()
    for normalised, empty in ((at_input.normalised, at_input.empty), (original.normalised, original.empty)):
        assert (normalised[empty] == 0).all()  # NaN included: an empty map is all zero
        assert normalised[4, 0].max() == 1 and normalised[4, 0].min() == 0


def test_scale_and_domain():
    """The spread is compared with EMPTY_SPREAD times the map's own maximum (scale None) or the given
    scale; with a domain only its pixels are normalised and the rest is 0."""
    maps = torch.zeros(2, 1, 4, 4)
    maps[0, 0, 0, 0] = 1e-9  # tiny but a real peak relative to itself
    maps[1, 0] = 0.5
    maps[1, 0, 3, 3] = 0.5 + 0.5 * EMPTY_SPREAD  # below the absolute rule for a [0, 1] map
    normalised, empty, high = min_max_normalise(maps, scale=None)
    assert empty.tolist() == [[False], [True]] and normalised[0, 0, 0, 0] == 1
    _, empty, _ = min_max_normalise(maps, scale=1.0)
    assert empty.tolist() == [[True], [True]]
    domain = torch.zeros(2, 4, 4, dtype=torch.bool)
    domain[:, 1:3, 1:3] = True
    maps[:, 0, 1, 1] = 0.9
    normalised, empty, high = min_max_normalise(maps, scale=1.0, domain=domain)
    assert not empty.any() and torch.allclose(high[:, 0], torch.tensor([0.9, 0.9]))
    assert (normalised[~domain[:, None].expand_as(normalised)] == 0).all()
    assert normalised[:, 0, 1, 1].tolist() == [1.0, 1.0]
