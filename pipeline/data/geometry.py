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

import math
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from pipeline.data.records import BadAnnotation

MODES = ("resize_crop", "resize", "letterbox")
# How far an annotated box may extend past the stored image's edge and still be clipped to it (annotation
# tools round outward, ILSVRC's xmax can equal width + 1): the larger of these, per axis. Further out, the
# box does not describe this image (another size, another frame, normalised coordinates...): a BadAnnotation.
EDGE_TOLERANCE_PX = 2.0
EDGE_TOLERANCE_SHARE = 0.01  # of the image's side along that axis
MIN_BOX_SIDE = 1.0  # pixels: a thinner box has no pixel to score
# image_to_input resizes only a window of the stored image (the part the crop keeps, with a margin for
# the resampling filter) when the whole resized image would have more than this many times the pixels of
# the network input: a 1:20 strip resized to 256 on its short side is 256 x 5,120, of which 224 x 224 is
# kept. Below it (every usual photo) the whole image is resized, as before.
CROP_FIRST_FACTOR = 4


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
        return Placement(
            width, height, resized_w, resized_h, (size - resized_w) // 2, (size - resized_h) // 2, size, size
        )
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


def image_to_input(
    image: torch.Tensor, placement: Placement, interpolation: str = "bilinear", fill: int = 0
) -> torch.Tensor:
    """Resize and crop/pad an image as planned.

    Args:
        image: ``[3, h, w]`` uint8. ``h, w`` may differ from the placement's stored size when the decoder
            already reduced a very large image; the resize target is the same either way.
    Returns:
        ``[3, out_height, out_width]`` uint8.
    """
    mode = InterpolationMode(interpolation)
    out = torch.full(
        (image.shape[0], placement.out_height, placement.out_width), fill, dtype=image.dtype, device=image.device
    )
    # Overlap of the resized image (shifted by the offset) with the output canvas.
    src_x0, src_y0 = max(0, -placement.offset_x), max(0, -placement.offset_y)
    dst_x0, dst_y0 = max(0, placement.offset_x), max(0, placement.offset_y)
    w = min(placement.resized_width - src_x0, placement.out_width - dst_x0)
    h = min(placement.resized_height - src_y0, placement.out_height - dst_y0)
    if w <= 0 or h <= 0:
        return out
    resized_size = (placement.resized_height, placement.resized_width)
    if (
        placement.resized_width * placement.resized_height
        > CROP_FIRST_FACTOR * placement.out_width * placement.out_height
    ):
        # Resize only the window that the visible part comes from: same filter, same sample positions.
        rows = source_window(image.shape[-2], placement.resized_height, src_y0, src_y0 + h)
        cols = source_window(image.shape[-1], placement.resized_width, src_x0, src_x0 + w)
        image = image[:, rows.source_start : rows.source_stop, cols.source_start : cols.source_stop]
        resized_size = (rows.resized_length, cols.resized_length)
        src_x0, src_y0 = src_x0 - cols.resized_start, src_y0 - rows.resized_start
    resized = TF.resize(image, list(resized_size), interpolation=mode, antialias=True)
    out[:, dst_y0 : dst_y0 + h, dst_x0 : dst_x0 + w] = resized[:, src_y0 : src_y0 + h, src_x0 : src_x0 + w]
    return out


@dataclass(frozen=True)
class Window:
    """Source pixels ``[source_start, source_stop)`` of one axis resize to the resized pixels
    ``[resized_start, resized_start + resized_length)`` of the whole image's resize, exactly."""

    source_start: int
    source_stop: int
    resized_start: int
    resized_length: int


def source_window(n_source: int, n_resized: int, start: int, stop: int) -> Window:
    """The source window that resizing ``n_source -> n_resized`` pixels needs for resized pixels ``[start, stop)``.

    A resize samples output pixel ``i`` at source position ``(i + 0.5) * n_source / n_resized - 0.5``
    (half-pixel centres, as torch and PIL). Resizing a window that starts at source pixel ``a`` to
    ``(b - a) * n_resized / n_source`` pixels samples the same positions (shifted by ``a``) only when that
    shift is a whole number of output pixels: ``a`` and ``b`` are multiples of the period
    ``n_source / gcd(n_source, n_resized)``. The window is widened by the filter's reach (2 output-pixel
    footprints, enough for the antialiased bicubic) and rounded out to the period; so it is the whole
    axis when the period is long (then nothing is saved, and nothing changes).
    """
    period = n_source // math.gcd(n_source, n_resized)
    per_period = n_resized // math.gcd(n_source, n_resized)
    ratio = n_source / n_resized
    margin = 2.0 * max(ratio, 1.0) + 2.0  # source pixels
    first = max(0, math.floor((start * ratio - margin) / period) * period)
    last = min(n_source, math.ceil((stop * ratio + margin) / period) * period)
    return Window(first, last, first // period * per_period, (last - first) // period * per_period)


def boxes_in_stored(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """The proper boxes clipped to the stored image: ``[N, 4]`` -> ``[M, 4]`` float32 pixel-edge.

    A box that is inverted, not finite, or has no area inside the image is left out.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    finite = np.all(np.isfinite(boxes), axis=1)
    boxes = np.where(finite[:, None], boxes, 0.0)
    proper = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    clipped = np.stack(
        [
            np.clip(boxes[:, 0], 0, width),
            np.clip(boxes[:, 1], 0, height),
            np.clip(boxes[:, 2], 0, width),
            np.clip(boxes[:, 3], 0, height),
        ],
        axis=1,
    )
    keep = proper & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped[keep].astype(np.float32)


def edge_tolerance(side: int) -> float:
    """Pixels a box may extend past an edge of an image ``side`` pixels long along that axis."""
    return max(EDGE_TOLERANCE_PX, EDGE_TOLERANCE_SHARE * side)


def checked_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """The annotated boxes of a ``width x height`` stored image, clipped to it; BadAnnotation if one is wrong.

    A box is wrong when it is not finite, inverted or empty (``x2 <= x1`` or ``y2 <= y1``), under
    :data:`MIN_BOX_SIDE` wide or high (before or after clipping), entirely outside the image, or extends past
    an edge by more than :func:`edge_tolerance` (a box ten times the image is not "cropped away", it belongs
    to another image or another unit). Such a sample is an error row naming the box and the image size, never
    scored with fewer boxes or none. A box within the tolerance is clipped, as before. Boxes that the
    preprocessing crop cuts away are a different matter (:func:`boxes_to_input`): those are valid.

    Args:
        boxes: ``[N, 4]`` ``(x1, y1, x2, y2)`` pixel-edge coordinates of the stored image.
    Returns:
        ``[N, 4]`` float32, each box clipped to ``[0, width] x [0, height]``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        clipped = np.stack(
            [
                np.clip(boxes[:, 0], 0, width),
                np.clip(boxes[:, 1], 0, height),
                np.clip(boxes[:, 2], 0, width),
                np.clip(boxes[:, 3], 0, height),
            ],
            axis=1,
        )
        tol_x, tol_y = edge_tolerance(width), edge_tolerance(height)
        x1, y1, x2, y2 = boxes.T
        good = (
            np.isfinite(boxes).all(axis=1)
            & (x2 - x1 >= MIN_BOX_SIDE)
            & (y2 - y1 >= MIN_BOX_SIDE)
            & (x1 >= -tol_x)
            & (y1 >= -tol_y)
            & (x2 <= width + tol_x)
            & (y2 <= height + tol_y)
            & (clipped[:, 2] - clipped[:, 0] >= MIN_BOX_SIDE)
            & (clipped[:, 3] - clipped[:, 1] >= MIN_BOX_SIDE)
        )
    if not good.all():  # the first wrong box, in words (the vector test above is the same rules, at once)
        bad = np.flatnonzero(~good)
        box = boxes[bad[0]]
        x1, y1, x2, y2 = (float(v) for v in box)
        reason = _box_problem(x1, y1, x2, y2, width, height)
        shown = ", ".join(f"{v:g}" for v in box)
        others = f" ({len(bad)} of the {len(boxes)} boxes are wrong)" if len(bad) > 1 else ""
        raise BadAnnotation(f"annotated box {bad[0] + 1} ({shown}) {reason}; the image is {width}x{height}{others}")
    return clipped.astype(np.float32)


def _box_problem(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> str:
    """Why the pixel-edge box cannot be scored on a ``width x height`` image (one that :func:`checked_boxes`
    refused)."""
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return "is not finite"
    if x2 <= x1 or y2 <= y1:
        return "is inverted or empty (x2 <= x1 or y2 <= y1)"
    if x2 - x1 < MIN_BOX_SIDE or y2 - y1 < MIN_BOX_SIDE:
        return f"is under {MIN_BOX_SIDE:g} px wide or high"
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        return "lies entirely outside the image"
    tol_x, tol_y = edge_tolerance(width), edge_tolerance(height)
    past = {"left": -x1, "top": -y1, "right": x2 - width, "bottom": y2 - height}
    limit = {"left": tol_x, "top": tol_y, "right": tol_x, "bottom": tol_y}
    edge = max(past, key=lambda name: past[name] - limit[name])
    if past[edge] > limit[edge]:
        return f"extends {past[edge]:g} px past the {edge} edge (tolerance {limit[edge]:g} px)"
    if min(x2, width) - max(x1, 0) < MIN_BOX_SIDE or min(y2, height) - max(y1, 0) < MIN_BOX_SIDE:
        return f"has under {MIN_BOX_SIDE:g} px inside the image"
    return "is wrong"  # not reached: checked_boxes asks only about a box its rules refused
