"""Batched, on-device scores of class activation maps against ground-truth boxes.

Every function takes and returns tensors on the input's device (CPU or CUDA), with no Python loop
over images; per-image results are [B] float32 with NaN where undefined.  Definitions and sources:
docs/definitions.md.  Box convention: ``(x1, y1, x2, y2)`` pixel-edge, a pixel (row y, col x) is in
a box iff ``x1 <= x + 0.5 < x2`` and ``y1 <= y + 0.5 < y2`` (``mask[y1:y2, x1:x2]`` for integer
boxes); the ground-truth region G is the union of the valid boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .components import _best_box_iou64, best_box_iou, label_components, largest_component_box
from .localisation import (
    box_area_fraction,
    energy_in_box,
    energy_lift,
    peak_location,
    pointing_game_hit,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from .masks import box_pixel_indicators, boxes_to_mask
from .maxboxacc import MaxBoxAccV2

__all__ = [
    "boxes_to_mask",
    "box_pixel_indicators",
    "energy_in_box",
    "box_area_fraction",
    "energy_lift",
    "pointing_game_hit",
    "peak_location",
    "relevance_rank_accuracy",
    "relevance_mass_accuracy",
    "label_components",
    "largest_component_box",
    "best_box_iou",
    "MaxBoxAccV2",
    "score_map",
    "tau_key",
]


def tau_key(tau: float) -> str:
    """Suffix used in :func:`score_map` keys for a threshold: 0.15 -> ``tau015``."""
    return f"tau{int(round(tau * 100)):03d}"


@torch.no_grad()
def score_map(
    maps: torch.Tensor,
    raw_maps: torch.Tensor,
    empty: torch.Tensor,
    boxes: torch.Tensor,
    box_valid: torch.Tensor,
    tolerance: float = 15.0,
    taus: Sequence[float] = (0.15,),
    iou_threshold: float = 0.5,
    domain: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """All per-image scores of one batch of maps against its boxes (G computed once).

    Inputs: maps [B, H, W] float32 (min-max normalised, non-negative), raw_maps [B, H, W] float32
    (signed, un-normalised, upsampled; for relevance mass accuracy), empty [B] bool (constant map),
    boxes [B, N, 4] float (x1, y1, x2, y2) pixel-edge in the maps' grid, box_valid [B, N] bool,
    domain [B, H, W] bool or None: where each map is defined (``scores.space=original``: the part of
    the stored image the network saw, on a canvas shared by images of different sizes); maps must be 0
    outside it. G is then cut to the domain for the pixel scores (the box area fraction is relative to
    the domain, relevance rank accuracy ranks only its pixels), no thresholded box takes a pixel
    outside it, and IoU is still taken with the boxes as given.

    Returns a dict of [B] float32 tensors (NaN where undefined; every box-based score is NaN for an
    image without a valid box, every peak/threshold-based score NaN for an empty map):
    - ``energy_in_box``, ``box_area_fraction``, ``energy_lift``: see localisation.py;
    - ``pointing_hit``: pointing game hit with ``tolerance`` pixels, 1.0 / 0.0 / NaN;
    - ``relevance_rank_accuracy``; ``relevance_mass_accuracy`` (on raw_maps);
    - ``peak_row``, ``peak_col``: first maximum in raster order, NaN where empty;
    - for each tau t in ``taus``, with ``k = tau_key(t)`` (e.g. ``tau015``): ``iou_k`` (IoU of the
      largest-component box at ``maps >= t * max`` with the best-matching valid GT box),
      ``localised_k`` (``iou >= iou_threshold``, compared in float64; 1.0 / 0.0 / NaN), and the box
      ``box_x1_k``, ``box_y1_k``, ``box_x2_k``, ``box_y2_k`` (pixel-edge, NaN where empty).
    """
    if maps.dim() != 3:
        raise ValueError(f"maps must be [B, H, W], got {tuple(maps.shape)}")
    B, H, W = maps.shape
    dev = maps.device
    empty = empty.to(device=dev, dtype=torch.bool)
    boxes = boxes.to(dev)
    box_valid = box_valid.to(device=dev, dtype=torch.bool)
    keys = [tau_key(t) for t in taus]
    if len(set(keys)) != len(keys):
        raise ValueError(f"taus {list(taus)} give duplicate keys {keys}")
    gt = boxes_to_mask(boxes, box_valid, H, W)
    nan = float("nan")
    if domain is not None:
        domain = domain.to(device=dev, dtype=torch.bool)
        gt = gt & domain
    # Thresholds compare with ">=": -inf outside the domain keeps those pixels out even at tau = 0.
    thresholded = maps if domain is None else maps.masked_fill(~domain, float("-inf"))

    out: dict[str, torch.Tensor] = {}
    out["energy_in_box"] = energy_in_box(maps, gt)
    out["box_area_fraction"] = box_area_fraction(gt, domain)
    out["energy_lift"] = energy_lift(out["energy_in_box"], out["box_area_fraction"])
    out["pointing_hit"] = pointing_game_hit(maps, empty, gt, tolerance)
    out["relevance_rank_accuracy"] = relevance_rank_accuracy(maps, gt, domain)
    out["relevance_mass_accuracy"] = relevance_mass_accuracy(raw_maps.to(dev), gt)
    peak = peak_location(maps).to(torch.float32)
    out["peak_row"] = torch.where(empty, nan, peak[:, 0])
    out["peak_col"] = torch.where(empty, nan, peak[:, 1])
    for t in taus:
        k = tau_key(t)
        box = largest_component_box(thresholded, empty, t)
        iou64 = _best_box_iou64(box, boxes, box_valid)
        out[f"iou_{k}"] = iou64.to(torch.float32)
        out[f"localised_{k}"] = torch.where(
            torch.isnan(iou64), nan, (iou64 >= iou_threshold).to(torch.float64)
        ).to(torch.float32)
        for j, name in enumerate(("x1", "y1", "x2", "y2")):
            out[f"box_{name}_{k}"] = box[:, j]
    return out
