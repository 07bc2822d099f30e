"""Slow, obviously-correct NumPy references of the scores in docs/definitions.md.

Explicit Python loops over images and boxes, ``mask[y1:y2, x1:x2]`` slicing for integer boxes and a
per-pixel centre test for fractional ones, ``scipy.ndimage.label`` with a 3x3 structure for
8-connectivity, and ``cv2.findContours`` per image and threshold for MaxBoxAccV2.  Independent of
``pipeline.scores`` (shares no code with it).
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

NAN = float("nan")


# ----------------------------------------------------------------------------- inputs
def smooth_maps(rng: np.random.Generator, b: int, h: int, w: int, small: int = 7) -> np.ndarray:
    """Realistic CAM-like maps: small random maps upsampled bilinearly, min-max normalised."""
    x = torch.from_numpy(rng.random((b, 1, small, small)).astype(np.float32))
    m = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)[:, 0].numpy()
    mn = m.min(axis=(1, 2), keepdims=True)
    mx = m.max(axis=(1, 2), keepdims=True)
    return ((m - mn) / (mx - mn)).astype(np.float32)


def random_boxes(
    rng: np.random.Generator, b: int, n: int, h: int, w: int, fractional: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """[b, n, 4] boxes inside the image (some rows invalid padding with junk values)."""
    boxes = np.zeros((b, n, 4), np.float32)
    valid = np.zeros((b, n), bool)
    for i in range(b):
        for j in range(n):
            if fractional:
                xa, xb = np.sort(rng.uniform(0, w, 2))
                ya, yb = np.sort(rng.uniform(0, h, 2))
            else:
                xa, xb = np.sort(rng.integers(0, w + 1, 2))
                ya, yb = np.sort(rng.integers(0, h + 1, 2))
                if xa == xb:
                    xb = min(w, xa + 1) if xa < w else xa
                    xa = xb - 1
                if ya == yb:
                    yb = min(h, ya + 1) if ya < h else ya
                    ya = yb - 1
            boxes[i, j] = (xa, ya, xb, yb)
            valid[i, j] = rng.random() < 0.8
        if n and not valid[i].any() and rng.random() < 0.7:
            valid[i, 0] = True
    junk = ~valid
    boxes[junk] = rng.uniform(-50, 50, (int(junk.sum()), 4)).astype(np.float32)
    return boxes, valid


# ----------------------------------------------------------------------------- masks
def score_inputs(
    seed: int = 0, b: int = 8, h: int = 40, w: int = 56
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A batch with the edge cases every score meets: maps ``[b, h, w]`` (image 0 a constant map), boxes
    ``[b, 3, 4]`` and their validity ``[b, 3]`` (image 1 without a box, image 2 one box covering the whole
    image: A = 1), and ``empty`` ``[b]`` (constant maps). Returns ``(maps, boxes, valid, empty)``."""
    rng = np.random.default_rng(seed)
    maps = smooth_maps(rng, b, h, w, small=5)
    maps[0] = 0.0
    boxes, valid = random_boxes(rng, b, 3, h, w)
    valid[1] = False
    boxes[2, 0], valid[2] = [0, 0, w, h], [True, False, False]
    empty = np.array([m.max() == m.min() for m in maps])
    return maps, boxes, valid, empty


def ref_mask(boxes: np.ndarray, valid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Union of the valid boxes of one image, [h, w] bool."""
    mask = np.zeros((h, w), bool)
    for (x1, y1, x2, y2), ok in zip(boxes, valid):
        if not ok:
            continue
        if all(float(v).is_integer() for v in (x1, y1, x2, y2)):
            ya, yb = max(int(y1), 0), max(int(y2), 0)
            xa, xb = max(int(x1), 0), max(int(x2), 0)
            mask[ya:yb, xa:xb] = True  # rows first
        else:
            for y in range(h):
                for x in range(w):
                    if x1 <= x + 0.5 < x2 and y1 <= y + 0.5 < y2:
                        mask[y, x] = True
    return mask


def ref_masks(boxes, valid, h, w):
    return np.stack([ref_mask(boxes[i], valid[i], h, w) for i in range(len(boxes))])


# ----------------------------------------------------------------------------- scores
def is_constant(m: np.ndarray) -> bool:
    return bool(m.max() == m.min())


def ref_energy(m: np.ndarray, g: np.ndarray) -> float:
    total = float(np.sum(m, dtype=np.float64))
    if total == 0 or not g.any():
        return NAN
    return float(np.sum(m[g], dtype=np.float64)) / total


def ref_area_fraction(g: np.ndarray) -> float:
    return float(g.sum()) / g.size if g.any() else NAN


def ref_pointing(m: np.ndarray, g: np.ndarray, tol: float) -> float:
    if is_constant(m) or not g.any():
        return NAN
    peaks = np.argwhere(m == m.max())
    gpix = np.argwhere(g)
    for p in peaks:
        d2 = ((gpix - p) ** 2).sum(axis=1)
        if (np.sqrt(d2) <= tol).any():
            return 1.0
    return 0.0


def ref_rank(m: np.ndarray, g: np.ndarray) -> float:
    if is_constant(m) or not g.any():
        return NAN
    k = int(g.sum())
    flat = m.ravel()
    order = sorted(range(flat.size), key=lambda i: (-float(flat[i]), i))[:k]
    return sum(bool(g.ravel()[i]) for i in order) / k


def ref_mass(r: np.ndarray, g: np.ndarray) -> float:
    total = float(np.sum(r, dtype=np.float64))
    if total == 0 or not g.any():
        return NAN
    return float(np.sum(r[g], dtype=np.float64)) / total


def ref_peak(m: np.ndarray) -> tuple[int, int]:
    r, c = np.unravel_index(int(np.argmax(m)), m.shape)
    return int(r), int(c)


def ref_label(binary: np.ndarray) -> np.ndarray:
    lab, _ = ndi.label(binary, structure=np.ones((3, 3), int))
    return lab


def ref_largest_box(m: np.ndarray, empty: bool, tau: float) -> np.ndarray:
    if empty:
        return np.full(4, NAN)
    f = m >= np.float32(tau) * m.max()
    lab = ref_label(f)
    if lab.max() == 0:
        return np.full(4, NAN)
    sizes = [(lab == k).sum() for k in range(1, lab.max() + 1)]
    # scipy numbers components in raster order of their first pixel: the first maximum wins ties.
    k = int(np.argmax(sizes)) + 1
    ys, xs = np.nonzero(lab == k)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def ref_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def ref_best_iou(pred, boxes, valid) -> float:
    if np.isnan(pred).any() or not valid.any():
        return NAN
    return max(ref_iou([float(v) for v in pred], [float(v) for v in boxes[j]]) for j in range(len(boxes)) if valid[j])


# ----------------------------------------------------------------------------- MaxBoxAccV2
def ref_contour_boxes(binary: np.ndarray, include_holes: bool) -> list[tuple[int, int, int, int]]:
    """Candidate boxes as in wsolevaluation: bounding rects of cv2.findContours contours.

    With include_holes: RETR_TREE (every contour, hole boundaries too), as published.  Without:
    RETR_CCOMP and only the outer boundaries (parent == -1), i.e. one box per 8-connected
    component.  Boxes in pixel-edge coordinates (x, y, x + w, y + h), no clipping.
    """
    img = binary.astype(np.uint8)
    mode = cv2.RETR_TREE if include_holes else cv2.RETR_CCOMP
    contours, hierarchy = cv2.findContours(img, mode, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for i, c in enumerate(contours):
        if not include_holes and hierarchy[0][i][3] != -1:
            continue
        x, y, w, h = cv2.boundingRect(c)
        out.append((x, y, x + w, y + h))
    return out


def ref_maxboxacc(maps, empty, boxes, valid, thresholds=100, deltas=(0.3, 0.5, 0.7), include_holes=True):
    t = thresholds
    correct = np.zeros((t, len(deltas)), np.int64)
    count = 0
    for i in range(len(maps)):
        if not valid[i].any():
            continue
        count += 1
        if empty[i]:
            continue
        for k in range(t):
            tau = np.float32(k / t)
            binary = maps[i] >= tau
            best = -1.0
            for cand in ref_contour_boxes(binary, include_holes):
                for j in range(len(boxes[i])):
                    if valid[i][j]:
                        best = max(best, ref_iou(cand, [float(v) for v in boxes[i][j]]))
            for d, delta in enumerate(deltas):
                if best >= delta:
                    correct[k, d] += 1
    acc = correct / count if count else np.full(correct.shape, NAN)
    maxima = acc.max(axis=0)
    best_tau = [float(np.float32(int(np.argmax(acc[:, d])) / t)) for d in range(len(deltas))]
    return {"acc": acc, "max": maxima, "v2": float(np.mean(maxima)), "best_tau": best_tau, "count": count}


def canonical(lab: np.ndarray) -> np.ndarray:
    """Relabel a label image by order of first appearance (raster), background 0 kept."""
    flat = lab.ravel()
    values, first = np.unique(flat, return_index=True)
    has_background = values[0] == 0  # np.unique sorts, labels are >= 0
    order = np.argsort(np.where(values == 0, -1, first))  # background first, then by first pixel
    rank = np.zeros(len(values), np.int64)
    rank[order] = np.arange(len(values)) + (0 if has_background else 1)
    return rank[np.searchsorted(values, flat)].reshape(lab.shape)


def nan_equal(a, b, atol=1e-6) -> bool:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return bool(np.all((np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= atol)))
