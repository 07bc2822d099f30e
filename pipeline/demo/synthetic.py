"""The built-in synthetic dataset: drawn shapes on cluttered backgrounds, with a planted shortcut.

Users who download nothing still get a dataset whose audit has a known answer. Every image shows one or
two instances of one shape class (disc, square, triangle, ...) on a noisy, cluttered background. In the
training split one class (``SyntheticSpec.marker_class``) carries a small black-and-white checkerboard
(the *marker*) placed away from the object (by default on all of its images); no other class has it. A model trained on it
learns the marker as a shortcut. In the audit split the marker appears on about half of the images of
every class, independently of the class, so the audit can show Grad-CAM maps that peak on the marker and
images of other classes that flip to the marker class.

Layout written by :func:`generate_synthetic` (``<id>`` is ``train_000001``, ``audit_000001``, ...; ids
never start with a class name followed by ``_``, which the XML reader would take as the label)::

    root/classes.txt                         one class name per line, in model-output order
    root/spec.json                           the spec, written last: its presence marks a complete dataset
    root/{train,audit}/images/<id>.jpg       RGB JPEG, width and height each in [min_side, max_side]
    root/{train,audit}/annotations/<id>.xml  ILSVRC / PASCAL VOC XML, one <object> per instance
    root/{train,audit}/metadata.csv          id, label, marker_present (0/1), n_instances, object_scale,
                                             width, height, marker_x1, marker_y1, marker_x2, marker_y2
    root/{train,audit}/report_metadata.csv   the same without label, width, height (written on first use by
                                             :func:`report_metadata`: the columns an audit joins to its rows)

Coordinates: images are ``[H, W, 3]`` arrays, ``x`` is the column and ``y`` the row. Boxes in this module
are pixel-edge ``(x1, y1, x2, y2)`` covering columns ``x1 <= x < x2`` and rows ``y1 <= y < y2``; the XML
stores them 1-based inclusive (``xmin = x1 + 1``, ``xmax = x2``), as ImageNet does. Object boxes are the
tight bounds of the drawn (anti-aliased) object mask, so they are exact by construction.

Generation is deterministic (same spec gives byte-identical files: every image has its own random stream
seeded by ``(seed, split, index)``) and atomic (written into a temporary sibling folder, renamed into place).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline import logs

logger = logging.getLogger("pipeline.demo")
SPLITS = ("train", "audit")
# Fixed-point precision of the polygon vertices given to cv2 (2**4 = 1/16 pixel), so shapes are smooth.
_SHIFT = 4
# Number of vertices used for round outlines (discs, rings, crescents).
_ROUND_VERTICES = 48


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the synthetic dataset; two equal specs give byte-identical files.

    Attributes:
        seed: master seed of every random draw.
        n_train: number of training images.
        n_audit: number of audit images.
        min_side: smallest image width or height, in pixels.
        max_side: largest image width or height, in pixels (each side is drawn independently ...).
        max_image_aspect: ... then the longer side is cut to at most this many times the shorter one.
        class_names: class names in model-output order; each must be a shape known to this module.
        marker_class: the class that carries the marker in the training split.
        marker_prob_train: fraction of ``marker_class`` training images that carry the marker.
        marker_prob_train_other: fraction of the other classes' training images that carry it (0: never).
        marker_prob_audit: fraction of the audit images of *every* class that carry the marker.
        marker_cells: the marker is a ``marker_cells x marker_cells`` checkerboard ...
        marker_cell_px: ... of square cells this many pixels wide (side = cells * cell_px).
        marker_margin: least gap in pixels between the marker and any object box.
        two_instance_prob: probability that an image shows two instances of its class.
        min_object_scale: smallest object size as a fraction of the image's shorter side.
        max_object_scale: largest object size as a fraction of the image's shorter side.
        max_object_aspect: objects are stretched by a random aspect ratio in [1 / this, this].
        max_rotation_deg: objects are rotated by a random angle in [-this, this] degrees from upright.
        clutter: draw background clutter and noise (False gives flat backgrounds, for tests).
        jpeg_quality: JPEG quality of the written images (0-100).
        version: bump when the drawing code changes, so cached datasets are regenerated.
    """

    seed: int = 0
    n_train: int = 3000
    n_audit: int = 1200
    min_side: int = 96
    max_side: int = 192
    class_names: tuple[str, ...] = ("disc", "square", "triangle", "cross", "star", "ring", "crescent", "arrow")
    marker_class: str = "triangle"
    marker_prob_train: float = 1.0
    marker_prob_train_other: float = 0.0
    marker_prob_audit: float = 0.5
    marker_cells: int = 3
    marker_cell_px: int = 4
    marker_margin: int = 4
    two_instance_prob: float = 0.15
    max_image_aspect: float = 1.5
    min_object_scale: float = 0.27
    max_object_scale: float = 0.6
    max_object_aspect: float = 1.35
    max_rotation_deg: float = 30.0
    clutter: bool = True
    jpeg_quality: int = 90
    version: int = 1

    def __post_init__(self) -> None:
        unknown = [name for name in self.class_names if name not in _SHAPES]
        if unknown:
            raise ValueError(f"unknown shape classes {unknown}; known: {sorted(_SHAPES)}")
        if len(set(self.class_names)) != len(self.class_names) or len(self.class_names) < 2:
            raise ValueError("class_names must list at least two distinct classes")
        if any(name in SPLITS for name in self.class_names):
            raise ValueError(f"class names must differ from the split names {SPLITS} (ids start with them)")
        if self.marker_class not in self.class_names:
            raise ValueError(f"marker_class {self.marker_class!r} is not one of class_names")
        if not 32 <= self.min_side <= self.max_side:
            raise ValueError("need 32 <= min_side <= max_side")
        if self.marker_side + 2 * self.marker_margin >= self.min_side // 3:
            raise ValueError("marker too large for the smallest image")

    @property
    def marker_side(self) -> int:
        """Side of the square marker, in pixels."""
        return self.marker_cells * self.marker_cell_px

    def as_dict(self) -> dict:
        """The spec as JSON-friendly plain types (tuples become lists)."""
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        return data

    def short_hash(self) -> str:
        """A 10-hex-digit digest of every field: the cache key of the generated dataset."""
        text = json.dumps(self.as_dict(), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


@dataclass
class DrawnSample:
    """One rendered image with what the annotation needs.

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB.
        boxes: one pixel-edge ``(x1, y1, x2, y2)`` per instance, tight around its drawn mask.
        masks: one ``[H, W]`` uint8 coverage mask (0-255, anti-aliased) per instance; box = bounds of mask > 0.
        marker_box: pixel-edge box of the marker, or None when the image has none.
        object_scale: drawn object size as a fraction of the image's shorter side (mean over instances).
    """

    image: np.ndarray
    boxes: list[tuple[int, int, int, int]]
    masks: list[np.ndarray]
    marker_box: tuple[int, int, int, int] | None
    object_scale: float


# ----------------------------------------------------------------------------------------------- shapes
# Each shape is a list of (polygon, fill) pairs in unit coordinates (roughly within [-1, 1]^2); polygons
# are filled in order with 255 (solid) or 0 (hole), which is how rings and crescents get their holes.


def _circle(radius: float, cx: float = 0.0, cy: float = 0.0, n: int = _ROUND_VERTICES) -> np.ndarray:
    """``[n, 2]`` vertices of a circle of ``radius`` centred on ``(cx, cy)``."""
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)


def _regular(n: int, radius: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    """``[n, 2]`` vertices of a regular polygon (first vertex pointing up, since y grows downwards)."""
    angles = phase + np.arange(n) * 2.0 * np.pi / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    """``[2 * points, 2]`` vertices of a star alternating outer radius 1 and ``inner``."""
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross(arm: float = 0.34) -> np.ndarray:
    """``[12, 2]`` vertices of a plus sign whose arms are ``2 * arm`` wide."""
    a = arm
    return np.array(
        [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)],
        dtype=np.float64,
    )


_ARROW = np.array([(-1, -0.28), (0.15, -0.28), (0.15, -0.75), (1, 0), (0.15, 0.75), (0.15, 0.28), (-1, 0.28)])

_SHAPES: dict[str, list[tuple[np.ndarray, int]]] = {
    "disc": [(_circle(1.0), 255)],
    "square": [(np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=np.float64), 255)],
    "triangle": [(_regular(3, 1.0), 255)],
    "cross": [(_cross(), 255)],
    "star": [(_star(), 255)],
    "ring": [(_circle(1.0), 255), (_circle(0.58), 0)],
    "crescent": [(_circle(1.0), 255), (_circle(0.85, cx=0.5), 0)],
    "arrow": [(_ARROW, 255)],
    "hexagon": [(_regular(6, 1.0), 255)],
}


def known_shapes() -> tuple[str, ...]:
    """Names of the shapes this module can draw (valid ``class_names``)."""
    return tuple(sorted(_SHAPES))


# ------------------------------------------------------------------------------------------- rendering


def _random_colour(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    """A ``[3]`` float32 RGB colour (0-255) with random hue and saturation/value in the given ranges."""
    hsv = np.array(
        [[[rng.uniform(0, 180), rng.uniform(*saturation) * 255, rng.uniform(*value) * 255]]], dtype=np.float32
    )
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _background(rng: np.random.Generator, width: int, height: int, clutter: bool) -> tuple[np.ndarray, np.ndarray]:
    """A ``[H, W, 3]`` float32 background and its base colour ``[3]``.

    With clutter: low-frequency colour blobs, sometimes faint stripes, a few low-contrast lines and a few
    vivid distractor fragments (short arcs and strokes that look like pieces of objects but are none).
    """
    base = _random_colour(rng, (0.05, 0.5), (0.25, 0.85))
    image = np.empty((height, width, 3), dtype=np.float32)
    image[:] = base
    if not clutter:
        return image, base
    # Smooth blobs: a coarse random grid upsampled with cubic interpolation (cheap and vectorised).
    grid = rng.standard_normal((int(rng.integers(3, 8)), int(rng.integers(3, 8)), 3)).astype(np.float32)
    image += cv2.resize(grid * rng.uniform(8, 22), (width, height), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.35:
        theta, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        phase = (xs * np.cos(theta) + ys * np.sin(theta)) * (2 * np.pi / period)
        image += (np.sin(phase) * rng.uniform(5, 14))[..., None]
    for _ in range(int(rng.integers(1, 6))):
        colour = tuple(float(c) for c in np.clip(base + rng.uniform(-35, 35, 3), 0, 255))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(image, p1, p2, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
    _draw_distractors(rng, image)
    return image, base


def _draw_distractors(rng: np.random.Generator, image: np.ndarray) -> None:
    """Draw 0-3 object-like fragments (arcs, thick strokes) in vivid colours onto ``image`` in place."""
    height, width = image.shape[:2]
    for _ in range(int(rng.integers(0, 4))):
        colour = tuple(float(c) for c in _random_colour(rng, (0.4, 1.0), (0.4, 1.0)))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        size = int(rng.integers(4, max(6, min(width, height) // 8)))
        thickness = int(rng.integers(2, 4))
        if rng.random() < 0.5:
            start = float(rng.uniform(0, 360))
            cv2.ellipse(
                image, centre, (size, size), 0.0, start, start + rng.uniform(60, 160), colour, thickness, cv2.LINE_AA
            )
        else:
            angle = rng.uniform(0, np.pi)
            end = (int(centre[0] + size * np.cos(angle)), int(centre[1] + size * np.sin(angle)))
            cv2.line(image, centre, end, colour, thickness, cv2.LINE_AA)


def _shape_vertices(shape: str, size: float, aspect: float, angle: float) -> list[tuple[np.ndarray, int]]:
    """The shape's polygons scaled to ``size`` pixels (half-extent), stretched by ``aspect``, rotated.

    Returns ``(vertices [n, 2] float x/y relative to the shape centre, fill)`` pairs.
    """
    stretch = np.array([size * np.sqrt(aspect), size / np.sqrt(aspect)])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return [((points * stretch) @ rotation.T, fill) for points, fill in _SHAPES[shape]]


def _extent(polygons: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ``[2]`` x/y corners of the solid polygons (holes never enlarge a shape)."""
    solid = np.concatenate([points for points, fill in polygons if fill])
    return solid.min(axis=0), solid.max(axis=0)


def _rasterise(polygons: list[tuple[np.ndarray, int]], centre: np.ndarray, width: int, height: int) -> np.ndarray:
    """Fill the polygons, shifted to ``centre``, into a ``[H, W]`` uint8 anti-aliased coverage mask."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for points, fill in polygons:
        fixed = np.round((points + centre) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(mask, [fixed], int(fill), cv2.LINE_AA, _SHIFT)
    return mask


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight pixel-edge box ``(x1, y1, x2, y2)`` of the non-zero pixels of a ``[H, W]`` mask."""
    columns = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    return int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1


def _regions(rng: np.random.Generator, width: int, height: int, count: int) -> list[tuple[int, int, int, int]]:
    """Disjoint pixel-edge regions that each hold one instance: the whole image, or two halves.

    Two instances split the image across its longer side at 40-60%, so they never overlap.
    """
    if count == 1:
        return [(0, 0, width, height)]
    if width >= height:
        cut = int(round(width * rng.uniform(0.4, 0.6)))
        return [(0, 0, cut, height), (cut, 0, width, height)]
    cut = int(round(height * rng.uniform(0.4, 0.6)))
    return [(0, 0, width, cut), (0, cut, width, height)]


def _place_objects(
    rng: np.random.Generator, spec: SyntheticSpec, shape: str, width: int, height: int, count: int
) -> tuple[list[np.ndarray], float]:
    """Draw ``count`` instances of ``shape`` as coverage masks inside disjoint regions of the image.

    Returns the ``[H, W]`` uint8 masks and the mean object scale (object extent / shorter image side).
    The largest extent is capped so that a marker (plus margins) always fits beside the objects.
    """
    short = min(width, height)
    # Leave room for marker + margin on at least one side of any object, keep 2 px from the border.
    cap = short - 2 * (spec.marker_side + spec.marker_margin + 2)
    masks, scales = [], []
    for x0, y0, x1, y1 in _regions(rng, width, height, count):
        room = min(x1 - x0, y1 - y0) - 4
        scale = rng.uniform(spec.min_object_scale, spec.max_object_scale) * (0.75 if count > 1 else 1.0)
        aspect = float(np.exp(rng.uniform(-1.0, 1.0) * np.log(spec.max_object_aspect)))
        angle = np.deg2rad(rng.uniform(-spec.max_rotation_deg, spec.max_rotation_deg))
        polygons = _shape_vertices(shape, 0.5 * scale * short, aspect, angle)
        low, high = _extent(polygons)
        span = float((high - low).max())
        shrink = min(1.0, cap / span, room / span)
        if shrink < 1.0:  # rotated shapes can exceed the cap: shrink rather than clip
            polygons = [(points * shrink, fill) for points, fill in polygons]
            low, high = low * shrink, high * shrink
        # Choose the centre so the polygon (plus 1 px of anti-aliasing) stays inside the region.
        cx = rng.uniform(x0 + 2 - low[0], max(x0 + 2 - low[0], x1 - 2 - high[0]))
        cy = rng.uniform(y0 + 2 - low[1], max(y0 + 2 - low[1], y1 - 2 - high[1]))
        masks.append(_rasterise(polygons, np.array([cx, cy]), width, height))
        scales.append(float((high - low).max()) / short)
    return masks, float(np.mean(scales))


def _marker_position(
    rng: np.random.Generator, boxes: list[tuple[int, int, int, int]], width: int, height: int, side: int, margin: int
) -> tuple[int, int] | None:
    """A random top-left ``(x, y)`` for a ``side``-pixel marker at least ``margin`` px from every box.

    All valid positions are enumerated on a boolean grid (vectorised), then one is drawn uniformly; the
    marker also keeps 1 px from the image border. Returns None when no position is valid.
    """
    # Grid index = top-left coordinate; index 0 and the last index are dropped to keep 1 px from the border.
    free = np.zeros((height - side, width - side), dtype=bool)
    free[1:, 1:] = True
    for x1, y1, x2, y2 in boxes:
        # The marker [x, x + side) is too close when x + side + margin > x1 and x < x2 + margin.
        xa, xb = max(0, x1 - margin - side + 1), max(0, x2 + margin)
        ya, yb = max(0, y1 - margin - side + 1), max(0, y2 + margin)
        free[ya:yb, xa:xb] = False
    candidates = np.flatnonzero(free)
    if candidates.size == 0:
        return None
    y, x = np.unravel_index(candidates[int(rng.integers(candidates.size))], free.shape)
    return int(x), int(y)


def _draw_marker(image: np.ndarray, x: int, y: int, cells: int, cell_px: int, rng: np.random.Generator) -> None:
    """Paint a black-and-white checkerboard with top-left corner ``(x, y)`` onto ``image`` in place.

    The board's phase (which corner is white) is random, so the model must learn the pattern, not a pixel.
    """
    pattern = (np.add.outer(np.arange(cells), np.arange(cells)) + int(rng.integers(2))) % 2
    board = np.kron(pattern, np.ones((cell_px, cell_px))).astype(np.float32) * 235.0 + 10.0
    side = cells * cell_px
    image[y : y + side, x : x + side] = board[..., None]


def _object_colour(rng: np.random.Generator, base: np.ndarray, min_contrast: float = 90.0) -> np.ndarray:
    """A vivid ``[3]`` float32 RGB object colour whose summed |difference| to ``base`` is >= min_contrast.

    Up to ten random draws; then the per-channel extreme farthest from the background (always enough).
    """
    for _ in range(10):
        colour = _random_colour(rng, (0.45, 1.0), (0.35, 1.0))
        if np.abs(colour - base).sum() >= min_contrast:
            return colour
    return np.where(base > 127.5, 0.0, 255.0).astype(np.float32)


def _image_size(rng: np.random.Generator, spec: SyntheticSpec) -> tuple[int, int]:
    """Random ``(width, height)``: each side in [min_side, max_side], aspect ratio at most max_image_aspect.

    The cap matters because the model's input resizes every image to a square: very elongated images
    would squash their shapes beyond recognition.
    """
    width = int(rng.integers(spec.min_side, spec.max_side + 1))
    height = int(rng.integers(spec.min_side, spec.max_side + 1))
    longest = int(min(width, height) * spec.max_image_aspect)
    return min(width, longest), min(height, longest)


def render_sample(spec: SyntheticSpec, label: int, with_marker: bool, rng: np.random.Generator) -> DrawnSample:
    """Draw one image of class ``class_names[label]`` (optionally with the marker) from ``rng``.

    Returns the ``[H, W, 3]`` uint8 RGB image with exact pixel-edge boxes (tight around each instance's
    coverage mask) and the marker box. Order of drawing: background and clutter, objects, marker, noise.
    """
    width, height = _image_size(rng, spec)
    count = 2 if rng.random() < spec.two_instance_prob else 1
    image, base = _background(rng, width, height, spec.clutter)
    for _ in range(100):
        masks, scale = _place_objects(rng, spec, spec.class_names[label], width, height, count)
        boxes = [_mask_box(mask) for mask in masks]
        position = _marker_position(rng, boxes, width, height, spec.marker_side, spec.marker_margin)
        if position is not None:  # always draw a layout with room for a marker, marked or not
            break
    else:
        raise RuntimeError("could not place a marker beside the objects; the spec's sizes are inconsistent")
    colour = _object_colour(rng, base)
    for mask in masks:
        alpha = mask.astype(np.float32)[..., None] * (1.0 / 255.0)
        shade = colour * rng.uniform(0.85, 1.1)  # per-instance brightness jitter
        image = image * (1.0 - alpha) + shade * alpha
    marker_box = None
    if with_marker:
        x, y = position
        _draw_marker(image, x, y, spec.marker_cells, spec.marker_cell_px, rng)
        marker_box = (x, y, x + spec.marker_side, y + spec.marker_side)
    if spec.clutter:
        image += rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(2.0, 7.0)
    pixels = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return DrawnSample(pixels, boxes, masks, marker_box, scale)


# ----------------------------------------------------------------------------------------- annotation


def voc_xml(
    sample_id: str, folder: str, width: int, height: int, name: str, boxes: list[tuple[int, int, int, int]]
) -> str:
    """ILSVRC-style XML for one image; boxes (pixel-edge) are written 1-based inclusive.

    A pixel-edge box ``(x1, y1, x2, y2)`` becomes ``xmin = x1 + 1, ymin = y1 + 1, xmax = x2, ymax = y2``.
    """
    lines = [
        "<annotation>",
        f"\t<folder>{folder}</folder>",
        f"\t<filename>{sample_id}</filename>",
        "\t<source>\n\t\t<database>pipeline synthetic</database>\n\t</source>",
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for x1, y1, x2, y2 in boxes:
        lines += [
            "\t<object>",
            f"\t\t<name>{name}</name>",
            "\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x1 + 1}</xmin>\n\t\t\t<ymin>{y1 + 1}</ymin>\n\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>\n")
    return "\n".join(lines)


METADATA_COLUMNS = (
    "id",
    "label",
    "marker_present",
    "n_instances",
    "object_scale",
    "width",
    "height",
    "marker_x1",
    "marker_y1",
    "marker_x2",
    "marker_y2",
)


# metadata.csv's columns that repeat the audit report's own by construction (label = label_name, the image's
# width and height): left out of what the audit joins, silently, since a warning would name nothing to fix.
REPORT_DUPLICATES = ("label", "width", "height")


def report_metadata(split_dir: Path) -> Path:
    """``split_dir/report_metadata.csv``: the split's ``metadata.csv`` without :data:`REPORT_DUPLICATES`, the
    metadata the audit joins for ``data=synthetic`` (the report keeps its own ``label``, ``width``, ``height``
    and would otherwise warn that the metadata's were left out). Written once (atomically; a concurrent writer
    writes the same bytes), then reused."""
    import pandas as pd

    from pipeline.atomic import atomic_path

    out = Path(split_dir) / "report_metadata.csv"
    if not out.is_file():
        frame = pd.read_csv(Path(split_dir) / "metadata.csv", dtype=str, keep_default_na=False)
        with atomic_path(out) as temp:
            frame.drop(columns=[c for c in REPORT_DUPLICATES if c in frame]).to_csv(temp, index=False)
    return out


def _metadata_row(sample_id: str, name: str, sample: DrawnSample) -> list:
    """One metadata.csv row; the marker box (pixel-edge) is empty when there is no marker."""
    height, width = sample.image.shape[:2]
    marker = list(sample.marker_box) if sample.marker_box else ["", "", "", ""]
    present = int(sample.marker_box is not None)
    return [sample_id, name, present, len(sample.boxes), f"{sample.object_scale:.4f}", width, height, *marker]


# ----------------------------------------------------------------------------------------- generation


def sample_rng(spec: SyntheticSpec, split: str, index: int) -> np.random.Generator:
    """The random stream of image ``index`` (0-based) of ``split``.

    One independent stream per image, so the files do not depend on generation order and a test can
    re-render any sample exactly.
    """
    return np.random.default_rng([spec.seed, SPLITS.index(split), index])


def split_plan(spec: SyntheticSpec, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``[N]`` int and marker flags ``[N]`` bool of a split, exactly balanced.

    Classes are equally frequent (shuffled). Within each class, exactly ``round(p * n_class)`` images
    carry the marker, with ``p`` from the spec: in training ``marker_prob_train`` for the marker class and
    ``marker_prob_train_other`` for the others; in the audit ``marker_prob_audit`` for every class.
    """
    n = spec.n_train if split == "train" else spec.n_audit
    # Second entry 10 + split keeps this stream apart from every per-image stream (second entry 0 or 1).
    rng = np.random.default_rng([spec.seed, 10 + SPLITS.index(split), 0])
    labels = rng.permutation(np.arange(n) % len(spec.class_names))
    marker_index = spec.class_names.index(spec.marker_class)
    flags = np.zeros(n, dtype=bool)
    for label in range(len(spec.class_names)):
        members = np.flatnonzero(labels == label)
        if split == "audit":
            prob = spec.marker_prob_audit
        else:
            prob = spec.marker_prob_train if label == marker_index else spec.marker_prob_train_other
        chosen = rng.permutation(members)[: int(round(prob * members.size))]
        flags[chosen] = True
    return labels, flags


def _write_split(root: Path, spec: SyntheticSpec, split: str) -> None:
    """Render and write every image, XML file and the metadata.csv of one split under ``root/split``."""
    image_dir, xml_dir = root / split / "images", root / split / "annotations"
    image_dir.mkdir(parents=True)
    xml_dir.mkdir(parents=True)
    labels, flags = split_plan(spec, split)
    rows = []
    for index, (label, with_marker) in enumerate(zip(labels.tolist(), flags.tolist())):
        sample_id = f"{split}_{index + 1:06d}"
        sample = render_sample(spec, label, with_marker, sample_rng(spec, split, index))
        name = spec.class_names[label]
        ok, encoded = cv2.imencode(".jpg", sample.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {sample_id}")
        (image_dir / f"{sample_id}.jpg").write_bytes(encoded.tobytes())
        height, width = sample.image.shape[:2]
        xml = voc_xml(sample_id, split, width, height, name, sample.boxes)
        (xml_dir / f"{sample_id}.xml").write_text(xml, encoding="utf-8")
        rows.append(_metadata_row(sample_id, name, sample))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METADATA_COLUMNS)
    writer.writerows(rows)
    (root / split / "metadata.csv").write_text(buffer.getvalue(), encoding="utf-8")


def _spec_text(spec: SyntheticSpec) -> str:
    """The completion sentinel's content: the spec as sorted JSON."""
    return json.dumps(spec.as_dict(), sort_keys=True, indent=1) + "\n"


def is_complete(root: Path, spec: SyntheticSpec) -> bool:
    """True when ``root`` holds a finished dataset for exactly this spec (its spec.json matches)."""
    sentinel = Path(root) / "spec.json"
    try:
        return sentinel.read_text(encoding="utf-8") == _spec_text(spec)
    except OSError:
        return False


def generate_synthetic(root: Path, spec: SyntheticSpec) -> Path:
    """Generate the dataset of ``spec`` at ``root`` (replacing what is there) and return ``root``.

    Everything is written into a temporary sibling folder which is renamed to ``root`` only when
    complete (``spec.json`` last), so an interrupted run never leaves a dataset that looks complete.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        (temp / "classes.txt").write_text("".join(f"{name}\n" for name in spec.class_names), encoding="utf-8")
        for split in SPLITS:
            _write_split(temp, spec, split)
        (temp / "spec.json").write_text(_spec_text(spec), encoding="utf-8")
        _move_into_place(temp, root)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return root


def _move_into_place(temp: Path, root: Path) -> None:
    """Rename the finished ``temp`` folder to ``root``; an existing ``root`` is moved aside, then deleted."""
    old = None
    if root.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.replace(root, old / "data")
    os.replace(temp, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def ensure_synthetic(cache_dir: Path, spec: SyntheticSpec) -> Path:
    """Return ``cache_dir/synthetic-<spec hash>``, generating it first unless it is already complete.

    Safe against a concurrent generator: if another process finished first, its copy is kept.
    """
    root = Path(cache_dir) / f"synthetic-{spec.short_hash()}"
    if is_complete(root, spec):
        return root
    images = spec.n_train + spec.n_audit
    logs.event(
        logger,
        "data_generation",
        f"built-in data: generating {spec.n_train} + {spec.n_audit} synthetic images into {root} (first use of "
        "this data.synthetic spec; cached afterwards)",
        images=images,
        root=str(root),
    )
    start = time.perf_counter()
    try:
        generate_synthetic(root, spec)
    except OSError:
        if not is_complete(root, spec):  # lost a rename race to another process that wrote the same data: fine
            raise
    seconds = time.perf_counter() - start
    logs.event(
        logger,
        "data_generated",
        f"built-in data: {images} images generated in {seconds:.1f} s",
        images=images,
        seconds=round(seconds, 3),
        root=str(root),
    )
    return root
