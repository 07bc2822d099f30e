"""Where a stored image lands in the network input, and how its boxes follow it.

Every preprocessing mode is a per-axis scale followed by a shift (a crop is a negative shift, padding a
positive one), so one small record, :class:`Placement`, describes it for the image *and* the boxes.
Coordinates are pixel-edge: pixel column ``x`` spans ``[x, x + 1)``; a box ``(x1, y1, x2, y2)`` covers
columns ``x1 <= x < x2``. A point ``x`` of the stored image lands at ``x * scale_x + offset_x`` in the
network input, and the same formula maps box corners, so boxes follow the image exactly.

Modes (``data.preprocess.mode``):
- ``resize_crop``: resize the shorter side to ``resize_size`` (the longer side to
  ``int(resize_size * long / short)``, as torchvision does), then centre-crop ``size x size``
  (``top = round((h - size) / 2)``, as torchvision's ``center_crop``): ImageNet evaluation.
- ``resize``: resize to ``size x size`` without crop (aspect ratio not kept).
- ``letterbox``: resize the longer side to ``size`` keeping the aspect ratio, pad the rest with ``fill``.

Scoring in original-image coordinates (``scores.space=original``) goes the way back with the same
numbers: a stored-image point ``x`` is read from the network input at ``x * scale_x + offset_x``
(:mod:`pipeline.maps.warp`), against the boxes as annotated (:func:`boxes_in_stored`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

MODES = ("resize_crop", "resize", "letterbox")


@dataclass(frozen=True)
class Placement:
    """The stored image resized to ``resized_width x resized_height``, its origin put at
    ``(offset_x, offset_y)`` of an ``out_width x out_height`` network input (offsets are negative for
    a crop, positive for padding)."""

    width: int
    height: int
    resized_width: int
    resized_height: int
    offset_x: int
    offset_y: int
    out_width: int
    out_height: int

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.height


def plan_placement(width: int, height: int, mode: str, size: int, resize_size: int | None = None) -> Placement:
    """Plan how a ``width x height`` stored image becomes a ``size x size`` network input."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if mode == "resize_crop":
        short_target = resize_size or size
        if width <= height:
            resized_w, resized_h = short_target, int(short_target * height / width)
        else:
            resized_w, resized_h = int(short_target * width / height), short_target
        left = int(round((resized_w - size) / 2.0))
        top = int(round((resized_h - size) / 2.0))
        return Placement(width, height, resized_w, resized_h, -left, -top, size, size)
    if mode == "resize":
        return Placement(width, height, size, size, 0, 0, size, size)
    if mode == "letterbox":
        scale = size / max(width, height)
        resized_w = max(1, min(size, int(round(width * scale))))
        resized_h = max(1, min(size, int(round(height * scale))))
        return Placement(width, height, resized_w, resized_h, (size - resized_w) // 2, (size - resized_h) // 2, size, size)
    raise ValueError(f"unknown preprocess mode {mode!r}; choose one of {MODES}")


def boxes_to_input(boxes: np.ndarray, placement: Placement) -> tuple[np.ndarray, np.ndarray]:
    """Map stored-image boxes into network-input coordinates and clip them to the input.

    Args:
        boxes: ``[N, 4]`` ``(x1, y1, x2, y2)`` pixel-edge coordinates of the stored image.
    Returns:
        ``[M, 4]`` float32 boxes inside the input (clipped; a box cut by the crop keeps its visible part)
        and ``[N]`` bool, which of the input boxes survived. A box that is inverted, has zero area, or
        lies wholly outside the input (after clipping it has no area) does not survive.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1 = boxes[:, 0] * placement.scale_x + placement.offset_x
    x2 = boxes[:, 2] * placement.scale_x + placement.offset_x
    y1 = boxes[:, 1] * placement.scale_y + placement.offset_y
    y2 = boxes[:, 3] * placement.scale_y + placement.offset_y
    proper = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & np.isfinite(boxes).all(axis=1)
    x1, x2 = np.clip(x1, 0, placement.out_width), np.clip(x2, 0, placement.out_width)
    y1, y2 = np.clip(y1, 0, placement.out_height), np.clip(y2, 0, placement.out_height)
    keep = proper & (x2 > x1) & (y2 > y1)
    return np.stack([x1, y1, x2, y2], axis=1)[keep].astype(np.float32), keep


def boxes_to_stored(boxes: np.ndarray, placement: Placement) -> np.ndarray:
    """Inverse of :func:`boxes_to_input` (without the clipping): input coordinates -> stored image."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.empty_like(boxes)
    out[:, [0, 2]] = (boxes[:, [0, 2]] - placement.offset_x) / placement.scale_x
    out[:, [1, 3]] = (boxes[:, [1, 3]] - placement.offset_y) / placement.scale_y
    return out


def image_to_input(image: torch.Tensor, placement: Placement, interpolation: str = "bilinear", fill: int = 0) -> torch.Tensor:
    """Resize and crop/pad an image as planned.

    Args:
        image: ``[3, h, w]`` uint8. ``h, w`` may differ from the placement's stored size when the decoder
            already reduced a very large image; the resize target is the same either way.
    Returns:
        ``[3, out_height, out_width]`` uint8.
    """
    mode = InterpolationMode(interpolation)
    resized = TF.resize(image, [placement.resized_height, placement.resized_width], interpolation=mode, antialias=True)
    out = torch.full((image.shape[0], placement.out_height, placement.out_width), fill, dtype=image.dtype)
    # Overlap of the resized image (shifted by the offset) with the output canvas.
    src_x0, src_y0 = max(0, -placement.offset_x), max(0, -placement.offset_y)
    dst_x0, dst_y0 = max(0, placement.offset_x), max(0, placement.offset_y)
    w = min(placement.resized_width - src_x0, placement.out_width - dst_x0)
    h = min(placement.resized_height - src_y0, placement.out_height - dst_y0)
    out[:, dst_y0:dst_y0 + h, dst_x0:dst_x0 + w] = resized[:, src_y0:src_y0 + h, src_x0:src_x0 + w]
    return out


def boxes_in_stored(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """The proper boxes clipped to the stored image: ``[N, 4]`` -> ``[M, 4]`` float32 pixel-edge.

    A box that is inverted, not finite, or has no area inside the image is left out.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=1)
    boxes = np.where(finite[:, None], boxes, 0.0)
    proper = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    clipped = np.stack([np.clip(boxes[:, 0], 0, width), np.clip(boxes[:, 1], 0, height),
                        np.clip(boxes[:, 2], 0, width), np.clip(boxes[:, 3], 0, height)], axis=1)
    keep = proper & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped[keep].astype(np.float32)
