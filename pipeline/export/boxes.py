"""Boxes as viewers want them: ``[x, y, w, h]`` relative to the stored image (FiftyOne's ``bounding_box``).

The run's boxes are pixel-edge ``(x1, y1, x2, y2)`` (column ``x`` spans ``[x, x + 1)``), so the relative box is
``[x1 / W, y1 / H, (x2 - x1) / W, (y2 - y1) / H]`` with no half-pixel shift. A thresholded-map box of a
``scores.space=input`` run is in network-input pixels and goes back to the stored image through the
preprocessing's placement (:func:`pipeline.data.geometry.boxes_to_stored`).
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.data.geometry import Placement, boxes_in_stored, boxes_to_stored


def relative_xywh(boxes: np.ndarray, width: int, height: int) -> list[list[float]]:
    """``[N, 4]`` pixel-edge ``(x1, y1, x2, y2)`` of a ``width x height`` image -> relative ``[x, y, w, h]``
    per box, each clipped to the image; boxes with no area inside it (or not finite) are left out."""
    clipped = boxes_in_stored(boxes, width, height).astype(np.float64)
    return [
        [float(x1 / width), float(y1 / height), float((x2 - x1) / width), float((y2 - y1) / height)]
        for x1, y1, x2, y2 in clipped
    ]


def map_box_in_stored(
    corners: tuple[float | None, float | None, float | None, float | None], space: str, placement: Placement
) -> np.ndarray | None:
    """One thresholded-map box (``<m>_box_x1_<tau>``.. of a row) as ``[1, 4]`` stored-image pixel edges, or
    None when the row has none (an empty map: the columns are null). ``space`` is the run's ``scores.space``:
    ``original`` boxes are stored-image pixels already, ``input`` boxes network-input pixels."""
    if any(value is None or not math.isfinite(float(value)) for value in corners):
        return None
    box = np.asarray([corners], dtype=np.float64)
    return box if space == "original" else boxes_to_stored(box, placement)
