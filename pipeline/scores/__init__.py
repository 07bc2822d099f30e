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

from .components import best_box_iou, label_components, largest_component_box
from .localisation import (
    box_area_fraction,
    energy_in_box,
    energy_lift,
    excess_energy,
    peak_location,
    pointing_game_hit,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from .masks import box_pixel_indicators, boxes_to_mask
from .maxboxacc import MaxBoxAccV2
from .registry import SCORES, Score, ScoreInputs, score_columns, tau_key

__all__ = [
    "boxes_to_mask",
    "box_pixel_indicators",
    "energy_in_box",
    "box_area_fraction",
    "energy_lift",
    "excess_energy",
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
    "SCORES",
    "Score",
]


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

    Returns a dict of [B] float32 tensors, one per column of :func:`~pipeline.scores.registry.score_columns`
    (the registry :data:`~pipeline.scores.registry.SCORES` says what each one is), NaN where undefined:
    every box-based score is NaN for an image without a valid box, every peak/threshold-based score NaN
    for an empty map. Per tau t in ``taus`` the columns carry ``tau_key(t)`` (e.g. ``iou_tau015``):
    the IoU of the largest-component box at ``maps >= t * max`` with the best-matching valid GT box,
    ``localised`` (``iou >= iou_threshold``, compared in float64) and that box (pixel-edge).
    """
    if maps.dim() != 3:
        raise ValueError(f"maps must be [B, H, W], got {tuple(maps.shape)}")
    B, H, W = maps.shape
    dev = maps.device
    empty = empty.to(device=dev, dtype=torch.bool)
    boxes = boxes.to(dev)
    box_valid = box_valid.to(device=dev, dtype=torch.bool)
    columns = score_columns(taus)  # checks the taus give distinct keys
    gt = boxes_to_mask(boxes, box_valid, H, W)
    if domain is not None:
        domain = domain.to(device=dev, dtype=torch.bool)
        gt = gt & domain
    # Thresholds compare with ">=": -inf outside the domain keeps those pixels out even at tau = 0.
    thresholded = maps if domain is None else maps.masked_fill(~domain, float("-inf"))
    inputs = ScoreInputs(
        maps, raw_maps.to(dev), empty, boxes, box_valid, gt, domain, thresholded, tolerance, iou_threshold
    )
    return {column: score.function(inputs, tau) for column, score, tau in columns}
