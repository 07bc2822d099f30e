"""Scores of one map against the ground-truth region G (docs/definitions.md), batched, on device.

Inputs shared by all functions:
- ``maps`` [B, H, W] float32: the min-max normalised, non-negative map at network-input resolution.
- ``empty`` [B] bool: the map was constant (peak-based scores are then NaN, never 0 or 1).
- ``gt_mask`` [B, H, W] bool: G, the union of the image's valid boxes (see ``masks.boxes_to_mask``:
  a pixel (y, x) belongs to a box iff its centre lies inside, ``x1 <= x + 0.5 < x2`` and
  ``y1 <= y + 0.5 < y2``, i.e. ``mask[y1:y2, x1:x2]`` for integer boxes).
Every per-image result is a [B] float32 tensor on the input's device with NaN where undefined;
hits are float 1.0 / 0.0 / NaN.  Sums are accumulated in float64.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "energy_in_box",
    "box_area_fraction",
    "energy_lift",
    "excess_energy",
    "pointing_game_hit",
    "peak_location",
    "relevance_rank_accuracy",
    "relevance_mass_accuracy",
]

_NAN = float("nan")


def _check(maps: torch.Tensor, gt_mask: torch.Tensor) -> torch.Tensor:
    if maps.dim() != 3:
        raise ValueError(f"maps must be [B, H, W], got {tuple(maps.shape)}")
    if gt_mask.shape != maps.shape:
        raise ValueError(f"gt_mask must have the maps' shape {tuple(maps.shape)}, got {tuple(gt_mask.shape)}")
    return gt_mask.to(device=maps.device, dtype=torch.bool)


def _mass_in_region(values: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """sum(V * G) / sum(V) per image; NaN where sum(V) == 0 or G is empty.  [B] float32."""
    total = values.sum(dim=(1, 2), dtype=torch.float64)
    inside = values.masked_fill(~gt, 0).sum(dim=(1, 2), dtype=torch.float64)
    has_g = gt.any(dim=2).any(dim=1)
    ok = (total != 0) & has_g
    share = inside / torch.where(ok, total, 1.0)
    return torch.where(ok, share, _NAN).to(torch.float32)


def energy_in_box(maps: torch.Tensor, gt_mask: torch.Tensor) -> torch.Tensor:
    """Energy in box (energy-based pointing game), Score-CAM, Wang et al. CVPRW 2020, sec. 4.3.

    ``E = sum(M * G) / sum(M)`` over the pixels of the non-negative map M, G the ground-truth region.
    NaN where ``sum(M) == 0`` (an all-zero, i.e. empty, map) or G is empty.

    Shapes: maps [B, H, W] float32, gt_mask [B, H, W] bool -> [B] float32.
    """
    return _mass_in_region(maps, _check(maps, gt_mask))


def box_area_fraction(gt_mask: torch.Tensor, domain: torch.Tensor | None = None) -> torch.Tensor:
    """Box area fraction ``sum(G) / (H * W)``: the energy in box of a uniform map.

    With ``domain`` (the image's own pixels when several images of different sizes share one canvas,
    see ``pipeline.maps.warp``) the denominator is ``sum(domain)`` instead of ``H * W``.
    NaN where G is empty.

    Shapes: gt_mask [B, H, W] bool, domain [B, H, W] bool or None -> [B] float32.
    """
    if gt_mask.dim() != 3:
        raise ValueError(f"gt_mask must be [B, H, W], got {tuple(gt_mask.shape)}")
    B, H, W = gt_mask.shape
    area = gt_mask.to(torch.bool).sum(dim=(1, 2), dtype=torch.float64)
    if domain is None:
        frac = area / float(H * W)
    else:
        frac = area / domain.to(device=gt_mask.device, dtype=torch.bool).sum(dim=(1, 2), dtype=torch.float64).clamp(
            min=1
        )
    return torch.where(area > 0, frac, _NAN).to(torch.float32)


def energy_lift(energy: torch.Tensor, area_fraction: torch.Tensor) -> torch.Tensor:
    """Energy lift ``energy_in_box / box_area_fraction`` (this project; 1.0 = no better than uniform).

    NaN where either input is NaN (area_fraction is NaN, never 0, when G is empty).

    Shapes: energy [B], area_fraction [B] -> [B] float32.
    """
    return (energy.to(torch.float32) / area_fraction.to(torch.float32)).to(torch.float32)


def excess_energy(energy: torch.Tensor, area_fraction: torch.Tensor) -> torch.Tensor:
    """Excess energy ``(E - A) / (1 - A)`` with E the energy in box and A the box area fraction (this
    project; the energy in box rescaled so that a uniform map scores 0 and a map with all its energy in
    the box scores 1, whatever the box's size; negative when the map avoids the box, down to
    ``-A / (1 - A)``).

    Unlike the energy lift ``E / A``, whose maximum is ``1 / A``, it is bounded by 1 for every box, so
    it can rank images and classes with boxes of different sizes. NaN where E or A is NaN, and where
    ``A = 1`` (the box covers the whole scored image: no map can do better or worse than uniform).
    Computed in float64.

    Shapes: energy [B], area_fraction [B] -> [B] float32.
    """
    e, a = energy.to(torch.float64), area_fraction.to(torch.float64)
    defined = a < 1.0  # False for NaN too
    return torch.where(defined, (e - a) / torch.where(defined, 1.0 - a, 1.0), _NAN).to(torch.float32)


# Peak x disk-row pairs looked up at once by the pointing game (bounds its temporary tensors to a few MB).
_PEAK_OFFSETS_PER_CHUNK = 1 << 18


def _disk_half_widths(tolerance: float, max_dy: int) -> list[tuple[int, int]]:
    """(dy, w) pairs: the integer offsets with ``dx**2 + dy**2 <= tolerance**2`` are |dx| <= w.

    Offsets with |dy| > max_dy (outside any image of that height) are left out."""
    t2 = float(tolerance) * float(tolerance)
    r = min(int(math.floor(tolerance)), max_dy)
    out = []
    for dy in range(-r, r + 1):
        rest = t2 - dy * dy
        if rest < 0:
            continue
        w = int(math.floor(math.sqrt(rest)))
        while (w + 1) * (w + 1) <= rest:
            w += 1
        while w > 0 and w * w > rest:
            w -= 1
        out.append((dy, w))
    return out


def pointing_game_hit(maps: torch.Tensor, empty: torch.Tensor, gt_mask: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Pointing game hit (Zhang et al. ECCV 2016; tolerance as in TorchRay benchmark/pointing_game.py).

    Hit (1.0) iff ANY pixel p attaining the per-image maximum of the map (all ties count) lies in G
    or within ``tolerance`` pixels of a G pixel q: ``|p - q|_2 <= tolerance`` with p, q integer
    (row, col) pixel indices, i.e. G dilated by a disk of radius ``tolerance`` (TorchRay: 15 px at the
    network input resolution).  ``tolerance = 0`` means inside G only.  Otherwise miss (0.0).  NaN
    where ``empty`` (constant map: no peak) or G is empty.

    Computation: the peak pixels are listed once (one ``nonzero``); for each disk row offset dy the
    half width w(dy) = max{w : w**2 + dy**2 <= tolerance**2} is exact integer arithmetic, and "some G
    pixel in row y+dy, columns x-w .. x+w" is read from per-row prefix sums of G.  Cost: one pass over
    the pixels plus one gather of (peaks x (2 * floor(tolerance) + 1)) entries.

    Shapes: maps [B, H, W] float32, empty [B] bool, gt_mask [B, H, W] bool -> [B] float32.
    """
    gt = _check(maps, gt_mask)
    if not (tolerance >= 0) or math.isinf(tolerance):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    B, H, W = maps.shape
    dev = maps.device
    empty = empty.to(device=dev, dtype=torch.bool)
    has_g = gt.any(dim=2).any(dim=1)
    defined = ~empty & has_g
    out = torch.where(defined, 0.0, _NAN).to(torch.float32)
    if maps.numel() == 0:
        return out
    peak = maps.amax(dim=(1, 2))
    is_peak = (maps == peak[:, None, None]) & defined[:, None, None]
    pb, py, px = torch.nonzero(is_peak).unbind(1)
    if pb.numel() == 0:
        return out
    # prefix[b, y, x] = number of G pixels in row y at columns < x.
    prefix = torch.zeros((B, H, W + 1), dtype=torch.int32, device=dev)
    prefix[:, :, 1:] = torch.cumsum(gt, dim=2, dtype=torch.int32)
    disk = torch.tensor(_disk_half_widths(tolerance, H - 1), dtype=torch.int64, device=dev)  # [D, 2] (dy, w)
    dy, w = disk[:, 0], disk[:, 1]
    hit = torch.zeros(pb.shape, dtype=torch.bool, device=dev)
    # All disk rows of a chunk of peaks in one gather ([P, D]), not one small op per row: the peak list is short
    # but may be long for a map with a plateau at its maximum, hence the chunks.
    chunk = max(1, _PEAK_OFFSETS_PER_CHUNK // len(disk))
    for start in range(0, pb.numel(), chunk):
        b_, y_, x_ = pb[start : start + chunk, None], py[start : start + chunk, None], px[start : start + chunk, None]
        yy = y_ + dy
        inside = (yy >= 0) & (yy < H)
        yy = yy.clamp(0, H - 1)
        lo = (x_ - w).clamp(min=0)
        hi = (x_ + w + 1).clamp(max=W)
        count = prefix[b_, yy, hi] - prefix[b_, yy, lo]
        hit[start : start + chunk] = (inside & (count > 0)).any(dim=1)
    per_image = torch.zeros(B, dtype=torch.float32, device=dev).scatter_reduce_(
        0, pb, hit.to(torch.float32), reduce="amax"
    )
    return torch.where(defined, per_image, _NAN)


def peak_location(maps: torch.Tensor) -> torch.Tensor:
    """(row, col) of the first maximum of each map in raster (row-major) order.

    Defined for every map (a constant map gives (0, 0)); mask it with ``empty`` where needed.

    Shapes: maps [B, H, W] -> [B, 2] long (row, col).
    """
    if maps.dim() != 3:
        raise ValueError(f"maps must be [B, H, W], got {tuple(maps.shape)}")
    B, H, W = maps.shape
    flat = torch.argmax(maps.reshape(B, H * W), dim=1)  # first occurrence of the maximum
    row = torch.div(flat, W, rounding_mode="floor")
    return torch.stack([row, flat - row * W], dim=1)


def _order_keys(values: torch.Tensor) -> torch.Tensor:
    """int32 keys that order like the float32 ``values`` and are equal exactly where the values are.

    IEEE-754 bits read as a signed integer order the non-negative floats; for negative floats the lower 31
    bits are flipped so that they order too (the standard radix-sort key). ``-0.0`` is first made ``+0.0``
    (they compare equal as floats). Shapes: any float32 -> same shape int32.
    """
    bits = (values.to(torch.float32) + 0.0).contiguous().view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


# Radix digits of a 32-bit key, most significant first: (shift, bits). The first digit is signed.
_DIGITS = ((21, 11), (10, 11), (0, 10))


def _kth_largest_key(keys: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k-th largest key of each row by radix selection (three histogram passes, no sort).

    Each pass counts the current digit of the keys that still share the selected higher digits
    (``bincount``, one bin range per row), and picks the digit at which the count from the top reaches the
    rank still wanted.

    Shapes: keys [B, N] int32, k [B] long with ``1 <= k <= N`` -> value [B] long (the key),
    ties [B, N] bool (``keys == value``), need [B] long (how many of the ties rank within the top k).
    """
    B = keys.shape[0]
    dev = keys.device
    ties = None
    value = torch.zeros(B, dtype=torch.int64, device=dev)
    remaining = k.to(torch.int64)
    for shift, bits in _DIGITS:
        bins = 1 << bits
        signed = shift + bits == 32
        digit = (keys >> shift) + (bins // 2) if signed else (keys >> shift) & (bins - 1)  # [B, N] in [0, bins)
        index = digit + (torch.arange(B, device=dev, dtype=torch.int32) * bins)[:, None]
        if ties is not None:
            index = torch.where(ties, index, B * bins)  # keys outside the selected prefix go to a spare bin
        counts = torch.bincount(index.reshape(-1), minlength=B * bins + 1)[: B * bins].view(B, bins)
        at_or_above = counts.flip(1).cumsum(1).flip(1)  # [B, bins]: keys with this digit or a larger one
        chosen = (at_or_above >= remaining[:, None]).sum(dim=1) - 1
        above = torch.cat([at_or_above[:, 1:], torch.zeros_like(at_or_above[:, :1])], dim=1).gather(1, chosen[:, None])[
            :, 0
        ]
        remaining = remaining - above
        value = value * bins + (chosen - bins // 2 if signed else chosen)
        same = digit == chosen[:, None].to(digit.dtype)
        ties = same if ties is None else ties & same
    assert ties is not None  # _DIGITS is not empty
    return value, ties, remaining


def relevance_rank_accuracy(
    maps: torch.Tensor, gt_mask: torch.Tensor, domain: torch.Tensor | None = None
) -> torch.Tensor:
    """Relevance rank accuracy (Arras et al. 2022; Quantus ``RelevanceRankAccuracy``).

    With ``K = sum(G)``: the share of the K highest-valued pixels of the map that lie in G,
    ``|top_K(M) n G| / K``.  Ties: pixels are ranked by a stable descending sort of the flattened
    (row-major) map, so among equal values the lower flat index ranks first.  NaN where the map is
    constant (empty: ``max == min``) or G is empty.  With ``domain`` only the domain's pixels are ranked
    (and tested for being constant): pixels outside it rank after every pixel inside.

    Computation (equal to the stable sort, without sorting): the K-th largest value v by radix selection
    on order-preserving integer keys; the top K are the pixels above v and the first ``K - #(M > v)``
    pixels equal to v in raster order (a running count of the ties).

    Shapes: maps [B, H, W] float32, gt_mask [B, H, W] bool, domain [B, H, W] bool or None -> [B] float32.
    """
    gt = _check(maps, gt_mask)
    B, H, W = maps.shape
    flat = maps.reshape(B, H * W)
    g = gt.reshape(B, H * W)
    k = g.sum(dim=1)
    if flat.shape[1] == 0:
        return torch.full((B,), _NAN, dtype=torch.float32, device=maps.device)
    if domain is None:
        constant = flat.amax(dim=1) == flat.amin(dim=1)
    else:
        inside = _check(maps, domain).reshape(B, H * W)
        constant = flat.masked_fill(~inside, -math.inf).amax(dim=1) == flat.masked_fill(~inside, math.inf).amin(dim=1)
        flat = flat.masked_fill(~inside, -math.inf)
    keys = _order_keys(flat)
    kth, ties, ties_taken = _kth_largest_key(keys, k.clamp(min=1))
    taken = ties & (torch.cumsum(ties, dim=1, dtype=torch.int32) <= ties_taken[:, None])
    top = (keys > kth.to(torch.int32)[:, None]) | taken
    hits = (top & g).sum(dim=1, dtype=torch.float64)
    ok = (k > 0) & ~constant
    share = hits / torch.where(ok, k, 1).to(torch.float64)
    return torch.where(ok, share, _NAN).to(torch.float32)


def relevance_mass_accuracy(raw_maps: torch.Tensor, gt_mask: torch.Tensor) -> torch.Tensor:
    """Relevance mass accuracy (Arras et al. 2022): energy in box without clipping.

    ``sum(R * G) / sum(R)`` on the raw map R (signed, pre-ReLU, un-normalised, upsampled to the
    network input).  With negative values the result can leave [0, 1].  NaN where ``sum(R) == 0`` or
    G is empty.

    Shapes: raw_maps [B, H, W] float32, gt_mask [B, H, W] bool -> [B] float32.
    """
    return _mass_in_region(raw_maps, _check(raw_maps, gt_mask))
