"""MaxBoxAccV2 (Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right",
CVPR 2020; reference code clovaai/wsolevaluation, ``BoxEvaluator`` with ``multi_contour_eval`` and
``multi_iou_eval``), batched and on device.  Written for this project from the published procedure.

Two steps, so that a run can be resumed and re-aggregated exactly: :meth:`MaxBoxAccV2.best_iou_per_threshold`
computes each image's state on the device (the best IoU per threshold, stored per sample), and
:func:`maxboxacc_from_best_iou` aggregates those rows into the dataset's score (the one aggregation, used by
the run's summary, the tests and the benchmarks).
"""

from __future__ import annotations

import numpy as np
import torch

from .components import (
    _background_runs,
    _component_stats,
    _foreground_runs,
    _pairwise_iou64,
    _with_roots,
)

__all__ = ["MaxBoxAccV2", "boxacc_per_threshold", "maxboxacc_from_best_iou"]


def _candidate_boxes(binary: torch.Tensor, include_holes: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """All candidate boxes of a batch of binary images (see :class:`MaxBoxAccV2`).

    The bounding box of every 8-connected component and, with ``include_holes``, of every hole's
    contour.  Shapes: binary [B, H, W] bool -> (image [C] long, boxes [C, 4] long, pixel-edge
    (x1, y1, x2, y2)).
    """
    B, H, W = binary.shape
    row, x0, x1 = _foreground_runs(binary)
    runs = _with_roots(row, x0, x1, H, W, connectivity=8)
    st = _component_stats(runs, H, W)
    image = [st.image]
    cand = [st.is_root]
    box = [torch.stack([st.x1, st.y1, st.x2, st.y2], dim=1)]
    if include_holes and row.numel():
        # Holes: 4-connected components of the background that do not touch the image border
        # (OpenCV pads the image with background, so those are connected to the outside).  Only
        # images with a hole are processed: per image, holes = components - runs + links (Euler
        # number of the run graph), read off the foreground union-find for free.
        comps = torch.bincount(st.image[st.is_root], minlength=B)
        runs_per_image = torch.bincount(st.image, minlength=B)
        links = torch.zeros(B, dtype=torch.long, device=row.device).scatter_add_(0, st.image, runs.links)
        with_hole = (comps - runs_per_image + links) > 0
        if bool(with_hole.any()):
            sel = with_hole[st.image]
            row_mask = with_hole.repeat_interleave(H)
            brow, bx0, bx1 = _background_runs(row[sel], x0[sel], x1[sel], B * H, W, row_mask)
            bruns = _with_roots(brow, bx0, bx1, H, W, connectivity=4)
            bst = _component_stats(bruns, H, W)
            by = brow - bst.image * H
            edge = ((by == 0) | (by == H - 1) | (bx0 == 0) | (bx1 == W - 1)).to(torch.long)
            touches = torch.zeros_like(edge).scatter_reduce_(0, bruns.root, edge, reduce="amax")
            image.append(bst.image)
            cand.append(bst.is_root & (touches == 0))
            # A hole's contour runs over the foreground pixels around it: its pixel box grown by one.
            box.append(torch.stack([bst.x1 - 1, bst.y1 - 1, bst.x2 + 1, bst.y2 + 1], dim=1))
    keep = torch.nonzero(torch.cat(cand)).squeeze(1)  # the components / holes (one sync)
    return torch.cat(image)[keep], torch.cat(box)[keep]


def _candidate_best_iou(
    binary: torch.Tensor,
    boxes: torch.Tensor,
    box_valid: torch.Tensor,
    include_holes: bool,
    pairs_per_chunk: int = 1 << 20,
) -> torch.Tensor:
    """Per binary image, the best IoU of any candidate box with any valid GT box; -1 without candidates.

    Binary image ``i`` is scored against the boxes of row ``i % B`` (several thresholds of a batch
    stacked along the first axis, see :meth:`MaxBoxAccV2.best_iou_per_threshold`), so the boxes are never
    copied per threshold. The candidate x box IoU matrix is built ``pairs_per_chunk // N`` candidates at a
    time: its memory is bounded (about 100 bytes per pair) whatever the number of boxes or candidates.
    IoU in float64 with pixel-edge areas.  Shapes: binary [M, H, W] bool (M a multiple of B), boxes
    [B, N, 4], box_valid [B, N] bool -> [M] float64.
    """
    M = binary.shape[0]
    B, N = box_valid.shape
    best = torch.full((M,), -1.0, dtype=torch.float64, device=binary.device)
    image_t, cand = _candidate_boxes(binary, include_holes)
    if N == 0:
        return best
    step = max(1, int(pairs_per_chunk) // N)
    for c0 in range(0, image_t.shape[0], step):
        image = image_t[c0 : c0 + step]
        row = image % B
        iou = _pairwise_iou64(cand[c0 : c0 + step, None, :], boxes[row])  # [c, N]
        iou = torch.where(box_valid[row], iou, -1.0)
        best.scatter_reduce_(0, image, iou.amax(dim=1), reduce="amax")
    return best


class MaxBoxAccV2:
    """MaxBoxAccV2's per-image part (Choe et al. CVPR 2020, clovaai/wsolevaluation): the best IoU of each
    image at each threshold (:meth:`best_iou_per_threshold`); :func:`maxboxacc_from_best_iou` aggregates it.

    Procedure: for each threshold ``tau_k = float32(k / thresholds)``, k = 0 .. thresholds-1 (the
    grid [0, 1) with step 1/thresholds; wsolevaluation uses step 0.01, i.e. thresholds=100), binarise
    the normalised map ``F = maps >= tau_k`` (float32 comparison).  Every connected component of F
    (8-connectivity, as OpenCV's contour finder uses for the foreground) yields one candidate box,
    its bounding box in pixel-edge coordinates ("all contours", ``multi_contour_eval=True``).  An
    image is correct at (tau_k, delta) if some candidate has IoU >= delta with some valid GT box
    (``multi_iou_eval=True``).  ``BoxAcc(tau, delta) = correct / images``;
    ``MaxBoxAccV2 = mean over delta in iou_thresholds of max over tau of BoxAcc(tau, delta)``,
    reported in [0, 1] (the paper reports percent).

    Holes: wsolevaluation takes ``cv2.findContours(..., RETR_TREE)``, whose contours include the
    inner boundaries of holes, so each hole's boundary box is a candidate too.  We INCLUDE hole boxes
    by default (``include_holes=True``) so that the candidate set is the published one: a hole (a
    4-connected background component not touching the image border) contributes the bounding box of
    the foreground pixels that trace it, i.e. its own pixel box grown by one pixel on each side,
    exactly ``cv2.boundingRect`` of the hole contour.  A hole box lies inside its component's box
    and can only add correct images; it matters when activation surrounds a weaker centre (on
    ``scripts/bench_scores.py`` batches with random boxes it changed 1-2 of 64 images in one of three
    seeds).  Leaving holes out would make a different, slightly stricter metric than the published
    numbers; pass ``include_holes=False`` for the outer-component-only variant (about 20 % faster).

    Deliberate differences from wsolevaluation's code, all following docs/definitions.md:
    - no uint8 quantisation of the map and ``>= tau`` instead of OpenCV's ``> int(tau * 255)``;
    - pixel-edge boxes ``(x, y, x + w, y + h)`` and IoU with areas ``(x2 - x1) * (y2 - y1)``; the
      reference clips ``x + w`` to ``width - 1`` and adds +1 to widths in its IoU;
    - an image whose map is empty (constant) has no candidate: counted, never correct (the
      reference would fall back to a ``[0, 0, 0, 0]`` box);
    - an image with no valid GT box cannot be scored: it is left out of the count and reported as
      ``num_images_without_box``.

    Cost: per batch, ``thresholds`` labellings: per threshold one binarisation, one int8 transition
    tensor and one ``nonzero`` over the pixels, then union-find on the runs (module
    ``components``); with holes, the background runs of the images that have a hole (found from the
    Euler number of the foreground run graph, no pixel pass) are labelled too.  Thresholds are
    processed in chunks stacked along the batch axis (``pixels_per_chunk``, default 2**25 pixels:
    10 thresholds at a time for 64 x 224 x 224).  Measured on this project's 2-core CPU (Intel
    Xeon, torch 2.14, machine shared with other busy processes, so noisy), one 64 x 224 x 224 batch
    of smooth maps (7x7 uniform random maps upsampled bilinearly), 3 boxes per image, 100
    thresholds, median of 3: with ``torch.set_num_threads(1)`` 1.6 s with holes, 1.3 s without;
    with the default 2 threads 2.2-4.0 s with holes, 1.8 s without (the second thread mostly waits
    for a busy core).  Command: ``.venv/bin/python scripts/bench_scores.py --threads 1`` (and
    without ``--threads``).  For scale: a per-image OpenCV loop (``cv2.findContours`` +
    ``boundingRect`` only, no IoU) takes about 0.23 s for the same batch on one thread, so on a CPU
    this batched version is several times slower than OpenCV; it exists to stay on the GPU (no
    copies, no per-image Python work), where its per-pixel passes are cheap.

    Memory does not grow with the number of boxes beyond the boxes themselves: the candidate x box
    IoU is computed ``pairs_per_chunk`` pairs at a time (default 2**20, about 100 MB of temporaries), and
    the boxes are indexed per threshold, not copied (``data.max_boxes`` caps the boxes per image too).

    Work stays on the maps' device; :meth:`best_iou_per_threshold` does a few scalar syncs per threshold
    (``nonzero``, union-find rounds) and no per-image Python work.
    """

    def __init__(
        self,
        thresholds: int = 100,
        include_holes: bool = True,
        pixels_per_chunk: int = 1 << 25,
        pairs_per_chunk: int = 1 << 20,
    ) -> None:
        if int(thresholds) < 1:
            raise ValueError("thresholds must be >= 1")
        self.thresholds = int(thresholds)
        self.include_holes = bool(include_holes)
        self.pixels_per_chunk = int(pixels_per_chunk)
        self.pairs_per_chunk = int(pairs_per_chunk)  # candidate x box pairs per IoU chunk: bounds memory

    def taus(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The threshold grid ``float32(k / thresholds)``, k = 0 .. thresholds-1.  [T] float32."""
        k = torch.arange(self.thresholds, dtype=torch.float64, device=device)
        return (k / self.thresholds).to(torch.float32)

    @torch.no_grad()
    def best_iou_per_threshold(
        self,
        maps: torch.Tensor,
        empty: torch.Tensor,
        boxes: torch.Tensor,
        box_valid: torch.Tensor,
        domain: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per image and threshold, the best IoU of any candidate box with any valid GT box.

        This is the per-image state of MaxBoxAccV2: image i is correct at (tau_k, delta) iff
        ``best[i, k] >= delta``, so storing it per sample lets a run be resumed or re-aggregated.
        Shapes: maps [B, H, W], empty [B], boxes [B, N, 4], box_valid [B, N], domain [B, H, W] bool or None
        (where the maps are defined, see ``score_map``: no candidate takes a pixel outside it, even at
        tau = 0) -> [B, T] float64 (-1 where there is no candidate: empty map, no box, nothing above the
        threshold).
        """
        dev = maps.device
        B = maps.shape[0]
        empty = empty.to(device=dev, dtype=torch.bool)
        box_valid = box_valid.to(device=dev, dtype=torch.bool)
        has_box = box_valid.any(dim=1) if box_valid.shape[1] else torch.zeros(B, dtype=torch.bool, device=dev)
        active = has_box & ~empty
        # Inactive images never pass a threshold: no foreground, no candidates.
        masked = maps.masked_fill(~active[:, None, None], float("-inf"))
        if domain is not None:
            masked = masked.masked_fill(~domain.to(device=dev, dtype=torch.bool), float("-inf"))
        best = torch.empty((self.thresholds, B), dtype=torch.float64, device=dev)
        taus = self.taus(dev)
        # Several thresholds at once, stacked along the batch axis (fewer, larger operations).
        chunk = max(1, self.pixels_per_chunk // max(1, maps.numel()))
        for k0 in range(0, self.thresholds, chunk):
            tc = taus[k0 : k0 + chunk]
            binary = (masked[None] >= tc[:, None, None, None]).reshape(-1, *maps.shape[1:])  # image t * B + b
            best[k0 : k0 + tc.numel()] = _candidate_best_iou(
                binary, boxes, box_valid, self.include_holes, self.pairs_per_chunk
            ).view(tc.numel(), B)
        return best.T.contiguous()


def boxacc_per_threshold(
    best_iou: np.ndarray, counted: np.ndarray, iou_thresholds: tuple[float, ...] = (0.3, 0.5, 0.7)
) -> np.ndarray:
    """``BoxAcc(tau_k, delta_d)``: the share of the counted images whose best IoU at threshold ``k`` is at
    least ``delta_d``. Shapes: best_iou ``[n, T]`` (-1 where no candidate), counted ``[n]`` bool (images with
    at least one valid box, empty maps included) -> ``[T, D]`` float64, NaN when no image is counted."""
    rows = np.asarray(best_iou, dtype=np.float64)[np.asarray(counted, dtype=bool)]
    deltas = np.asarray(iou_thresholds, dtype=np.float64)
    if not len(rows):
        return np.full((rows.shape[1], len(deltas)), np.nan)
    return (rows[:, :, None] >= deltas).mean(axis=0)


def maxboxacc_from_best_iou(
    best_iou: np.ndarray, counted: np.ndarray, thresholds: int, iou_thresholds: tuple[float, ...] = (0.3, 0.5, 0.7)
) -> dict:
    """MaxBoxAccV2 from the stored per-image state (see :meth:`MaxBoxAccV2.best_iou_per_threshold`).

    ``BoxAcc(tau_k, delta)`` as :func:`boxacc_per_threshold`; ``MaxBoxAccV2 = mean over delta of max over k``,
    in [0, 1] (the paper reports percent). Pure NumPy, used at the end of a (resumed) run.

    Args:
        best_iou: ``[n, T]`` array, -1 where no candidate.
        counted: ``[n]`` bool, images with at least one valid box (empty maps included).

    Returns:
        ``maxboxacc_v2``; per delta (named by its percentage, e.g. ``iou50``) ``maxboxacc_iou50`` (max over tau
        of BoxAcc) and ``best_tau_iou50`` (``k / thresholds`` for the smallest k attaining it, as numpy's
        argmax in the reference); ``num_images`` (counted) and ``num_images_without_box`` (left out);
        ``thresholds``; ``iou_thresholds``. With no counted image every score is NaN.
    """
    best_iou = np.asarray(best_iou, dtype=np.float64).reshape(-1, thresholds)
    counted = np.asarray(counted, dtype=bool)
    boxacc = boxacc_per_threshold(best_iou, counted, iou_thresholds)  # [T, D]
    any_counted = bool(counted.any())
    out: dict = {
        "num_images": int(counted.sum()),
        "num_images_without_box": int((~counted).sum()),
        "thresholds": thresholds,
        "iou_thresholds": list(iou_thresholds),
    }
    maxima = []
    for d, delta in enumerate(iou_thresholds):
        name = f"iou{int(round(delta * 100))}"
        best_k = int(np.argmax(boxacc[:, d])) if any_counted else -1
        maxima.append(float(boxacc[best_k, d]) if any_counted else float("nan"))
        out[f"maxboxacc_{name}"] = maxima[-1]
        out[f"best_tau_{name}"] = best_k / thresholds if any_counted else float("nan")
    out["maxboxacc_v2"] = float(np.mean(maxima))
    return out
