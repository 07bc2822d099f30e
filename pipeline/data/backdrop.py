"""The mean network input of a set of images: a backdrop for pictures drawn on network-input coordinates.

Used by the shortcut finder's hot-spot picture (the class's off-box energy over what its images look
like on average). Read after the run from the image files, so the hot path carries nothing extra.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pipeline.data.dataset import PreprocessSpec
from pipeline.data.decode import decode_image
from pipeline.data.geometry import image_to_input, plan_placement


def mean_input(paths: Sequence[str], spec: PreprocessSpec, limit: int = 32) -> np.ndarray | None:
    """The mean of the first ``limit`` readable images of ``paths``, each placed as the run placed it
    (``spec``: resize, crop or pad to the network input). ``[size, size, 3]`` uint8 RGB, or None when no
    image could be read (a file that fails is skipped: the picture is a backdrop, not a measurement)."""
    total, count = None, 0
    for path in paths:
        if count >= limit:
            break
        try:
            image, (width, height) = decode_image(
                str(path), spec.boxes_refer_to, min_side=spec.resize_size or spec.size, max_pixels=spec.max_pixels
            )
            placement = plan_placement(width, height, spec.mode, spec.size, spec.resize_size)
            pixels = image_to_input(image, placement, spec.interpolation, spec.fill).to(torch.float64)
        except Exception:  # noqa: BLE001 -- an unreadable file was already an error row of the run
            continue
        total = pixels if total is None else total + pixels
        count += 1
    if total is None:
        return None
    return (total / count).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
