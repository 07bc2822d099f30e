"""Score each distinct map once: an image's predicted-class and true-class maps are the same map when the
prediction is right (and a top-k map may repeat one of them), so only the first map of each
(image, class) pair is scored and its scores are copied to the others.

The maps of a batch are scored as one flat batch in map-major order: flat index ``k * B + b`` is map ``k``
of image ``b`` (``maps.transpose(0, 1).reshape(-1, H, W)`` of ``[B, K, H, W]``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def distinct_maps(targets: Tensor) -> tuple[Tensor, Tensor]:
    """Which maps of a batch to score, and where every map's scores come from.

    Args:
        targets: ``[B, K]`` long, the class of map ``k`` of image ``b`` (pred, true, top2.. as the run orders them).
    Returns:
        distinct: ``[U]`` long, flat indices (``k * B + b``) of the first map of each (image, class) pair, in
            increasing order; ``U = K * B`` when no class repeats within an image.
        copy_of: ``[K * B]`` long, for each flat map the position in ``distinct`` of the map it equals
            (its own position when it is the first).
    """
    batch, k_maps = targets.shape
    same = targets[:, :, None] == targets[:, None, :]  # [B, K, K]: map k and map j share their class
    first = same.int().argmax(dim=2)  # [B, K]: the first j with the same class (j = k when none earlier)
    is_first = first == torch.arange(k_maps, device=targets.device)  # [B, K]
    keep = is_first.transpose(0, 1).reshape(-1)  # [K * B] flat order
    distinct = keep.nonzero().squeeze(1)
    position = keep.long().cumsum(0) - 1  # [K * B]: position in `distinct` of each kept map
    images = torch.arange(batch, device=targets.device)
    source = (first * batch + images[:, None]).transpose(0, 1).reshape(-1)  # [K * B] flat index of the first copy
    return distinct, position[source]
