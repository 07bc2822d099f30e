"""Tabular manifests: one CSV, Parquet or JSONL file listing image paths, labels and boxes.

Columns (chosen by the file suffix: ``.csv``, ``.parquet``, ``.jsonl`` / ``.ndjson``):

- ``path`` (required): the image file, relative to the manifest's folder. An absolute path, or one that
  leaves the folder through ``..``, is accepted only when it stays inside the folder or when
  ``data.allow_outside_root=true`` (``allow_outside_root=True`` here); otherwise the sample is reported.
- ``label`` (required): a class key or name of the ``ClassList``, or an integer output index.
- ``id`` (optional): the sample id; by default the path's stem, made unique with a ``-2``, ``-3`` ...
  suffix.
- boxes, either as a list column ``boxes`` holding ``[[x1, y1, x2, y2], ...]`` per row (a JSON string in
  CSV), or as columns ``x1, y1, x2, y2`` holding one box per row. Coordinates are pixel-edge
  coordinates of the stored image: a box covers columns ``x1 <= x < x2`` and rows ``y1 <= y < y2``;
  with ``data.box_units=normalized`` they are fractions of the image's width and height (0..1).

Rows with the same path are one sample: their boxes are concatenated (this is how the one-row-per-box
layout is written) and their labels must agree. A row whose ``x1..y2`` are all empty adds no box, so an
image without box is one such row. Like every reader, a bad entry becomes a record with ``problem`` set;
only a file that cannot be read as a manifest at all (unknown suffix, unreadable, missing column) raises
``ValueError``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from pipeline.data.records import ClassList, Problem, SampleRecord, empty_boxes, unusable_record

REQUIRED_COLUMNS = ("path", "label")
BOX_COLUMNS = ("x1", "y1", "x2", "y2")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
NAME_MAX_BYTES = 255  # longest file or folder name (one path component) of ext4, XFS, btrfs, NTFS, APFS


# --------------------------------------------------------------------------------------------------
# Helpers shared with the COCO reader (paths and ids follow the same rules in every tabular source).
# --------------------------------------------------------------------------------------------------


def resolve_image_path(root: Path, name: str, allow_outside_root: bool = False) -> tuple[Path | None, Problem | None]:
    """Turn an annotation's file name into an absolute path under ``root``.

    The containment check is lexical (``..`` is collapsed, symlinks are *not* followed): a dataset may
    legitimately symlink its images from elsewhere, while an annotation file must not be able to point
    at arbitrary files through ``..`` or an absolute path.

    Returns:
        ``(path, None)`` with the absolute, normalised path, or ``(None, problem)`` (``MissingImage`` for
        an empty name or a component longer than :data:`NAME_MAX_BYTES`, which no file can have and
        which the OS refuses with ENAMETOOLONG; ``PathOutsideRoot``).
    """
    if not name or not name.strip():
        return None, Problem("MissingImage", "empty file name")
    too_long = [part for part in Path(name).parts if len(os.fsencode(part)) > NAME_MAX_BYTES]
    if too_long:
        return None, Problem(
            "MissingImage",
            f"file name {too_long[0][:40]}... is too long ({len(os.fsencode(too_long[0]))} bytes; "
            f"file systems allow {NAME_MAX_BYTES})",
        )
    base = os.path.abspath(root)
    candidate = os.path.abspath(os.path.join(base, name))  # join keeps ``name`` when it is absolute
    inside = os.path.commonpath([base, candidate]) == base
    if not inside and not allow_outside_root:
        return None, Problem(
            "PathOutsideRoot",
            f"file name {name} resolves outside {root} (set data.allow_outside_root=true to accept it)",
        )
    return Path(candidate), None


def is_file(path: Path) -> bool:
    """``path.is_file()``, False instead of an OSError (a path too long in total, a permission problem):
    one unusable path is that sample's problem, never the run's."""
    try:
        return path.is_file()
    except OSError:
        return False


def unique_ids(candidates: list[str]) -> list[str]:
    """Make ids unique, keeping order: the first occurrence keeps its id, later ones get ``-2``, ``-3``...

    A suffixed id never takes an id that appears anywhere in ``candidates``, so an explicit ``cat-2``
    keeps its name even when it comes after two ``cat``.
    """
    wanted = set(candidates)
    used: set[str] = set()
    result = []
    for candidate in candidates:
        chosen, suffix = candidate, 2
        # a suffixed id must also avoid ids that later entries ask for by name
        while chosen in used or (chosen != candidate and chosen in wanted):
            chosen = f"{candidate}-{suffix}"
            suffix += 1
        used.add(chosen)
        result.append(chosen)
    return result


def is_missing(value: object) -> bool:
    """True for an empty cell: None, NaN, ``pd.NA`` or a blank string (never for a list or array)."""
    if value is None or value is pd.NA:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, Real) and not isinstance(value, Integral):
        return math.isnan(float(value))
    return False


def box_array(boxes: object) -> tuple[np.ndarray | None, str | None]:
    """Convert a box list (list of 4-number lists, ``[N, 4]`` array, or nested object arrays) to ``[N, 4]``.

    Coordinates are taken as given (pixel-edge ``x1, y1, x2, y2``); only the shape and finiteness are
    checked here, geometry against the image is checked after decoding.

    Returns:
        ``(array float32 [N, 4], None)`` or ``(None, problem)``.
    """
    try:
        # not iterable: the TypeError below
        rows = [np.asarray(box, dtype=np.float64).reshape(-1) for box in cast(Iterable[object], boxes)]
    except (TypeError, ValueError, OverflowError) as error:  # OverflowError: an integer past float range
        return None, f"boxes are not lists of numbers: {error}"
    if any(row.shape != (4,) for row in rows):
        return None, "every box needs 4 numbers x1, y1, x2, y2"
    array = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(array).all():
        return None, "box coordinates must be finite numbers"
    return array.astype(np.float32), None


def resolve_label(value: object, classes: ClassList) -> tuple[int, str | None]:
    """A label cell -> output index: a class key or name, or an integer index (also as a digit string).

    A key/name is looked up first (:meth:`~pipeline.data.records.ClassList.resolve`: a name shared by
    two classes, ImageNet's ``crane``, is refused, naming the keys to use). Only ASCII digits are an index
    (``"²"`` and ``"٣"`` are digits to ``str.isdigit`` but not to ``int``). A digit string that is the key or
    name of one class and the index of another (a class list keyed by COCO category ids: ``1 person`` on
    line 0) is refused too: which one was meant cannot be known, and either reading gives a number.

    Returns:
        ``(index, None)`` or ``(-1, problem)``.
    """
    if is_missing(value):
        return -1, "no label"
    if isinstance(value, (bool, np.bool_)):
        return -1, f"unknown label {value!r}"
    if isinstance(value, str):
        text = value.strip()
        digits = text.lstrip("+-")
        is_index = digits.isascii() and digits.isdigit()
        index, problem = classes.resolve(text)
        if problem is None:
            if is_index and 0 <= int(text) < len(classes) and int(text) != index:
                return -1, (
                    f"ambiguous label {text}: it is the key or name of class {index} ({classes.names[index]}) and the "
                    f"index of class {int(text)} ({classes.names[int(text)]}); write the class name or key instead"
                )
            return index, None
        if problem.startswith("ambiguous") or not is_index:
            return -1, problem
        value = int(text)
    if isinstance(value, Real) and not isinstance(value, Integral):
        # pandas stores an integer column with an empty cell as float: accept integral floats only
        as_float = float(value)
        if not as_float.is_integer():
            return -1, f"label {value!r} is not an integer index"
        value = int(as_float)
    if isinstance(value, Integral):
        index = int(value)
        if not 0 <= index < len(classes):
            return -1, f"label index {index} out of range ({len(classes)} classes)"
        return index, None
    return -1, f"unknown label {value!r}"


# --------------------------------------------------------------------------------------------------
# Reading the table
# --------------------------------------------------------------------------------------------------


def _read_table(path: Path) -> pd.DataFrame:
    """Read the manifest into a DataFrame, by suffix, without guessing types.

    CSV cells stay strings (empty cell -> ``""``) so that ids like ``007`` and paths like ``NA.jpg`` are
    kept verbatim; JSONL keeps JSON types (``dtype=False``) for the same reason.
    """
    suffix = path.suffix.lower()
    try:
        if suffix in CSV_SUFFIXES:
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix in PARQUET_SUFFIXES:
            return pd.read_parquet(path)
        if suffix in JSONL_SUFFIXES:
            return pd.read_json(path, lines=True, dtype=False, encoding="utf-8-sig")  # a byte-order mark is no JSON
    except Exception as error:  # pandas/pyarrow raise many types; all mean "not a readable manifest"
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"cannot read manifest {path}: {message}") from error
    raise ValueError(f"manifest {path}: unknown suffix {path.suffix!r} (use .csv, .parquet, .jsonl or .ndjson)")


def _check_columns(table: pd.DataFrame, path: Path) -> None:
    """Raise ValueError naming the first missing required column (or an ambiguous box layout)."""
    for column in REQUIRED_COLUMNS:
        if column not in table.columns:
            raise ValueError(f"manifest {path} has no column {column!r}")
    present = [c for c in BOX_COLUMNS if c in table.columns]
    if present and len(present) < len(BOX_COLUMNS):
        missing = next(c for c in BOX_COLUMNS if c not in table.columns)
        raise ValueError(f"manifest {path} has no column {missing!r} (box columns are {', '.join(BOX_COLUMNS)})")
    if present and "boxes" in table.columns:
        raise ValueError(f"manifest {path} has both a 'boxes' column and x1, y1, x2, y2 columns; keep one")


def _row_boxes(row: dict, layout: str) -> tuple[np.ndarray | None, str | None]:
    """The boxes one row contributes: ``[N, 4]`` float32 pixel-edge, or ``(None, problem)``."""
    if layout == "columns":
        cells = [row[c] for c in BOX_COLUMNS]
        if all(is_missing(c) for c in cells):
            return empty_boxes(), None  # a row for an image without box
        if any(is_missing(c) for c in cells):
            return None, "incomplete box: x1, y1, x2, y2 must all be set"
        try:
            values = [float(c) for c in cells]
        except (TypeError, ValueError):
            return None, f"box coordinates are not numbers: {cells}"
        return box_array([values])
    if layout == "list":
        cell = row["boxes"]
        if isinstance(cell, str):
            if not cell.strip():
                return empty_boxes(), None
            try:
                cell = json.loads(cell)  # CSV stores the list as a JSON string
            except json.JSONDecodeError:
                return None, f"boxes cell is not a JSON list: {cell[:40]}"
        if cell is None or (not isinstance(cell, (list, tuple, np.ndarray)) and is_missing(cell)):
            return empty_boxes(), None
        if not isinstance(cell, (list, tuple, np.ndarray)):
            return None, f"boxes cell is not a list: {cell!r}"
        return box_array(cell)
    return empty_boxes(), None  # no box columns at all: every image is box-less


@dataclass
class _Group:
    """The rows of one image (same resolved path), accumulated in manifest order."""

    name: str
    image: Path | None
    problem: Problem | None
    labels: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)


def _group_rows(table: pd.DataFrame, root: Path, classes: ClassList, allow_outside_root: bool) -> list[_Group]:
    """Group rows by image path (normalised, so ``./a.jpg`` and ``a.jpg`` are one image)."""
    layout = "columns" if "x1" in table.columns else "list" if "boxes" in table.columns else "none"
    groups: dict[str, _Group] = {}
    for number, row in enumerate(table.to_dict("records")):
        raw = row["path"]
        name = "" if is_missing(raw) else str(raw).strip()
        image, problem = (
            resolve_image_path(root, name, allow_outside_root)
            if name
            else (None, Problem("BadAnnotation", "row has no path"))
        )
        # rows without a usable path cannot be grouped with anything: one group each
        key = str(image) if image is not None else f"<row {number}>"
        group = groups.setdefault(key, _Group(name or f"row-{number}", image, problem))
        label, label_problem = resolve_label(row["label"], classes)
        group.labels.append(label)
        if label_problem and group.problem is None:
            group.problem = Problem("BadLabel", label_problem)
        if "id" in row and not is_missing(row["id"]):
            group.ids.append(str(row["id"]).strip())
        boxes, box_problem = _row_boxes(row, layout)
        if box_problem and group.problem is None:
            group.problem = Problem("BadAnnotation", f"data row {number + 1}: {box_problem}")
        if boxes is not None:
            group.boxes.append(boxes)
    return list(groups.values())


def _group_problem(group: _Group) -> Problem | None:
    """Why the group cannot be audited, checked in order: path, labels, ids, file on disk."""
    if group.problem:
        return group.problem
    if len(set(group.labels)) > 1:
        return Problem("BadLabel", f"rows of {group.name} disagree on the label ({sorted(set(group.labels))})")
    if len(set(group.ids)) > 1:
        return Problem(
            "BadAnnotation", f"rows of {group.name} disagree on the id ({', '.join(sorted(set(group.ids)))})"
        )
    if group.image is None or not is_file(group.image):
        return Problem("MissingImage", f"annotation {group.name} has no image")
    return None


def _candidate_ids(groups: list[_Group]) -> tuple[list[str], list[bool]]:
    """Id per group before de-duplication, and whether it was given explicitly in an ``id`` column."""
    ids, explicit = [], []
    for group in groups:
        if group.ids:
            ids.append(group.ids[0])
            explicit.append(True)
        else:
            ids.append(Path(group.name).stem or group.name)
            explicit.append(False)
    return ids, explicit


def read_manifest(
    path: str | Path, classes: ClassList, allow_outside_root: bool = False, box_units: str = "pixels"
) -> list[SampleRecord]:
    """Read a CSV / Parquet / JSONL manifest into one record per image, sorted by id.

    Boxes are ``[N, 4]`` float32 ``(x1, y1, x2, y2)`` pixel-edge coordinates of the stored image, as
    written; with ``box_units="normalized"`` they are fractions of its width and height, kept as written
    and scaled once the image is decoded (``SampleRecord.box_units``). Image paths are relative to the
    manifest's folder (see the module docstring for the layout). Explicit ids that two images share are
    reported on the later image (its id gets a ``-2`` suffix so ids stay unique); default ids (path stems)
    are made unique silently.

    Raises:
        ValueError: unknown suffix, unreadable file, or a missing ``path`` / ``label`` column; the
            message names the file and the column.
    """
    path = Path(path)
    table = _read_table(path)
    _check_columns(table, path)
    groups = _group_rows(table, path.parent, classes, allow_outside_root)
    wanted, explicit = _candidate_ids(groups)
    # explicit ids are placed first so that a default stem never takes an id someone wrote down
    order = sorted(range(len(groups)), key=lambda i: not explicit[i])
    chosen = dict(zip(order, unique_ids([wanted[i] for i in order])))
    records = []
    for i, group in enumerate(groups):
        problem = _group_problem(group)
        if problem is None and explicit[i] and chosen[i] != wanted[i]:
            problem = Problem("DuplicateId", f"duplicate id {wanted[i]}")
        image_path = str(group.image.resolve()) if group.image is not None and is_file(group.image) else ""
        if problem is not None:
            records.append(unusable_record(chosen[i], image_path, problem.type, problem.message))
            continue
        boxes = np.concatenate(group.boxes).astype(np.float32) if group.boxes else empty_boxes()
        records.append(SampleRecord(chosen[i], image_path, group.labels[0], boxes.reshape(-1, 4), box_units=box_units))
    return sorted(records, key=lambda r: r.sample_id)
