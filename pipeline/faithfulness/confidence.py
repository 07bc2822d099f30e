"""Average drop and increase in confidence (Chattopadhay et al. 2018, *Grad-CAM++*, arXiv 1710.11063,
section 5.1): how much of the class's probability survives when the input keeps only what the map shows.

With ``x`` the normalised network input, ``E`` the map upsampled to the input and normalised to ``[0, 1]``
(the run's ``UpsampledMaps.normalised``), ``Y`` the softmax probability of the map's class on ``x`` and ``O``
the same on ``x * E`` (the product taken on the normalised input, as TorchCAM's ``ClassificationMetric``):

- drop = ``max(0, Y - O) / Y`` per image; its mean over images is the paper's *average drop* (lower is
  better: the map keeps what the class needs);
- increase = ``O > Y`` per image; its share of images is the paper's *increase in confidence* (higher is
  better).
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_inputs(images: Tensor, maps: Tensor) -> Tensor:
    """``x * E``: each image multiplied by its map, the same weight on every channel.

    Args:
        images: ``[N, 3, H, W]`` normalised inputs (any memory format; the result keeps it).
        maps: ``[N, H, W]`` in ``[0, 1]``.
    Returns:
        ``[N, 3, H, W]``.
    """
    return images * maps[:, None].to(images.dtype)


def confidence_change(before: Tensor, after: Tensor) -> tuple[Tensor, Tensor]:
    """Per image, the drop ``max(0, Y - O) / Y`` and the increase ``O > Y``.

    Args:
        before: ``[N]`` ``Y``, the class's softmax probability on the input.
        after: ``[N]`` ``O``, on the masked input.
    Returns:
        ``(drop [N] float32, increase [N] bool)``; the drop is NaN where ``Y`` is 0 (a probability that
        underflowed: no share of it can be lost). The paper's formula, with no constant added to the
        denominator (TorchCAM adds 1e-7, which matters only for ``Y`` below about 1e-5).
    """
    before, after = before.float(), after.float()
    drop = (before - after).clamp(min=0) / torch.where(before > 0, before, torch.ones_like(before))
    return torch.where(before > 0, drop, torch.full_like(drop, float("nan"))), after > before
