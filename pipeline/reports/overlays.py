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
                 captions: tuple[list[str], list[str], list[str]]) -> np.ndarray:
    """Three panels side by side.

    Args:
        image_rgb: ``[H, W, 3]`` uint8, the network input.
        boxes: ``[N, 4]`` pixel-edge boxes in the same coordinates.
        pred_map, true_map: ``[H, W]`` normalised maps.
        captions: lines under each panel.
    Returns:
        ``[H', 3W, 3]`` BGR uint8.
    """
    # Small network inputs (96 px) are enlarged so that the captions stay readable.
    zoom = max(1, int(np.ceil(224 / image_rgb.shape[1])))
    if zoom > 1:
        image_rgb = cv2.resize(image_rgb, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
        pred_map = cv2.resize(pred_map, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
        true_map = cv2.resize(true_map, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
        boxes = np.asarray(boxes, dtype=np.float32) * zoom
    base = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    with_boxes = base.copy()
    for x1, y1, x2, y2 in boxes:
        cv2.rectangle(with_boxes, (int(round(x1)), int(round(y1))), (int(round(x2)) - 1, int(round(y2)) - 1), (0, 255, 0), 2)
    panels = [with_boxes, _heat(with_boxes, pred_map), _heat(with_boxes, true_map)]
    panels = [_text(p, c) for p, c in zip(panels, captions)]
    height = max(p.shape[0] for p in panels)
    panels = [np.vstack([p, np.full((height - p.shape[0], p.shape[1], 3), 255, np.uint8)]) for p in panels]
    return np.hstack(panels)


def _fmt(value: float) -> str:
    return "nan" if value != value else f"{value:.2f}"


def save_overlays(out_dir: Path, table: pa.Table, batch: dict, maps, only_misclassified: bool = True) -> int:
    """Write one JPEG per selected image of the batch; returns how many were written."""
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
        picture = draw_overlay(np.ascontiguousarray(images[i]), boxes, chosen_maps[i, 0], chosen_maps[i, 1], captions)
        path = out_dir / f"{safe_file_stem(row['id'])}.jpg"
        tmp = path.with_name(f".{path.name}.tmp.jpg")
        cv2.imwrite(str(tmp), picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
        tmp.replace(path)
    return int(rows.size)
