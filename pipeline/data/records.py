"""The sample record every dataset source yields, and the class list.

A record is what the readers know about one image before it is decoded: where it is, its label as a
model output index, and its boxes in pixel-edge coordinates of the *stored* image (see
``docs`` in the README: a box ``(x1, y1, x2, y2)`` covers columns ``x1 <= x < x2`` and rows
``y1 <= y < y2``). Readers never raise for one bad entry: they return a record with ``problem`` set,
and the run turns it into a row of ``errors.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SampleRecord:
    """One image of the dataset, as read from its annotation.

    Attributes:
        sample_id: unique id of the sample (file stem for XML datasets).
        image_path: absolute path of the image file ("" when the annotation has no image).
        label: index of the true class in the model's outputs (-1 when unknown; then ``problem`` is set).
        boxes: ``[N, 4]`` float32 ``(x1, y1, x2, y2)``, pixel-edge coordinates of the stored image.
        annotated_size: ``(width, height)`` the annotation states, or None.
        problem: why this sample cannot be audited (``None`` for a good record).
        extra: reader-specific columns carried to the report (e.g. ``marker_present``).
    """

    sample_id: str
    image_path: str
    label: int
    boxes: np.ndarray
    annotated_size: tuple[int, int] | None = None
    problem: str | None = None
    extra: dict = field(default_factory=dict)


def empty_boxes() -> np.ndarray:
    """A ``[0, 4]`` float32 array: the boxes of an image without annotation."""
    return np.zeros((0, 4), dtype=np.float32)


@dataclass(frozen=True)
class ClassList:
    """Class names in model-output order.

    ``keys`` are what annotations use (e.g. WordNet ids ``n01440764``); ``names`` are what people read
    (``tench``). For datasets whose annotations use the readable name, keys == names.
    """

    keys: tuple[str, ...]
    names: tuple[str, ...]

    def index(self) -> dict[str, int]:
        """Map both keys and names to their output index (keys win on a clash)."""
        lookup = {name: i for i, name in enumerate(self.names)}
        lookup.update({key: i for i, key in enumerate(self.keys)})
        return lookup

    def __len__(self) -> int:
        return len(self.keys)


def read_class_file(path: str | Path) -> ClassList:
    """Read a classes file: one class per line, in output order, ``<key> [<name>]``.

    ``n01440764 tench`` gives key ``n01440764`` and name ``tench``; a line with one word uses it for both.
    Blank lines and lines starting with ``#`` are skipped.
    """
    keys, names = [], []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        keys.append(parts[0])
        names.append(parts[1].strip() if len(parts) > 1 else parts[0])
    if len(set(keys)) != len(keys):
        raise ValueError(f"classes file {path} lists a class twice")
    return ClassList(tuple(keys), tuple(names))
