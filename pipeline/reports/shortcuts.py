"""The shortcut finder: predicted classes whose maps peak off the object more often than the other classes'.

**Rule.** Over the images whose predicted-class map has a defined pointing-game result (a box in the
input, a non-empty map: ``pred_pointing_hit`` is 0 or 1), for every predicted class c with at least
``min_images`` such images:

- per image, ``off_peak = 1 - pred_pointing_hit``: 1 when the map's maximum lies farther than the pointing
  tolerance (``scores.tolerance``, 15 input pixels) from every box, i.e. the strongest evidence for the
  predicted class is off the object;
- effect ``d_c = mean(off_peak | predicted == c) - mean(off_peak | predicted != c)``: how much more often
  c's maps peak off the object than the other predicted classes' maps;
- one-sided permutation p-value: the predicted labels are shuffled over the images ``permutations``
  times (one shared set of shuffles for all classes, seeded); ``p_c = (1 + #{shuffles with
  d_c >= observed d_c}) / (1 + permutations)``;
- Holm's step-down correction over the tested classes;
- c is **flagged** when its Holm-adjusted p-value is at most ``alpha`` **and** ``d_c >= min_effect``.

Why the peak and not the excess energy ``X = (E - A) / (1 - A)`` (the rule before issue 10's fix): how far
a class's maps spread around its object is a property of the class (thin or pointed shapes, a low-resolution
layer), so comparing excess energies across classes flags a class whose maps spill around its own object.
Measured on the built-in generator with the marker switched off (tests/reports/test_shortcuts_no_marker.py):
``triangle``'s maps have excess energy 0.12 against 0.45 for the other classes (the old rule flagged it, p
0.0008), yet 87.5 % of them peak on the object (tolerance 15 px), close to the others' 99.5 %; with the marker
(the default) 46 % of ``triangle``'s maps peak off the object (67 % on marked images, 6 % on unmarked). Spill
around the object moves energy, not the peak; an off-object cue the model uses for c (a marker, a
watermark, a background) takes the peak. A class whose maps do peak off its objects without a planted cue
(a class recognised by its context) is flagged too: that is what the finder is for, and the hot spot and
example images show the context.

False-alarm rate: when the predicted class carries no information about whether the maps peak off the
object (the ``off_peak`` values are exchangeable across predicted classes), the chance that *any* class is
flagged is at most ``alpha`` (Holm controls the family-wise error rate; a permutation p-value of this form
is valid at every sample size, for 0/1 values too). ``min_effect`` only removes flags, so it cannot raise
that rate; it keeps a large audit from flagging a difference too small to matter (measured: 0.46 for the
default's ``triangle``, at most 0.12 for any class of the model trained without the marker).

With more tested classes than the shuffles can resolve (``classes / (permutations + 1) > alpha / 5``),
the p-values come from the normal approximation of the same permutation distribution (finite-population
variance), recorded as ``p_value_method``.

**Hot spot.** For each flagged class, the off-box energy grids of its images (``pred_off_box_grid``,
:func:`pipeline.scores.offbox.off_box_energy_grid`, network-input coordinates normalised to [0, 1)) are
added up; the 3 x 3-cell window holding the largest share of that energy is the hot spot: its centre
(x right, y down, in [0, 1]), its share of the class's off-box energy (against ``9 / grid**2`` for energy
spread evenly), the share of the class's images whose own off-box peak lies in that window, the example
images whose maps peak off the object and sit least on it (with their own off-box peaks), and a picture
(the summed off-box energy over the class's mean network input, the window outlined, a colour bar).

**Is the hot spot a fixed place?** A window always holds *some* largest share, also when every image's
off-box energy sits somewhere else (a marker drawn at a random place per image). The test keeps each
image's own off-box map as it is and destroys only where the images agree: every image's grid is shifted
by its own random cyclic offset (rows and columns), the shifted grids are added up, and the largest 3 x 3
window share of that sum is one draw of the null distribution ("the class's off-box evidence has no common
location"). ``p = (1 + #{shifts with share >= observed}) / (1 + hot_spot_shifts)`` (one-sided, seeded;
at most ``hot_spot_max_images`` of the class's images, a seeded sample, enter the test). The hot spot is
``significant`` when ``p <= alpha``; otherwise the summary and page say the off-object evidence has no
fixed location and point at the per-image off-box peaks (the examples and each overlay's cross).

**Collapse.** When one predicted class takes at least ``collapse_share`` of the images while it is the
true class of fewer than half as many, the summary carries a warning: per-class numbers (and this test)
then say little about the model.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.settings import ShortcutSettings

GRID_COLUMN = "pred_off_box_grid"
HIT_COLUMN = "pred_pointing_hit"


def rule_text(settings: ShortcutSettings) -> str:
    """The finder's rule in one sentence, with its settings (for the summary and the page)."""
    return (
        "a predicted class is flagged when the share of its maps whose peak lies off every box (pointing-game miss) "
        f"is at least {settings.min_effect:g} above the other predicted classes' and a one-sided permutation test "
        f"({settings.permutations} shuffles of the predicted labels) gives a Holm-adjusted p-value of at most "
        f"{settings.alpha:g} (classes with at least {settings.min_images} images with a box): at most a "
        f"{100 * settings.alpha:g}% chance of any false flag when the predicted class says nothing about whether "
        "the maps peak off the object"
    )


def off_object_peaks(frame: pd.DataFrame) -> np.ndarray:
    """``[N]`` float64: 1 where the predicted-class map peaks off every box (``pred_pointing_hit`` 0), 0 where
    it peaks on one, NaN where the pointing game is undefined (no box in the input, empty map)."""
    hits = pd.to_numeric(frame[HIT_COLUMN], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return 1.0 - hits


def permutation_test(
    values: np.ndarray, groups: np.ndarray, n_groups: int, permutations: int, rng: np.random.Generator, chunk: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Effect ``mean(others) - mean(group)`` and its one-sided permutation p-value, for every group.

    values ``[N]`` float64, groups ``[N]`` int in ``[0, n_groups)``. The same shuffles serve every group.
    Returns effect ``[n_groups]`` and p ``[n_groups]`` (NaN for a group with no member or all members).
    """
    n = len(values)
    counts = np.bincount(groups, minlength=n_groups).astype(np.float64)
    total = values.sum()

    def effects(sums: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (total - sums) / (n - counts) - sums / counts

    observed = effects(np.bincount(groups, weights=values, minlength=n_groups))
    at_least = np.zeros(n_groups)
    done = 0
    while done < permutations:
        size = min(chunk, permutations - done)
        shuffled = rng.permuted(np.broadcast_to(groups, (size, n)), axis=1)  # [size, N]
        offsets = (np.arange(size) * n_groups)[:, None]
        sums = np.bincount(
            (shuffled + offsets).ravel(), weights=np.broadcast_to(values, (size, n)).ravel(), minlength=size * n_groups
        ).reshape(size, n_groups)
        at_least += (effects(sums) >= observed[None, :] - 1e-12).sum(axis=0)
        done += size
    p = (1.0 + at_least) / (1.0 + permutations)
    undefined = (counts == 0) | (counts == n)
    return observed, np.where(undefined, np.nan, p)


def normal_permutation_pvalues(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """One-sided p-values of the same test from the normal approximation of the permutation distribution.

    Under shuffling, the mean of a group of ``n`` of the ``N`` values has expectation ``mu`` (the overall
    mean) and variance ``s**2 / n * (N - n) / (N - 1)`` (sampling without replacement, ``s**2`` the
    population variance); ``p = Phi((mean_group - mu) / sd)``. Used when there are too many classes for
    the shuffles to resolve the Holm threshold (``p`` can be as small as needed). ``[n_groups]``.
    """
    n = len(values)
    counts = np.bincount(groups, minlength=n_groups).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.bincount(groups, weights=values, minlength=n_groups) / counts
        sd = np.sqrt(values.var() / counts * (n - counts) / max(n - 1, 1))
        z = (means - values.mean()) / sd
    p = np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) if np.isfinite(v) else np.nan for v in z])
    return np.where((counts == 0) | (counts == n), np.nan, p)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979): sorted ascending, ``p_(i) * (m - i)`` made
    non-decreasing, capped at 1. ``[m]`` -> ``[m]``."""
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def hot_spot(grids: np.ndarray, window: int = 3) -> dict:
    """The ``window x window``-cell square holding the largest share of the summed ``grids`` ``[N, G, G]``.

    Returns its centre ``x``, ``y`` (normalised, x right, y down), ``share`` of the total off-box energy,
    ``uniform_share`` (``window**2 / G**2``), ``cells`` (row0, col0, row1, col1 exclusive) and ``share_map``
    (``[G, G]`` the summed grid divided by its total).
    """
    summed = grids.sum(axis=0)
    size = summed.shape[0]
    total = summed.sum()
    share_map = summed / total if total > 0 else summed
    w = min(window, size)
    padded = np.pad(share_map, ((1, 0), (1, 0))).cumsum(axis=0).cumsum(axis=1)
    sums = padded[w:, w:] - padded[:-w, w:] - padded[w:, :-w] + padded[:-w, :-w]  # [G-w+1, G-w+1]
    row, col = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return {
        "x": (col + w / 2) / size,
        "y": (row + w / 2) / size,
        "share": float(sums[row, col]),
        "uniform_share": w * w / (size * size),
        "cells": [int(row), int(col), int(row + w), int(col + w)],
        "share_map": share_map,
    }


def max_window_share(summed: np.ndarray, window: int = 3) -> np.ndarray:
    """The largest ``window x window`` share of each summed grid ``[..., G, G]`` (sums normalised by their
    totals; a zero grid gives 0). Returns ``[...]``."""
    size = summed.shape[-1]
    w = min(window, size)
    total = summed.sum(axis=(-2, -1))
    padded = np.pad(summed, [(0, 0)] * (summed.ndim - 2) + [(1, 0), (1, 0)]).cumsum(axis=-2).cumsum(axis=-1)
    sums = padded[..., w:, w:] - padded[..., :-w, w:] - padded[..., w:, :-w] + padded[..., :-w, :-w]
    best = sums.reshape(*sums.shape[:-2], -1).max(axis=-1)
    return np.where(total > 0, best / np.where(total > 0, total, 1.0), 0.0)


def hot_spot_test(
    grids: np.ndarray, shifts: int, rng: np.random.Generator, window: int = 3, chunk: int = 64
) -> tuple[float, float, float]:
    """Whether the summed off-box grids ``[N, G, G]`` concentrate in one window more than grids whose
    locations do not agree (see the module docstring, "Is the hot spot a fixed place?").

    Returns ``(observed share, mean share under the null, one-sided p-value)``. Each null draw shifts every
    image's grid by an independent uniform cyclic offset ``(dy, dx)`` in ``[0, G)^2`` and adds them up."""
    n, size, _ = grids.shape
    observed = float(max_window_share(grids.sum(axis=0), window))
    rows = np.arange(size)
    null = []
    done = 0
    while done < shifts:
        k = min(chunk, shifts - done)
        dy = rng.integers(0, size, size=(k, n))
        dx = rng.integers(0, size, size=(k, n))
        r = (rows[None, None, :] - dy[..., None]) % size  # [k, N, G]
        c = (rows[None, None, :] - dx[..., None]) % size
        shifted = grids[np.arange(n)[None, :, None, None], r[..., :, None], c[..., None, :]]  # [k, N, G, G]
        null.append(max_window_share(shifted.sum(axis=1), window))
        done += k
    draws = np.concatenate(null) if null else np.zeros(0)
    p = (1.0 + float((draws >= observed - 1e-12).sum())) / (1.0 + len(draws))
    return observed, float(draws.mean()) if len(draws) else float("nan"), p


def image_peaks(grids: np.ndarray) -> np.ndarray:
    """``[N, 2]`` (row, col) of each image's largest off-box cell."""
    flat = grids.reshape(len(grids), -1).argmax(axis=1)
    return np.stack(np.unravel_index(flat, grids.shape[1:]), axis=1)


def collapse_warning(frame: pd.DataFrame, settings: ShortcutSettings) -> dict | None:
    """A warning when one predicted class takes most of the images without being that common a true class."""
    if not len(frame):
        return None
    predicted = frame["pred_name"].value_counts()
    name, count = predicted.index[0], int(predicted.iloc[0])
    share = count / len(frame)
    true_share = float((frame["label_name"] == name).mean())
    if share < settings.collapse_share or true_share * 2 > share:
        return None
    return {
        "pred_name": str(name),
        "share": share,
        "true_share": true_share,
        "images": count,
        "message": f"{100 * share:.0f}% of the images are predicted as {name!r}, which is the true class of "
        f"{100 * true_share:.0f}%: the model's predictions have collapsed; per-class numbers say little",
    }


def find_shortcuts(frame: pd.DataFrame, settings: ShortcutSettings) -> dict:
    """Run the finder on ``samples.parquet`` rows; returns the summary's ``shortcuts`` section (see module doc).

    ``classes``: one entry per tested predicted class, flagged first then by effect (its share of maps
    peaking off the object, the other classes' share, their difference ``effect``, the p-values, and the
    mean excess energies for context); ``flagged``: their names; the flagged entries carry ``hot_spot``
    when the rows hold ``pred_off_box_grid``.
    """
    out = {
        "rule": rule_text(settings),
        "settings": asdict(settings),
        "tested": 0,
        "flagged": [],
        "classes": [],
        "collapse": collapse_warning(frame, settings),
    }
    if not len(frame) or HIT_COLUMN not in frame.columns:
        return out
    off_peak = off_object_peaks(frame)
    usable = np.isfinite(off_peak)
    names = frame.loc[usable, "pred_name"].astype(str).to_numpy()
    on_object = 1.0 - off_peak[usable]  # the tests below take mean(others) - mean(class): d_c of the module doc
    labels, groups = np.unique(names, return_inverse=True)
    counts = np.bincount(groups, minlength=len(labels))
    tested = counts >= settings.min_images
    if tested.sum() < 2:  # nothing to compare a class with
        return out
    if int(tested.sum()) / (settings.permutations + 1) <= settings.alpha / 5:
        method = "permutation"
        effect, p = permutation_test(
            on_object, groups, len(labels), settings.permutations, np.random.default_rng(settings.seed)
        )
    else:
        # The smallest permutation p-value times the number of classes would come close to alpha: the
        # shuffles cannot resolve the Holm threshold, so use their normal approximation.
        method = "normal approximation of the permutation distribution"
        effect, _ = permutation_test(on_object, groups, len(labels), 0, np.random.default_rng(settings.seed))
        p = normal_permutation_pvalues(on_object, groups, len(labels))
    out["p_value_method"] = method
    adjusted = np.full(len(labels), np.nan)
    adjusted[tested] = holm(p[tested])
    rows = frame.loc[usable]
    excess = pd.to_numeric(rows["pred_excess_energy"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    entries = []
    for index in np.flatnonzero(tested):
        flagged = bool(adjusted[index] <= settings.alpha and effect[index] >= settings.min_effect)
        members = groups == index
        entry: dict[str, Any] = {
            "pred_name": str(labels[index]),
            "images": int(counts[index]),
            "off_object_peak_share": float(1.0 - on_object[members].mean()),
            "others_off_object_peak_share": float(1.0 - on_object[~members].mean()),
            "mean_excess_energy": _nan_mean(excess[members]),
            "others_mean_excess_energy": _nan_mean(excess[~members]),
            "effect": float(effect[index]),
            "p_value": float(p[index]),
            "p_holm": float(adjusted[index]),
            "flagged": flagged,
        }
        if flagged and GRID_COLUMN in rows.columns:
            entry["hot_spot"] = _class_hot_spot(rows[members], settings)
        entries.append(entry)
    entries.sort(key=lambda e: (not e["flagged"], -e["effect"]))
    out.update(tested=len(entries), classes=entries, flagged=[e["pred_name"] for e in entries if e["flagged"]])
    return out


def _nan_mean(values: np.ndarray) -> float:
    """Mean of the finite values; NaN when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def _class_hot_spot(rows: pd.DataFrame, settings: ShortcutSettings, examples: int = 4) -> dict:
    grids = np.stack(rows[GRID_COLUMN].to_numpy()).astype(np.float64)
    size = int(round(np.sqrt(grids.shape[1])))
    grids = grids.reshape(len(grids), size, size)
    spot = hot_spot(grids)
    r0, c0, r1, c1 = spot["cells"]
    peaks = image_peaks(grids)
    inside = (peaks[:, 0] >= r0) & (peaks[:, 0] < r1) & (peaks[:, 1] >= c0) & (peaks[:, 1] < c1)
    # examples: maps peaking off the object first, then the least excess energy (NaN last)
    excess = pd.to_numeric(rows["pred_excess_energy"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    order = np.lexsort((np.nan_to_num(excess, nan=np.inf), -off_object_peaks(rows)))[:examples]
    rng = np.random.default_rng(settings.seed)
    tested = grids
    if len(grids) > settings.hot_spot_max_images:
        tested = grids[np.sort(rng.choice(len(grids), settings.hot_spot_max_images, replace=False))]
    _, null_share, p = hot_spot_test(tested, settings.hot_spot_shifts, rng)
    significant = bool(p <= settings.alpha)
    spot.update(
        significant=significant,
        p_value=p,
        null_share=null_share,
        test=f"cyclic shifts of each image's off-box grid ({settings.hot_spot_shifts} draws, "
        f"{len(tested)} images): share {spot['share']:.3f} against {null_share:.3f} when the images' locations do not agree",
        verdict=(
            f"fixed location at x={spot['x']:.2f}, y={spot['y']:.2f} (p {p:.3g})"
            if significant
            else "no fixed location: the off-object evidence moves from image to image; see each image's "
            f"off-box peak (the examples, the cross on each overlay) (p {p:.3g})"
        ),
        images_peaking_there=float(inside.mean()),
        examples=[
            {
                "id": str(rows["id"].iloc[i]),
                "excess_energy": float(excess[i]),
                "off_box_peak_x": (peaks[i, 1] + 0.5) / size,
                "off_box_peak_y": (peaks[i, 0] + 0.5) / size,
            }
            for i in order
        ],
    )
    return spot


def hot_spot_picture(
    share_map: np.ndarray, cells: list[int], backdrop: np.ndarray | None, side: int = 320
) -> np.ndarray:
    """The class's summed off-box energy ``share_map`` ``[G, G]`` (shares of the total) over ``backdrop``
    (``[H, W, 3]`` uint8 RGB, the class's mean network input; grey when None), the hot-spot window ``cells``
    (row0, col0, row1, col1 exclusive) outlined, and a colour bar from 0 to the largest cell's share.
    Returns ``[side + 24, side + 70, 3]`` uint8 BGR (for ``cv2.imwrite``)."""
    import cv2

    peak = float(share_map.max())
    scaled = np.zeros_like(share_map) if peak <= 0 else share_map / peak
    heat = cv2.applyColorMap(np.round(255 * scaled).astype(np.uint8), cv2.COLORMAP_INFERNO)
    heat = cv2.resize(heat, (side, side), interpolation=cv2.INTER_NEAREST)
    base: np.ndarray
    if backdrop is None:
        base = np.full((side, side, 3), 128, np.uint8)
    else:
        base = cv2.resize(np.ascontiguousarray(backdrop[..., ::-1]), (side, side), interpolation=cv2.INTER_AREA)
    weight = cv2.resize(scaled, (side, side), interpolation=cv2.INTER_NEAREST)[..., None]
    alpha = 0.25 + 0.6 * weight  # the backdrop shows through where there is little off-box energy
    picture = np.round(base * (1 - alpha) + heat * alpha).astype(np.uint8)
    r0, c0, r1, c1 = cells
    cell = side / share_map.shape[0]
    cv2.rectangle(picture, (int(c0 * cell), int(r0 * cell)), (int(c1 * cell) - 1, int(r1 * cell) - 1), (255, 255, 0), 2)
    canvas = np.full((side + 24, side + 70, 3), 255, np.uint8)
    canvas[:side, :side] = picture
    bar = cv2.applyColorMap(
        np.linspace(255, 0, side).astype(np.uint8)[:, None].repeat(14, axis=1), cv2.COLORMAP_INFERNO
    )
    canvas[:side, side + 8 : side + 22] = bar
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(canvas, f"{100 * peak:.1f}%", (side + 24, 12), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, "0", (side + 24, side - 2), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(
        canvas,
        "cell share of off-box energy; box: hot-spot window",
        (2, side + 16),
        font,
        0.4,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    return canvas


def write_hot_spot_pictures(shortcuts: dict, out_dir: Path, backdrops: dict[str, np.ndarray] | None = None) -> None:
    """One PNG per flagged class (``<out_dir>/<class stem>.png``, :func:`hot_spot_picture`) over its
    ``backdrops[pred_name]`` when given; sets ``hot_spot.picture`` (relative to the run folder) and drops the
    raw share map."""
    import cv2

    from pipeline.reports.overlays import safe_file_stem

    for entry in shortcuts.get("classes", []):
        spot = entry.get("hot_spot")
        if not spot:
            continue
        share_map = np.asarray(spot.pop("share_map"), dtype=np.float64)
        image = hot_spot_picture(share_map, spot["cells"], (backdrops or {}).get(entry["pred_name"]))
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{safe_file_stem(entry['pred_name'])}.png"
        cv2.imwrite(str(path), image)
        spot["picture"] = f"{out_dir.name}/{path.name}"
