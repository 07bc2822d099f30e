"""Overlay pictures for review: the image with its boxes, then the predicted- and true-class maps (one map
when the two classes are the same; the next-ranked classes' maps with ``cam.top_k`` > 1).

Each map panel marks the map's peak (cross) and the box of the thresholded map (magenta) beside the
annotated boxes (green); a colour bar gives the scale. A band on top names the image's triage category and
its reason (``triage``, ``triage_reason``), and a legend strip at the bottom says what the marks and the
numbers under each panel ("in box", "excess") mean, so that a picture explains itself away from the page.
Text is drawn with Pillow (:mod:`pipeline.reports.overlay_text`: any script an installed font covers).
Beside each overlay a thumbnail (``thumbs/<stem>.jpg``: the picture and the judged map, small) is written
for the review page's galleries. Only the images that are drawn (by default those whose triage calls for a
look) are copied to the host; drawing is OpenCV on small uint8 arrays. File names come from sanitised ids,
so an id like ``../../x`` cannot write outside the run folder.
"""

from __future__ import annotations

import functools
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
from pipeline.reports import overlay_text

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
MIN_CAPTION_WIDTH = 200  # narrower panels are padded so that their captions need not wrap letter by letter
THUMB_SIDE = 150  # longest side of each of the thumbnail's two panels (picture, judged map), pixels
THUMB_DIR = "thumbs"  # under overlays/: one thumbnail per overlay, same file name
GREEN = (0, 255, 0)  # annotated boxes (BGR and RGB alike)
MAGENTA = (255, 0, 255)  # box of the thresholded map (BGR and RGB alike)
LEGEND_BACKGROUND = (244, 244, 244)
HEADER_BACKGROUND = (255, 243, 205)  # RGB: the triage band on top
# What "in box" and "excess" under each map panel mean (the legend strip; the review page says the same).
IN_BOX_MEANING = "in box: share of the map's energy inside the annotated boxes"
EXCESS_MEANING = (
    "excess: (in box - box area) / (1 - box area), 0 = no better than a uniform map, 1 = all energy in the box"
)


def safe_file_stem(sample_id: str, max_length: int = 80) -> str:
    """A file-name-safe stem for ``sample_id``: ASCII letters, digits, ``._-`` and a short hash of the id
    (so two ids that sanitise alike never share a file)."""
    cleaned = SAFE.sub("_", sample_id).strip("._") or "sample"
    digest = hashlib.sha1(sample_id.encode("utf-8")).hexdigest()[:8]
    return f"{cleaned[:max_length]}-{digest}"


def _heat(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Blend a ``[H, W]`` map in [0, 1] over a ``[H, W, 3]`` BGR image with the JET colour map."""
    colour = cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 0.5, colour, 0.5, 0)


def _text(panel: np.ndarray, lines: list[str], size: int) -> np.ndarray:
    """Put ``lines`` in a band under ``panel`` (so the text never hides the map), wrapped to its width; a
    panel narrower than :data:`MIN_CAPTION_WIDTH` (a sliver of an image) is padded white to it first."""
    if panel.shape[1] < MIN_CAPTION_WIDTH:
        pad = np.full((panel.shape[0], MIN_CAPTION_WIDTH - panel.shape[1], 3), 255, np.uint8)
        panel = np.hstack([panel, pad])
    return np.vstack([panel, overlay_text.text_band(lines, panel.shape[1], size)])


@functools.lru_cache(maxsize=16)
def _legend(width: int, size: int, tau: float | None, map_box: bool) -> np.ndarray:
    """The legend strip, ``[h, width, 3]`` BGR: a swatch per mark (green box, magenta box, peak cross) and
    what "in box" and "excess" mean. The same for every overlay of a run's size: drawn once (read-only)."""
    from PIL import Image, ImageDraw

    items: list[tuple[str, tuple[int, int, int] | None, str]] = [("box", GREEN, "annotated box")]
    if map_box:
        at = f" at tau = {tau:g}" if tau is not None else ""
        items.append(("box", MAGENTA, f"box of the map thresholded{at}"))
    items.append(("cross", None, "peak of the map"))
    step, margin, swatch = overlay_text.line_height(size), 6, size
    # the items flow left to right, on as many lines as the width needs
    placed = []
    x: float = margin
    row = 0
    for kind, colour, label in items:
        need = swatch + 6 + overlay_text.text_width(label, size) + 2 * size
        if x > margin and x + need > width - margin:
            x, row = margin, row + 1
        placed.append((kind, colour, label, x, row))
        x += need
    notes = [
        part for note in (IN_BOX_MEANING, EXCESS_MEANING) for part in overlay_text.wrap(note, width - 2 * margin, size)
    ]
    rows = row + 1
    band = Image.new("RGB", (width, margin * 2 + step * (rows + len(notes))), LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(band)
    for i, note in enumerate(notes):
        overlay_text.draw_text(draw, (margin, margin + (rows + i) * step), note, size)
    for kind, colour, label, x, row in placed:
        y = margin + row * step
        box = (x, y + 2, x + swatch, y + 2 + swatch)
        if kind == "box":
            draw.rectangle(box, outline=colour, width=max(2, size // 7))
        else:  # the map panels' cross: black under white, on a map-like blue
            draw.rectangle(box, fill=(0, 90, 255))
            cx, cy, arm = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, swatch / 2 - 1
            for fill, w in (((0, 0, 0), 4), ((255, 255, 255), 2)):
                draw.line((cx - arm, cy, cx + arm, cy), fill=fill, width=w)
                draw.line((cx, cy - arm, cx, cy + arm), fill=fill, width=w)
        overlay_text.draw_text(draw, (x + swatch + 6, y), label, size)
    legend = np.ascontiguousarray(np.asarray(band)[..., ::-1])
    legend.flags.writeable = False
    return legend


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


def _peak(heat: np.ndarray) -> tuple[int, int] | None:
    """``(x, y)`` of the map's first maximum (raster order, as ``peak_row``/``peak_col``); None when empty."""
    if heat.max() <= heat.min():  # empty map: no peak
        return None
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(x), int(y)


def _mark_peak(panel: np.ndarray, peak: tuple[float, float] | None) -> None:
    """A white-on-black cross at ``peak`` (``(x, y)``; None: none), in place."""
    if peak is None:
        return
    size = max(6, panel.shape[1] // 30)
    for colour, width in (((0, 0, 0), 4), ((255, 255, 255), 2)):
        cv2.drawMarker(panel, (int(round(peak[0])), int(round(peak[1]))), colour, cv2.MARKER_CROSS, size * 2, width)


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
    header: Sequence[str] = (),
    tau: float | None = None,
) -> np.ndarray:
    """The picture with its boxes, then one panel per map, side by side, a colour bar, the ``header`` lines
    above and the legend strip below. See :func:`draw_overlay_and_thumbnail` for the arguments."""
    return draw_overlay_and_thumbnail(image_rgb, boxes, maps, captions, seen, map_boxes, header, tau)[0]


def draw_overlay_and_thumbnail(
    image_rgb: np.ndarray,
    boxes: np.ndarray,
    maps: Sequence[np.ndarray],
    captions: Sequence[list[str]],
    seen: np.ndarray | None = None,
    map_boxes: Sequence | None = None,
    header: Sequence[str] = (),
    tau: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The overlay and its thumbnail.

    Args:
        image_rgb: ``[H, W, 3]`` uint8, the network input (or the stored photo on its scoring grid).
        boxes: ``[N, 4]`` pixel-edge boxes in the same coordinates (green).
        maps: K ``[H, W]`` normalised maps, the judged one first; each map panel marks its peak with a cross.
        captions: K + 1 lists of lines, under the picture and under each map panel.
        seen: ``[H, W]`` bool, where the network saw the photo (original space); the rest is dimmed and
            carries no heat.
        map_boxes: K boxes, each ``(x1, y1, x2, y2)`` pixel-edge in the same coordinates (NaN: none): the box
            of each thresholded map (``box_*_tau``), drawn in magenta beside the ground truth.
        header: lines drawn across the top (the triage category and its reason).
        tau: the threshold of ``map_boxes`` (a fraction of the map's maximum), for the legend.
    Returns:
        The overlay ``[header + H' + captions + legend, (K + 1) W + bar, 3]`` and the thumbnail (the picture
        and the first map, each at most :data:`THUMB_SIDE` on its longer side, no text), BGR uint8.
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
        _draw_box(with_boxes, box, GREEN)
    panels = [with_boxes] + [_heat(with_boxes, heat) for heat in maps]
    if seen is not None:
        panels = [panels[0]] + [np.where(seen[..., None], panel, with_boxes) for panel in panels[1:]]
    peaks = [_peak(heat if seen is None else np.where(seen, heat, -1.0)) for heat in maps]
    for k, (panel, peak) in enumerate(zip(panels[1:], peaks)):
        if map_boxes is not None:
            _draw_box(panel, map_boxes[k], MAGENTA)
        _mark_peak(panel, peak)
    thumbnail = _thumbnail(panels[:2], peaks[0] if peaks else None)
    text_size = overlay_text.font_size_for(max(panel_width, MIN_PANEL_WIDTH))
    panels = [_text(p, c, text_size) for p, c in zip(panels, captions)]
    height = max(p.shape[0] for p in panels)
    panels = [np.vstack([p, np.full((height - p.shape[0], p.shape[1], 3), 255, np.uint8)]) for p in panels]
    row = np.hstack(panels + [_colour_bar(height)])
    parts = [row, _legend(row.shape[1], text_size, tau, map_boxes is not None)]
    if header:
        parts.insert(0, overlay_text.text_band(list(header), row.shape[1], text_size, background=HEADER_BACKGROUND))
    return np.vstack(parts), thumbnail


def _thumbnail(panels: Sequence[np.ndarray], peak: tuple[int, int] | None) -> np.ndarray:
    """The picture and the judged map side by side, each fitted into :data:`THUMB_SIDE` pixels, 2 px apart;
    the map's ``peak`` cross drawn again at the small size (scaled down, it would be a speck)."""
    height, width = panels[0].shape[:2]
    zoom = min(1.0, THUMB_SIDE / max(height, width))
    size = (max(1, round(width * zoom)), max(1, round(height * zoom)))
    small = [cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in panels]
    if len(small) > 1 and peak is not None:
        _mark_peak(small[1], ((peak[0] + 0.5) * zoom - 0.5, (peak[1] + 0.5) * zoom - 0.5))
    gap = np.full((size[1], 2, 3), 255, np.uint8)
    return np.hstack([small[0], gap, small[1]]) if len(small) > 1 else small[0]


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
    from pipeline.reports.triage import NO_LOOK_NEEDED, triage
    from pipeline.settings import TriageSettings

    categories = triage(_scalar_columns(table).to_pandas(), triage_settings or TriageSettings())
    return np.flatnonzero(~np.isin(categories.to_numpy(), NO_LOOK_NEEDED))


def _scalar_columns(table: pa.Table) -> pa.Table:
    """``table`` without its list columns (the off-box grids, MaxBoxAcc state): what triage reads, cheaply."""
    return table.select([f.name for f in table.schema if not pa.types.is_nested(f.type)])


def triage_lines(table: pa.Table, rows: np.ndarray, triage_settings=None) -> list[tuple[str, str]]:
    """``(triage, triage_reason)`` of the batch rows ``rows``, as the finished run's samples.parquet will
    have them (:func:`pipeline.reports.triage.triage_with_reasons` with ``report.triage``)."""
    from pipeline.reports.triage import triage_with_reasons
    from pipeline.settings import TriageSettings

    if rows.size == 0:
        return []
    frame = _scalar_columns(table).take(pa.array(rows)).to_pandas()
    out = triage_with_reasons(frame, triage_settings or TriageSettings())
    return list(zip(out["triage"].astype(str), out["triage_reason"].astype(str)))


def save_overlays(
    out_dir: Path,
    table: pa.Table,
    batch: Batch,
    maps,
    only_misclassified: bool = True,
    original=None,
    rows: np.ndarray | None = None,
    triage_settings=None,
) -> list[OverlayFailure]:
    """Write one JPEG per selected image of the batch (and its thumbnail under ``thumbs/``); returns the
    overlays that could not be made (drawing or encoding failed, or the file could not be written). A full
    disk is not such a failure: its ``OSError`` propagates, so that the run stops instead of failing every
    image after it. ``triage_settings`` (``report.triage``) give the category and reason each overlay names.

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
                "correct",
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
    for row, (category, reason) in zip(data, triage_lines(table, rows, triage_settings)):
        row["triage"], row["triage_reason"] = category, reason
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
    """Draw and write the overlay of the ``i``-th selected image (batch row ``rows[i]``) and its thumbnail.

    ``images``: ``[n, H, W, 3]`` uint8 network-input pictures and ``chosen_maps``: ``[n, K, H, W]`` normalised
    maps of the selected rows (``K`` = ``map_names``)."""
    boxes = batch.boxes.coords[rows[i]][batch.boxes.valid[rows[i]]].numpy()
    # A right prediction's predicted- and true-class maps are one map: one panel, both names on it.
    same = bool(row["correct"])
    shown = [k for k, m in enumerate(map_names) if not (same and m == "true")]
    captions = [_image_caption(row)] + [_map_caption(row, map_names[k], same) for k in shown]
    header = [f"triage: {row['triage']}", f"why: {row['triage_reason']}"] if row.get("triage") else []
    map_boxes = _map_boxes(row, [map_names[k] for k in shown], tau)
    tau_value = int(tau[len("tau") :]) / 100 if tau else None
    whole = (
        _original_picture(original, int(rows[i]), batch.boxes_stored.valid[rows[i]]) if original is not None else None
    )
    if whole is not None:
        image, boxes, grid_maps, seen = whole
        if map_boxes is not None:  # box columns are in stored pixels: back onto the scoring grid
            map_boxes = _boxes_on_grid(map_boxes, original[0].grid_scale[int(rows[i])])
        maps = [grid_maps[k] for k in shown]
    else:
        image, seen, maps = np.ascontiguousarray(images[i]), None, [chosen_maps[i][k] for k in shown]
    picture, thumbnail = draw_overlay_and_thumbnail(
        image, boxes, maps, captions, seen=seen, map_boxes=map_boxes, header=header, tau=tau_value
    )
    _write_picture_and_thumbnail(out_dir, row["id"], picture, thumbnail)


def _image_caption(row: dict) -> list[str]:
    """The first panel's lines: the image's id, true class and prediction with its confidence."""
    return [
        f"{row['id'][:40]}",
        f"true: {row['label_name'][:30]}",
        f"pred: {str(row['pred_name'])[:30]} ({_fmt(row['confidence'])})",
    ]


def _map_caption(row: dict, m: str, same: bool) -> list[str]:
    """The lines of map ``m``'s panel: its class, its box scores and its pointing game or probability.
    ``same``: a right prediction, whose ``pred`` panel is also the true class's map."""
    scores = f"in box {_fmt(row[f'{m}_energy_in_box'])}, excess {_fmt(row[f'{m}_excess_energy'])}"
    if m == "pred" and same:
        return [
            f"map of pred = true: {str(row['pred_name'])[:20]}",
            scores,
            f"pointing game: {_hit(row['pred_pointing_hit'])}",
        ]
    if m == "pred":
        return [
            f"map of pred: {str(row['pred_name'])[:26]}",
            scores,
            f"pointing game: {_hit(row['pred_pointing_hit'])}",
        ]
    if m == "true":
        return [
            f"map of true: {row['label_name'][:26]}",
            scores,
            f"pointing game: {_hit(row['true_pointing_hit'])}, p(true) {_fmt(row['prob_true'])}",
        ]
    return [f"map of {m}: {str(row[f'{m}_class_name'])[:26]}", scores, f"p({m}) {_fmt(row[f'{m}_prob'])}"]


def _map_boxes(row: dict, shown_names: list[str], tau: str | None) -> tuple[np.ndarray, ...] | None:
    """The thresholded maps' boxes of the shown maps, each ``[4]`` float64 ``(x1, y1, x2, y2)`` in the
    picture's pixels (NaN for an empty map); None without a ``tau`` box column."""
    if not tau:
        return None
    return tuple(
        np.array([row[f"{m}_box_{c}_{tau}"] for c in ("x1", "y1", "x2", "y2")], dtype=np.float64) for m in shown_names
    )


def _boxes_on_grid(map_boxes: tuple[np.ndarray, ...], grid_scale: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Each ``[4]`` box from stored-image pixels onto the scoring grid; ``grid_scale`` ``[2]`` is the image's
    ``(x, y)`` grid pixels per stored pixel."""
    scale_x, scale_y = (float(v) for v in grid_scale)
    return tuple(b * np.array([scale_x, scale_y, scale_x, scale_y]) for b in map_boxes)


def _write_picture_and_thumbnail(out_dir: Path, sample_id: str, picture: np.ndarray, thumbnail: np.ndarray) -> None:
    """``picture`` as ``<id>.jpg`` in ``out_dir`` and ``thumbnail`` under ``thumbs/``, each written atomically."""
    name = f"{safe_file_stem(sample_id)}.jpg"
    write_jpeg_atomic(out_dir / name, picture)
    (out_dir / THUMB_DIR).mkdir(exist_ok=True)
    write_jpeg_atomic(out_dir / THUMB_DIR / name, thumbnail)


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
