"""Which pixel grid a batch's maps are scored on (``scores.space``).

``input``: the network input as it is, boxes moved with the image and clipped. ``original``: each stored
image's grid, the maps warped back (:mod:`pipeline.maps.warp`), the annotated boxes scaled onto it, and
the box and peak columns converted back to stored-image pixels afterwards (:func:`coordinates_to_stored`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.data.batch import Batch, Boxes
from pipeline.maps.warp import warp_to_original
from pipeline.scores.registry import score_for_column


@dataclass
class ScoringView:
    """What one batch's maps are scored on: the network input, or each stored image's grid.

    ``maps``/``raw`` ``[B, K, H, W]``, ``empty`` ``[B, K]``, ``boxes`` ``[B, N, 4]`` and ``box_valid``
    ``[B, N]`` in the same pixel grid; ``domain`` ``[B, H, W]`` and ``grid_scale`` ``[B, 2]`` (grid pixels
    per stored pixel, x then y) only in original space.
    """

    maps: torch.Tensor
    raw: torch.Tensor
    empty: torch.Tensor
    boxes: torch.Tensor
    box_valid: torch.Tensor
    domain: torch.Tensor | None = None
    grid_scale: torch.Tensor | None = None
    grid_size: torch.Tensor | None = None  # [B, 2] (height, width) of each image's grid on the canvas, on the host


def scoring_view(maps, batch: Batch, boxes: Boxes, grid_size: torch.Tensor | None) -> ScoringView:
    """Network-input maps and ``boxes`` (the batch's input-frame boxes, on the maps' device) as they are
    (``grid_size`` None), or warped back to the stored images with the batch's stored boxes."""
    if grid_size is None:
        return ScoringView(maps.normalised, maps.raw, maps.empty, boxes.coords, boxes.valid)
    original = warp_to_original(maps, batch.placement, batch.width, batch.height, grid_size)
    device = original.normalised.device
    scale = original.grid_scale.to(torch.float32)
    stored = batch.boxes_stored.to(device, non_blocking=True)
    on_grid = stored.coords * torch.stack([scale[:, 0], scale[:, 1], scale[:, 0], scale[:, 1]], dim=1)[:, None, :]
    # An image none of whose boxes reached the network input is flagged, its box scores NaN, in both spaces.
    valid = stored.valid & boxes.valid.any(dim=1, keepdim=True)
    return ScoringView(
        original.normalised,
        original.raw,
        original.empty,
        on_grid,
        valid,
        original.domain,
        original.grid_scale,
        grid_size,
    )


def coordinates_to_stored(scores: dict[str, torch.Tensor], grid_scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """The coordinate columns of :func:`~pipeline.scores.score_map` from grid pixels to stored-image pixels.

    Which columns are coordinates, and of which kind, comes from the score registry
    (:attr:`~pipeline.scores.registry.Score.coordinate`): a pixel-edge coordinate (box corners) is
    divided by the grid scale; a pixel index (peaks) becomes the stored pixel that holds its grid pixel's
    centre. Other columns are returned as they are. Shapes: grid_scale ``[B, 2]`` (x, y) matching the
    scores' ``[B]``.
    """
    scale = {"x": grid_scale[:, 0].to(torch.float64), "y": grid_scale[:, 1].to(torch.float64)}
    out = dict(scores)
    for name, values in scores.items():
        score = score_for_column(name)
        if score is None or score.coordinate is None:
            continue
        axis, kind = score.coordinate.split("_")
        if kind == "edge":
            out[name] = (values.to(torch.float64) / scale[axis]).to(torch.float32)
        else:
            out[name] = torch.floor((values.to(torch.float64) + 0.5) / scale[axis]).to(torch.float32)
    return out
