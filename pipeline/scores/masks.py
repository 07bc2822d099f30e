"""Ground-truth masks from boxes, batched and on the boxes' device.

Box convention (docs/definitions.md): a box ``(x1, y1, x2, y2)`` is in pixel-edge coordinates of the
map's pixel grid and covers columns ``x1 <= x < x2`` and rows ``y1 <= y < y2``; for integer boxes the
mask is ``mask[y1:y2, x1:x2]`` (rows first).  Boxes may be fractional (after a resize): a pixel
(row ``y``, column ``x``) belongs to a box iff its centre lies inside the box::

    x1 <= x + 0.5 < x2   and   y1 <= y + 0.5 < y2

which equals ``mask[y1:y2, x1:x2]`` for integer boxes.  The ground-truth region G of an image is the
union of its valid boxes (each pixel counted once).
"""

from __future__ import annotations

import torch

__all__ = ["boxes_to_mask", "box_pixel_indicators"]


def _centres(n: int, like: torch.Tensor) -> torch.Tensor:
    """Pixel centres ``0.5, 1.5, ..., n - 0.5`` in ``like``'s dtype and device (exact for n < 2**23)."""
    dtype = like.dtype if like.is_floating_point() else torch.float32
    return torch.arange(n, device=like.device, dtype=dtype) + 0.5


def box_pixel_indicators(
    boxes: torch.Tensor, box_valid: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-box row and column membership, the two factors of a box mask.

    ``rows[b, n, y] = box_valid[b, n] and y1 <= y + 0.5 < y2``;
    ``cols[b, n, x] = box_valid[b, n] and x1 <= x + 0.5 < x2`` (pixel centre inside the box).
    The pixel (y, x) lies in box n iff ``rows[b, n, y] & cols[b, n, x]``.

    Shapes: boxes [B, N, 4] (x1, y1, x2, y2), box_valid [B, N] bool -> rows [B, N, H] bool,
    cols [B, N, W] bool.
    """
    if boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [B, N, 4], got {tuple(boxes.shape)}")
    if box_valid.shape != boxes.shape[:2]:
        raise ValueError(f"box_valid must be {tuple(boxes.shape[:2])}, got {tuple(box_valid.shape)}")
    valid = box_valid.to(device=boxes.device, dtype=torch.bool)
    cy = _centres(height, boxes)
    cx = _centres(width, boxes)
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))  # each [B, N, 1]
    rows = (y1 <= cy) & (cy < y2) & valid[..., None]
    cols = (x1 <= cx) & (cx < x2) & valid[..., None]
    return rows, cols


def boxes_to_mask(boxes: torch.Tensor, box_valid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Ground-truth region G: the union of the valid boxes of each image, as a pixel mask.

    ``G[b, y, x] = OR_n (box_valid[b, n] and x1_n <= x + 0.5 < x2_n and y1_n <= y + 0.5 < y2_n)``;
    for integer boxes this is ``mask[y1:y2, x1:x2] = True`` for every valid box (rows first,
    docs/definitions.md).  Built by broadcasting comparisons: the per-box row and column indicators
    are combined by a batched 0/1 matrix product (counts of covering boxes, exact), then ``> 0``.
    Padding rows (``box_valid`` False), boxes outside the image and boxes covering no pixel centre
    contribute nothing.

    Shapes: boxes [B, N, 4] float (x1, y1, x2, y2), box_valid [B, N] bool -> [B, H, W] bool on
    ``boxes.device``.
    """
    rows, cols = box_pixel_indicators(boxes, box_valid, height, width)
    # [B, H, N] @ [B, N, W] -> number of boxes covering each pixel (small integers, exact in fp32).
    cover = torch.bmm(rows.transpose(1, 2).to(torch.float32), cols.to(torch.float32))
    return cover > 0.5
