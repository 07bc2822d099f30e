"""Overlay pictures for review: the image with its boxes, then the predicted- and true-class maps (and the
next-ranked classes' maps with ``cam.top_k`` > 1).

Each map panel marks the map's peak (cross) and the box of the thresholded map (magenta) beside the
annotated boxes (green); a colour bar gives the scale. Only the images that are drawn (by default those
whose triage is not ``ok``) are copied to the host; drawing is
OpenCV on small uint8 arrays. File names come from sanitised ids, so an id like ``../../x`` cannot write
outside the run folder.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import torch

from pipeline.atomic import write_bytes_atomic
from pipeline.data.batch import Batch
from pipeline.errors import is_disk_full

SAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Narrower pictures are enlarged to about this width so that captions stay readable: tiny ones (the default's
# 96 px input) by a whole factor (crisp pixels), others (224 px) by the exact fraction, so that no overlay is
# drawn and encoded at four times the pixels it needs.
MIN_PANEL_WIDTH = 320
# Longest side of one drawn panel, pixels: a degenerate image (1 x 3,000 px on its scoring grid) cannot make a
# gigapixel picture; with many panels (cam.top_k) each is narrower still, so the row stays under JPEG's limit.
MAX_PANEL_SIDE = 2048
JPEG_MAX_SIDE = 65535
COLOUR_BAR_WIDTH = 56  # pixels of the colour bar right of the panels


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
    """Put ``lines`` in a band under ``panel`` (so the text never hides the map), at a size that stays
    legible when the page shows the picture at its natural width."""
    scale = max(0.5, panel.shape[1] / 520)
    thickness = 1 if scale < 0.8 else 2
    line_height = int(26 * scale) + 6
    band = np.full((line_height * len(lines) + 8, panel.shape[1], 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(
            band, line, (6, line_height * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA
        )
    return np.vstack([panel, band])


def _colour_bar(height: int, width: int = COLOUR_BAR_WIDTH) -> np.ndarray:
    """A vertical JET colour bar, 1 (map maximum) at the top and 0 at the bottom, labelled. ``[height, width, 3]``."""
    ramp = np.linspace(255, 0, max(height - 40, 8)).astype(np.uint8)[:, None].repeat(18, axis=1)
    bar = cv2.applyColorMap(ramp, cv2.COLORMAP_JET)
    out = np.full((height, width, 3), 255, np.uint8)
    out[20 : 20 + bar.shape[0], 4:22] = bar
    for text, y in (("1", 28), ("0", 20 + bar.shape[0])):
        cv2.putText(out, text, (26, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(out, "map", (2, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def _mark_peak(panel: np.ndarray, heat: np.ndarray) -> None:
    """A white-on-black cross at the map's first maximum (raster order, as ``peak_row``/``peak_col``), in place."""
    if heat.max() <= heat.min():  # empty map: no peak
        return
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    size = max(6, panel.shape[1] // 30)
    for colour, width in (((0, 0, 0), 4), ((255, 255, 255), 2)):
        cv2.drawMarker(panel, (int(x), int(y)), colour, cv2.MARKER_CROSS, size * 2, width)


def _draw_box(panel: np.ndarray, box, colour: tuple[int, int, int], thickness: int = 2) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    if any(v != v for v in (x1, y1, x2, y2)):
        return
    cv2.rectangle(panel, (int(round(x1)), int(round(y1))), (int(round(x2)) - 1, int(round(y2)) - 1), colour, thickness)


def draw_overlay(
    image_rgb: np.ndarray,
    boxes: np.ndarray,
    maps: Sequence[np.ndarray],
    captions: Sequence[list[str]],
    seen: np.ndarray | None = None,
    map_boxes: Sequence | None = None,
) -> np.ndarray:
    """The picture with its boxes, then one panel per map (pred, true, top2..), side by side, and a colour bar.

    Args:
        image_rgb: ``[H, W, 3]`` uint8, the network input (or the stored photo on its scoring grid).
        boxes: ``[N, 4]`` pixel-edge boxes in the same coordinates (green).
        maps: K ``[H, W]`` normalised maps; each map panel marks its peak with a cross.
        captions: K + 1 lists of lines, under the picture and under each map panel.
        seen: ``[H, W]`` bool, where the network saw the photo (original space); the rest is dimmed and
            carries no heat.
        map_boxes: K boxes, each ``(x1, y1, x2, y2)`` pixel-edge in the same coordinates (NaN: none): the box
            of each thresholded map (``box_*_tau``), drawn in magenta beside the ground truth.
    Returns:
        ``[H', (K + 1) W + bar, 3]`` BGR uint8.
    """
    if len(captions) != len(maps) + 1 or (map_boxes is not None and len(map_boxes) != len(maps)):
        raise ValueError(f"{len(maps)} maps need {len(maps) + 1} captions and {len(maps)} map boxes")
    # Small network inputs (96 px) are enlarged so that the pictures and captions stay readable; huge or
    # degenerate ones are bounded (panel_size).
    height, width = image_rgb.shape[:2]
    panel_height, panel_width = panel_size(height, width, len(maps) + 1)
    seen = None if seen is None else np.asarray(seen, dtype=bool)
    if (panel_height, panel_width) != (height, width):
        shrink = panel_width < width or panel_height < height
        size = (panel_width, panel_height)
        whole = panel_width % width == 0 and panel_height % height == 0
        enlarge = cv2.INTER_NEAREST if whole else cv2.INTER_LINEAR
        image_rgb = cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA if shrink else enlarge)
        maps = [cv2.resize(heat, size, interpolation=cv2.INTER_LINEAR) for heat in maps]
        scale = np.array([panel_width / width, panel_height / height] * 2, dtype=np.float32)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * scale
        if map_boxes is not None:
            map_boxes = tuple(np.asarray(b, dtype=np.float64) * scale for b in map_boxes)
    base = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    if seen is not None:
        seen = cv2.resize(
            seen.astype(np.uint8), (base.shape[1], base.shape[0]), interpolation=cv2.INTER_NEAREST
        ).astype(bool)
        base = np.where(seen[..., None], base, base // 3).astype(np.uint8)
    with_boxes = base.copy()
    for box in boxes:
        _draw_box(with_boxes, box, (0, 255, 0))
    panels = [with_boxes] + [_heat(with_boxes, heat) for heat in maps]
    if seen is not None:
        panels = [panels[0]] + [np.where(seen[..., None], panel, with_boxes) for panel in panels[1:]]
    for k, (panel, heat) in enumerate(zip(panels[1:], maps)):
        if map_boxes is not None:
            _draw_box(panel, map_boxes[k], (255, 0, 255))
        _mark_peak(panel, heat if seen is None else np.where(seen, heat, -1.0))
    panels = [_text(p, c) for p, c in zip(panels, captions)]
    height = max(p.shape[0] for p in panels)
    panels = [np.vstack([p, np.full((height - p.shape[0], p.shape[1], 3), 255, np.uint8)]) for p in panels]
    return np.hstack(panels + [_colour_bar(height)])


@dataclass(frozen=True)
class OverlayFailure:
    """One overlay that could not be made: ``sample_id`` and why (for an ``errors.parquet`` row, stage ``overlay``)."""

    sample_id: str
    error_type: str
    message: str


def panel_size(height: int, width: int, panels: int = 3) -> tuple[int, int]:
    """``(height, width)`` of one drawn panel for a ``height x width`` picture, ``panels`` side by side.

    Enlarged to :data:`MIN_PANEL_WIDTH` wide (captions readable): by a whole factor (at least that width) when
    the picture is under half of it, by the exact fraction otherwise; then scaled down so
    that neither side exceeds :data:`MAX_PANEL_SIDE`, nor the row of panels and the colour bar JPEG's
    :data:`JPEG_MAX_SIDE` (the aspect ratio kept, each side at least 1 px).
    """
    max_side = min(MAX_PANEL_SIDE, (JPEG_MAX_SIDE - COLOUR_BAR_WIDTH) // max(panels, 1))
    ratio = MIN_PANEL_WIDTH / max(width, 1)
    zoom = float(np.ceil(ratio)) if ratio > 2 else max(1.0, ratio)
    zoom = min(zoom, max_side / max(height, width, 1))
    return max(1, min(max_side, round(height * zoom))), max(1, min(max_side, round(width * zoom)))


def write_jpeg_atomic(path: Path, picture: np.ndarray) -> None:
    """Encode ``picture`` (``[H, W, 3]`` BGR uint8) as JPEG and write it through a temporary file.

    Raises ``ValueError`` when OpenCV cannot encode it, ``OSError`` when it cannot be written (a full disk
    too: :func:`pipeline.errors.is_disk_full`); no temporary file is left behind.
    """
    encoded, data = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not encoded:
        raise ValueError(f"OpenCV could not encode a {picture.shape[1]} x {picture.shape[0]} JPEG")
    write_bytes_atomic(path, data.tobytes())


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.2f}"


def _hit(value: bool | None) -> str:
    """A pointing-game flag (a nullable boolean of this run's rows) in words."""
    return "n/a" if value is None else ("hit" if value else "miss")


OVERLAY_MODES = ("needs_look", "misclassified", "all", "none")


def overlay_rows(table: pa.Table, mode: str, triage_settings=None) -> np.ndarray:
    """Batch rows to draw for ``report.overlays``: ``needs_look`` (every image whose triage calls for a look,
    i.e. not in :data:`pipeline.reports.triage.NO_LOOK_NEEDED`), ``misclassified``, ``all`` or ``none``.
    ``[n]`` int64."""
    if mode == "none":
        return np.zeros(0, dtype=np.int64)
    if mode == "all":
        return np.arange(table.num_rows)
    if mode == "misclassified":
        return np.flatnonzero(~table.column("correct").fill_null(True).to_numpy(zero_copy_only=False))
    from pipeline.reports.triage import NO_LOOK_NEEDED, TriageSettings, triage

    categories = triage(table.to_pandas(), triage_settings or TriageSettings())
    return np.flatnonzero(~np.isin(categories.to_numpy(), NO_LOOK_NEEDED))


def save_overlays(
    out_dir: Path,
    table: pa.Table,
    batch: Batch,
    maps,
    only_misclassified: bool = True,
    original=None,
    rows: np.ndarray | None = None,
) -> list[OverlayFailure]:
    """Write one JPEG per selected image of the batch; returns the overlays that could not be made
    (drawing or encoding failed, or the file could not be written). A full disk is not such a failure: its
    ``OSError`` propagates, so that the run stops instead of failing every image after it.

    ``original`` (``scores.space=original``): ``(view, image_paths, boxes_refer_to)`` with the batch's
    :class:`~pipeline.scores.space.ScoringView`; each drawn image is decoded again and shown whole on its scoring grid,
    with the annotated boxes and the maps warped back, and the part the network did not see dimmed. An image
    that cannot be decoded again falls back to the network-input picture.
    """
    if rows is None:  # the batch rows to draw (overlay_rows); else the misclassified ones, or all
        rows = overlay_rows(table, "misclassified" if only_misclassified else "all")
    if "non_finite_output" in table.column_names:  # NaN/inf maps: nothing to draw
        rows = rows[~table.column("non_finite_output").to_numpy(zero_copy_only=False)[rows]]
    if rows.size == 0:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    selected = torch.from_numpy(rows).to(maps.normalised.device)
    chosen_maps = maps.normalised[selected].cpu().numpy()  # [n, K, H, W]: only the drawn images leave the device
    images = (
        batch.image[torch.from_numpy(rows).to(batch.image.device)].permute(0, 2, 3, 1).cpu().numpy()
    )  # on the device after data.decode=gpu
    tau = next((name[len("pred_box_x1_") :] for name in table.column_names if name.startswith("pred_box_x1_tau")), None)
    map_names = overlay_map_names(table.column_names)
    box_columns = [f"{m}_box_{c}_{tau}" for m in map_names for c in ("x1", "y1", "x2", "y2")] if tau else []
    top_k_columns = [
        f"{m}_{c}" for m in map_names[2:] for c in ("class_name", "prob", "energy_in_box", "excess_energy")
    ]
    data = (
        table.select(
            [
                "id",
                "label_name",
                "pred_name",
                "confidence",
                "prob_true",
                "pred_energy_in_box",
                "true_energy_in_box",
                "pred_excess_energy",
                "true_excess_energy",
                "pred_pointing_hit",
                "true_pointing_hit",
                *box_columns,
                *top_k_columns,
            ]
        )
        .take(pa.array(rows))
        .to_pylist()
    )
    failures: list[OverlayFailure] = []
    for i, row in enumerate(data):
        try:
            _save_one(out_dir, row, i, rows, images, chosen_maps, batch, original, tau, map_names)
        except (OSError, ValueError, cv2.error, MemoryError) as error:  # this picture only: the row is already scored
            if is_disk_full(error):
                raise
            failures.append(OverlayFailure(row["id"], type(error).__name__, f"overlay not written: {error}"))
    return failures


def _save_one(
    out_dir: Path,
    row: dict,
    i: int,
    rows: np.ndarray,
    images: np.ndarray,
    chosen_maps: np.ndarray,
    batch: Batch,
    original,
    tau: str | None,
    map_names: list[str],
) -> None:
    """Draw and write the overlay of the ``i``-th selected image (batch row ``rows[i]``)."""
    boxes = batch.boxes.coords[rows[i]][batch.boxes.valid[rows[i]]].numpy()
    captions = (
        [
            f"{row['id'][:40]}",
            f"true: {row['label_name'][:30]}",
            f"pred: {str(row['pred_name'])[:30]} ({_fmt(row['confidence'])})",
        ],
        [
            f"map of pred: {str(row['pred_name'])[:26]}",
            f"in box {_fmt(row['pred_energy_in_box'])}, excess {_fmt(row['pred_excess_energy'])}",
            f"pointing game: {_hit(row['pred_pointing_hit'])}",
        ],
        [
            f"map of true: {row['label_name'][:26]}",
            f"in box {_fmt(row['true_energy_in_box'])}, excess {_fmt(row['true_excess_energy'])}",
            f"p(true) {_fmt(row['prob_true'])}",
        ],
    ) + tuple(
        [
            f"map of {m}: {str(row[f'{m}_class_name'])[:26]}",
            f"in box {_fmt(row[f'{m}_energy_in_box'])}, excess {_fmt(row[f'{m}_excess_energy'])}",
            f"p({m}) {_fmt(row[f'{m}_prob'])}",
        ]
        for m in map_names[2:]
    )
    map_boxes = None
    if tau:  # the thresholded maps' boxes, in the picture's pixels
        map_boxes = tuple(
            np.array([row[f"{m}_box_{c}_{tau}"] for c in ("x1", "y1", "x2", "y2")], dtype=np.float64) for m in map_names
        )
    whole = (
        _original_picture(original, int(rows[i]), batch.boxes_stored.valid[rows[i]]) if original is not None else None
    )
    if whole is not None:
        image, grid_boxes, grid_maps, seen = whole
        if map_boxes is not None:  # box columns are in stored pixels: back onto the scoring grid
            scale_x, scale_y = (float(v) for v in original[0].grid_scale[int(rows[i])])
            map_boxes = tuple(b * np.array([scale_x, scale_y, scale_x, scale_y]) for b in map_boxes)
        picture = draw_overlay(image, grid_boxes, list(grid_maps), captions, seen=seen, map_boxes=map_boxes)
    else:
        picture = draw_overlay(
            np.ascontiguousarray(images[i]), boxes, list(chosen_maps[i]), captions, map_boxes=map_boxes
        )
    write_jpeg_atomic(out_dir / f"{safe_file_stem(row['id'])}.jpg", picture)


def overlay_map_names(columns: Sequence[str]) -> list[str]:
    """The maps an overlay shows, in the run's order: ``pred``, ``true``, then ``top2``.. (``cam.top_k``)."""
    top = sorted(int(c[3 : -len("_class_name")]) for c in columns if re.fullmatch(r"top\d+_class_name", c))
    return ["pred", "true"] + [f"top{k}" for k in top]


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
    grid_maps = view.maps[row, :, :height, :width].cpu().numpy()
    seen = view.domain[row, :height, :width].cpu().numpy()
    boxes = view.boxes[row][box_valid.to(view.boxes.device)].cpu().numpy()
    return image, boxes, grid_maps, seen
