"""Maps warped back from the network input to the stored image (``scores.space=original``).

docs/definitions.md, "Post-processing": the map is upsampled to the network input (bilinear,
``align_corners=False``, :mod:`pipeline.maps.engine`), then mapped to the original image's coordinates by
undoing the resize and crop (step 6 there). This module does the second step for a whole batch in one
``grid_sample`` on the device.

Each image is scored on its own grid, the stored image scaled to keep its aspect ratio
(:func:`original_grid_sizes`); the grids of a batch share one canvas ``[B, Hc, Wc]`` (the largest grid),
with ``domain`` marking the pixels where each map is defined. A grid pixel centre ``(u + 0.5, v + 0.5)`` is the stored
point ``x = (u + 0.5) / grid_scale_x`` (same for y), read from the network-input map at
``x * scale_x + offset_x`` (bilinear, ``align_corners=False``, the same convention as the upsampling).

Choices, stated once (and in the report metadata):
- a map is defined where the network saw the stored image: the ``domain`` is the part of the image's grid
  whose pixel centres land inside the network input (the whole image for ``resize`` and ``letterbox``,
  the crop window for ``resize_crop``); outside it the map is 0 and no score looks there, so the box area
  fraction (the energy in box of a uniform map) and the relevance rank count the seen pixels only, and a
  map keeps the values it had at the network input;
- letterbox padding is not part of the stored image, so it no longer counts;
- the boxes are the annotated ones clipped to the stored image, not to the crop: a box cut by the crop
  is matched (IoU) in full, which is what "where is the object in my photo" asks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.data.batch import Placements
from pipeline.maps.engine import UpsampledMaps, min_max_normalise


@dataclass
class OriginalMaps:
    """Maps on the stored-image grids of a batch, on one canvas ``[B, K, Hc, Wc]``.

    Attributes:
        normalised: min-max normalised over the domain, 0 outside it.
        raw: the signed map (relevance mass accuracy), 0 outside the domain.
        empty: ``[B, K]`` bool, constant over the domain.
        domain: ``[B, Hc, Wc]`` bool, pixels of the image's own grid (the canvas is the batch's largest)
            whose centre lies inside the network input.
        grid_scale: ``[B, 2]`` float64 ``(x, y)``: grid pixels per stored pixel along each axis.
    """

    normalised: Tensor
    raw: Tensor
    empty: Tensor
    domain: Tensor
    grid_scale: Tensor


def original_grid_sizes(placement: Placements, width: Tensor, height: Tensor, max_side: int) -> Tensor:
    """The ``(height, width)`` of each image's scoring grid in original coordinates.

    When the resize kept the aspect ratio (to within the one pixel that rounding the resized size costs:
    ``resize_crop``, ``letterbox``), the grid is exactly the resized image before the crop or padding, so a
    grid pixel is a network-input pixel and the pointing tolerance keeps its meaning; otherwise
    (``resize`` to a square) the stored image is scaled by the larger of the two resize factors, keeping
    its aspect ratio and never having fewer pixels per object than the network input had. A grid whose
    longer side would exceed ``max_side`` is scaled down to it (this bounds a batch's memory:
    ``K x B x max_side**2`` floats).

    Shapes: placement ``[B]`` per field, width/height ``[B]`` (stored size) -> ``[B, 2]`` long.
    """
    width, height = width.to(torch.float64), height.to(torch.float64)
    scale_x, scale_y = placement.scale_x.to(torch.float64), placement.scale_y.to(torch.float64)
    resized_w, resized_h = (width * scale_x).round(), (height * scale_y).round()
    keeps_aspect = ((width * scale_y - resized_w).abs() <= 1) & ((height * scale_x - resized_h).abs() <= 1)
    uniform = torch.maximum(scale_x, scale_y)
    # Half-to-even rounding in float64, as Python's round() would do per image.
    grid_w = torch.where(keeps_aspect, resized_w, (width * uniform).round())
    grid_h = torch.where(keeps_aspect, resized_h, (height * uniform).round())
    longer = torch.maximum(grid_w, grid_h)
    too_big = longer > max_side
    shrink = max_side / torch.maximum(width, height)
    grid_w = torch.where(too_big, (width * shrink).round(), grid_w)
    grid_h = torch.where(too_big, (height * shrink).round(), grid_h)
    return torch.stack([grid_h, grid_w], dim=1).clamp(min=1).to(torch.long)


def warp_to_original(
    maps: UpsampledMaps, placement: Placements, width: Tensor, height: Tensor, grid_size: Tensor
) -> OriginalMaps:
    """Warp network-input maps back onto the stored images' grids.

    Args:
        maps: ``normalised`` and ``raw`` ``[B, K, S, S]`` at network-input resolution.
        placement: where each stored image landed: stored point ``x`` is at ``x * scale_x + offset_x`` of the
            network input (``[B]`` per field).
        width, height: ``[B]`` stored size.
        grid_size: ``[B, 2]`` ``(height, width)`` of each grid, from :func:`original_grid_sizes`.
    Returns:
        :class:`OriginalMaps` on the maps' device, canvas ``Hc = max height``, ``Wc = max width``.
    """
    device = maps.normalised.device
    B, K, in_h, in_w = maps.normalised.shape
    canvas_h, canvas_w = int(grid_size[:, 0].max()), int(grid_size[:, 1].max())
    placement = placement.to(device)
    grid_h, grid_w = grid_size[:, 0].to(device), grid_size[:, 1].to(device)
    scale_x = grid_w.to(torch.float64) / width.to(device=device, dtype=torch.float64)
    scale_y = grid_h.to(torch.float64) / height.to(device=device, dtype=torch.float64)
    cols = torch.arange(canvas_w, device=device, dtype=torch.float64)
    rows = torch.arange(canvas_h, device=device, dtype=torch.float64)
    # [B, Wc] and [B, Hc]: each grid pixel centre in network-input pixel-edge coordinates.
    input_x = (cols[None] + 0.5) / scale_x[:, None] * placement.scale_x[:, None] + placement.offset_x[:, None]
    input_y = (rows[None] + 0.5) / scale_y[:, None] * placement.scale_y[:, None] + placement.offset_y[:, None]
    seen_x = (cols[None] < grid_w[:, None]) & (input_x >= 0) & (input_x < in_w)  # [B, Wc]
    seen_y = (rows[None] < grid_h[:, None]) & (input_y >= 0) & (input_y < in_h)  # [B, Hc]
    domain = seen_y[:, :, None] & seen_x[:, None, :]
    # grid_sample's normalised coordinates for align_corners=False: -1 and 1 are the outer pixel edges.
    sample_x = (2.0 * input_x / in_w - 1.0).to(torch.float32)[:, None, :].expand(B, canvas_h, canvas_w)
    sample_y = (2.0 * input_y / in_h - 1.0).to(torch.float32)[:, :, None].expand(B, canvas_h, canvas_w)
    both = torch.cat([maps.normalised, maps.raw], dim=1).float()
    warped = F.grid_sample(
        both, torch.stack([sample_x, sample_y], dim=-1), mode="bilinear", padding_mode="border", align_corners=False
    )
    positive, raw = warped[:, :K], warped[:, K:]
    # The input maps are already in [0, 1] (spread 1 unless empty): their scale is 1.
    normalised, empty, _ = min_max_normalise(positive, scale=1.0, domain=domain)
    return OriginalMaps(
        normalised, torch.where(domain[:, None], raw, 0.0), empty, domain, torch.stack([scale_x, scale_y], dim=1)
    )
