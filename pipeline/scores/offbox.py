"""Where a map's energy outside the boxes goes: its off-box energy on a coarse grid of the map.

Used by the shortcut finder (``pipeline.reports.shortcuts``), which adds these grids up per predicted
class to find a consistent off-object hot spot (a watermark, a marker, a border).
"""

from __future__ import annotations

import torch


def _cell_assignment(size: int, grid: int, device: torch.device) -> torch.Tensor:
    """``[grid, size]`` one-hot float32: pixel ``i`` belongs to cell ``floor(i * grid / size)``."""
    cell = torch.div(torch.arange(size, device=device) * grid, size, rounding_mode="floor")
    return (cell[None, :] == torch.arange(grid, device=device)[:, None]).to(torch.float32)


def off_box_energy_grid(maps: torch.Tensor, gt_mask: torch.Tensor, grid: int) -> torch.Tensor:
    """Share of each map's energy that lies outside G, per cell of a ``grid x grid`` partition of the map.

    ``cell[b, i, j] = sum over pixels (y, x) of cell (i, j) outside G of M[b, y, x] / sum(M[b])``, pixel
    ``(y, x)`` in cell ``(floor(y * grid / H), floor(x * grid / W))`` (row i from the top, column j from
    the left; the grid covers the map's normalised coordinates ``[0, 1) x [0, 1)``). The cells sum to
    ``1 - energy_in_box``. All zero for an empty map (``sum(M) == 0``) or an image without a box (no
    off-box energy is defined). Sums in float32 on the maps' device, as two small matrix products.

    Shapes: maps [B, H, W] non-negative, gt_mask [B, H, W] bool -> [B, grid, grid] float32.
    """
    if maps.dim() != 3 or gt_mask.shape != maps.shape:
        raise ValueError(f"maps and gt_mask must both be [B, H, W], got {tuple(maps.shape)} and {tuple(gt_mask.shape)}")
    _, height, width = maps.shape
    values = maps.to(torch.float32)
    gt = gt_mask.to(device=maps.device, dtype=torch.bool)
    total = values.sum(dim=(1, 2))
    defined = (total > 0) & gt.flatten(1).any(dim=1)
    outside = values.masked_fill(gt, 0.0) / torch.where(defined, total, torch.ones_like(total))[:, None, None]
    rows = _cell_assignment(height, grid, maps.device)  # [grid, H]
    cols = _cell_assignment(width, grid, maps.device)  # [grid, W]
    cells = torch.einsum("ih,bhw,jw->bij", rows, outside, cols)
    return torch.where(defined[:, None, None], cells, torch.zeros_like(cells))
