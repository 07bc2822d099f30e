"""The saved maps (``maps.parquet``) as heatmap files over the stored image, for a viewer such as FiftyOne.

A map is post-processed as the run did (:func:`pipeline.maps.engine.upsample_and_normalise`: ReLU at the
layer's resolution, bilinear upsampling to the network input, per-map min-max) and carried back onto the
stored image by undoing the resize and crop (:func:`pipeline.maps.warp.warp_to_original`, the
``scores.space=original`` path), on a grid of the stored image's aspect ratio whose longer side is at most
``max_side`` pixels. Where the network did not see the image (outside a centre crop) the map is 0. A viewer
stretches the file over the image, so the heatmap lies where the model looked.

The file is a 16-bit grayscale PNG: code ``q`` in ``[0, 65535]`` is the normalised map value ``q / 65535``
(:data:`HEATMAP_RANGE` is the range to state, as ``fo.Heatmap(map_path=..., range=[0, 65535])``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from pipeline.data.batch import Placements
from pipeline.data.geometry import Placement
from pipeline.maps.engine import upsample_and_normalise
from pipeline.maps.warp import original_grid_sizes, warp_to_original

HEATMAP_RANGE = (0, 65535)  # the codes of a 16-bit PNG; value = code / 65535
DEFAULT_MAX_SIDE = 256  # longer side of a heatmap file, pixels (the maps themselves are a few cells wide)


def encode_png16(values: np.ndarray) -> bytes:
    """``[H, W]`` values in ``[0, 1]`` (clipped; NaN as 0) -> a 16-bit grayscale PNG's bytes."""
    codes = np.rint(np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0) * HEATMAP_RANGE[1])
    ok, encoded = cv2.imencode(".png", codes.astype(np.uint16))
    if not ok:  # pragma: no cover -- OpenCV encodes any 2D uint16 array
        raise ValueError("OpenCV could not encode the heatmap as PNG")
    return encoded.tobytes()


def write_heatmap(path: Path, values: np.ndarray) -> None:
    """Write :func:`encode_png16` of ``values`` to ``path`` (a temporary sibling renamed onto it: a reader
    never sees half a file; no fsync, these files are made again by exporting again)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(encode_png16(values))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_heatmap(path: Path) -> np.ndarray:
    """A heatmap file back as ``[H, W]`` float32 values in ``[0, 1]``."""
    codes = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if codes is None or codes.dtype != np.uint16 or codes.ndim != 2:
        raise ValueError(f"{path} is not a 16-bit grayscale PNG")
    return codes.astype(np.float32) / HEATMAP_RANGE[1]


def stored_frame_maps(
    signed_low_res: torch.Tensor,
    placements: Sequence[Placement],
    input_size: tuple[int, int],
    max_side: int = DEFAULT_MAX_SIDE,
) -> list[np.ndarray]:
    """The saved maps of a batch on their stored images' grids.

    Args:
        signed_low_res: ``[B, K, h, w]`` signed maps as ``maps.parquet`` holds them.
        placements: where each stored image landed in the network input (the run's preprocessing,
            :func:`pipeline.data.geometry.plan_placement`).
        input_size: the network input ``(H, W)``.
        max_side: longer side of each grid at most (the grid is the resized image before the crop otherwise).
    Returns:
        one ``[K, gh, gw]`` float32 array in ``[0, 1]`` per image (0 outside the part the network saw; all 0
        for an empty map).
    """
    if not len(placements):
        return []
    maps = upsample_and_normalise(signed_low_res.float(), input_size)
    width = torch.tensor([p.width for p in placements], dtype=torch.float64)
    height = torch.tensor([p.height for p in placements], dtype=torch.float64)
    placed = Placements.of(placements)
    grid = original_grid_sizes(placed, width, height, max_side)
    warped = warp_to_original(maps, placed, width, height, grid)
    out = []
    for i, (grid_h, grid_w) in enumerate(grid.tolist()):
        out.append(warped.normalised[i, :, :grid_h, :grid_w].numpy().astype(np.float32))
    return out
