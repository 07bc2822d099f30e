"""Overlay pictures for review: the image with its boxes, then the predicted- and true-class maps.

Only the images that are drawn (by default the misclassified ones) are copied to the host; drawing is
OpenCV on small uint8 arrays. File names come from sanitised ids, so an id like ``../../x`` cannot write
outside the run folder.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import torch

SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_stem(sample_id: str, max_length: int = 80) -> str:
    """A file-name-safe stem for ``sample_id``: ASCII letters, digits, ``._-`` and a short hash of the id
    (so two ids that sanitise alike never share a file)."""
    cleaned = SAFE.sub("_", sample_id).strip("._") or "sample"
    digest = hashlib.sha1(sample_id.encode("utf-8")).hexdigest()[:8]
    return f"{cleaned[:max_length]}-{digest}"


def _heat(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Blend a ``[H, W]`` map in [0, 1] over a ``[H, W, 3]`` BGR image with the JET colour map."""
    colour = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 0.5, colour, 0.5, 0)


def _text(panel: np.ndarray, lines: list[str]) -> np.ndarray:
    """Put ``lines`` in a band under ``panel`` (so the text never hides the map)."""
    scale = max(0.35, panel.shape[1] / 600)
    line_height = int(22 * scale) + 4
    band = np.full((line_height * len(lines) + 6, panel.shape[1], 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(band, line, (4, line_height * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([panel, band])


def draw_overlay(image_rgb: np.ndarray, boxes: np.ndarray, pred_map: np.ndarray, true_map: np.ndarray,
                 captions: tuple[list[str], list[str], list[str]], seen: np.ndarray | None = None) -> np.ndarray:
    """Three panels side by side.

    Args:
        image_rgb: ``[H, W, 3]`` uint8, the network input (or the stored photo on its scoring grid).
        boxes: ``[N, 4]`` pixel-edge boxes in the same coordinates.
        pred_map, true_map: ``[H, W]`` normalised maps.
        captions: lines under each panel.
        seen: ``[H, W]`` bool, where the network saw the photo (original space); the rest is dimmed and
            carries no heat.
    Returns:
        ``[H', 3W, 3]`` BGR uint8.
    """
    # Small network inputs (96 px) are enlarged so that the captions stay readable.
    zoom = max(1, int(np.ceil(224 / image_rgb.shape[1])))
    seen = None if seen is None else np.asarray(seen, dtype=bool)
    if zoom > 1:
        image_rgb = cv2.resize(image_rgb, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
        pred_map = cv2.resize(pred_map, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
        true_map = cv2.resize(true_map, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
        boxes = np.asarray(boxes, dtype=np.float32) * zoom
    base = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    if seen is not None:
        seen = cv2.resize(seen.astype(np.uint8), (base.shape[1], base.shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)
        base = np.where(seen[..., None], base, base // 3).astype(np.uint8)
    with_boxes = base.copy()
    for x1, y1, x2, y2 in boxes:
        cv2.rectangle(with_boxes, (int(round(x1)), int(round(y1))), (int(round(x2)) - 1, int(round(y2)) - 1), (0, 255, 0), 2)
    panels = [with_boxes, _heat(with_boxes, pred_map), _heat(with_boxes, true_map)]
    if seen is not None:
        panels = [panels[0]] + [np.where(seen[..., None], panel, with_boxes) for panel in panels[1:]]
    panels = [_text(p, c) for p, c in zip(panels, captions)]
    height = max(p.shape[0] for p in panels)
    panels = [np.vstack([p, np.full((height - p.shape[0], p.shape[1], 3), 255, np.uint8)]) for p in panels]
    return np.hstack(panels)


def _fmt(value: float) -> str:
    return "nan" if value != value else f"{value:.2f}"


def save_overlays(out_dir: Path, table: pa.Table, batch: dict, maps, only_misclassified: bool = True, original=None) -> int:
    """Write one JPEG per selected image of the batch; returns how many were written.

    ``original`` (``scores.space=original``): ``(view, image_paths, boxes_refer_to)`` with the batch's
    :class:`~pipeline.scores.space.ScoringView`; each drawn image is decoded again and shown whole on its scoring grid,
    with the annotated boxes and the maps warped back, and the part the network did not see dimmed. An image
    that cannot be decoded again falls back to the network-input picture.
    """
    correct = table.column("correct").to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(~correct) if only_misclassified else np.arange(len(correct))
    if rows.size == 0:
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    selected = torch.from_numpy(rows).to(maps.normalised.device)
    chosen_maps = maps.normalised[selected, :2].cpu().numpy()  # only the drawn images leave the device
    images = batch["image"][torch.from_numpy(rows)].permute(0, 2, 3, 1).numpy()
    data = table.select(["id", "label_name", "pred_name", "confidence", "prob_true", "pred_energy_in_box",
                         "true_energy_in_box", "pred_pointing_hit", "true_pointing_hit"]).take(pa.array(rows)).to_pylist()
    for i, row in enumerate(data):
        boxes = batch["boxes"][rows[i]][batch["box_valid"][rows[i]]].numpy()
        captions = (
            [f"{row['id'][:40]}", f"true: {row['label_name'][:28]}", f"pred: {row['pred_name'][:28]} ({_fmt(row['confidence'])})"],
            [f"map of pred: {row['pred_name'][:24]}", f"energy in box {_fmt(row['pred_energy_in_box'])}", f"pointing hit {_fmt(row['pred_pointing_hit'])}"],
            [f"map of true: {row['label_name'][:24]}", f"energy in box {_fmt(row['true_energy_in_box'])}", f"p(true) {_fmt(row['prob_true'])}"],
        )
        whole = _original_picture(original, int(rows[i]), batch["box_stored_valid"][rows[i]]) if original is not None else None
        if whole is not None:
            image, grid_boxes, grid_maps, seen = whole
            picture = draw_overlay(image, grid_boxes, grid_maps[0], grid_maps[1], captions, seen=seen)
        else:
            picture = draw_overlay(np.ascontiguousarray(images[i]), boxes, chosen_maps[i, 0], chosen_maps[i, 1], captions)
        path = out_dir / f"{safe_file_stem(row['id'])}.jpg"
        tmp = path.with_name(f".{path.name}.tmp.jpg")
        cv2.imwrite(str(tmp), picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
        tmp.replace(path)
    return int(rows.size)


def _original_picture(original, row: int, box_valid: torch.Tensor):
    """The stored photo of batch row ``row`` on its scoring grid, with its grid boxes (all annotated ones,
    ``box_valid``, also those outside the crop), maps and seen mask."""
    from torchvision.transforms.v2 import functional as TF

    from pipeline.data.decode import decode_image

    view, image_paths, boxes_refer_to = original
    height, width = (int(v) for v in view.grid_size[row])
    try:
        image, _ = decode_image(image_paths[row], boxes_refer_to, min_side=min(height, width))
    except Exception:  # noqa: BLE001 -- the file changed since it was audited: draw the network input instead
        return None
    image = TF.resize(image, [height, width], antialias=True).permute(1, 2, 0).contiguous().numpy()
    grid_maps = view.maps[row, :2, :height, :width].cpu().numpy()
    seen = view.domain[row, :height, :width].cpu().numpy()
    boxes = view.boxes[row][box_valid.to(view.boxes.device)].cpu().numpy()
    return image, boxes, grid_maps, seen
