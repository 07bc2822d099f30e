"""COCO JSON annotations: one file describing every image of the dataset.

The file holds ``images`` (``id``, ``file_name``, ``width``, ``height``), ``annotations`` (``image_id``,
``category_id``, ``bbox``) and ``categories`` (``id``, ``name``). A COCO ``bbox`` is ``[x, y, w, h]`` in
pixel-edge coordinates (the top-left corner of the top-left pixel is ``(0, 0)``); it is converted once,
here, to ``(x1, y1, x2, y2) = (x, y, x + w, y + h)``, so a box covers columns ``x1 <= x < x2``.

Category names reach the model's outputs through ``ClassList.resolve()`` (class keys or names; a name
two classes share is a ``BadLabel`` naming their keys). The
image's label is the one class all its annotations share, or the image entry's own label field
(``images[i][label_field]``, a category name or category id) when it has one; only the label's boxes
are kept (boxes of other classes are not ground truth for the audited class). The JSON file is the list
of samples: images in ``image_dir`` that it does not mention are not part of the dataset.

As in every reader, a bad entry becomes a record with ``problem`` set; only a file that is not COCO
JSON at all raises ``ValueError``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import TypeGuard

import numpy as np

from pipeline.data.manifest import is_file, resolve_image_path, unique_ids
from pipeline.data.records import ClassList, SampleRecord, empty_boxes, unusable_record

Box = tuple[float, float, float, float]


# --------------------------------------------------------------------------------------------------
# The file as a whole: errors here are configuration errors (ValueError)
# --------------------------------------------------------------------------------------------------


def _load_coco(path: Path) -> dict:
    """Read the JSON file and check its top-level shape; raise a one-line ValueError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark is not content
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read COCO file {path}: {str(error).splitlines()[0]}") from error
    if not isinstance(data, dict):
        raise ValueError(f"COCO file {path}: top level is not a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise ValueError(f"COCO file {path}: {key!r} is not a list")
    if "images" not in data:
        raise ValueError(f"COCO file {path}: no 'images' list")
    return data


def _category_names(categories: list, path: Path) -> dict[object, str]:
    """Map category id -> name. The table is shared by every image, so a broken one is a ValueError."""
    names: dict[object, str] = {}
    for number, category in enumerate(categories):
        if (
            not isinstance(category, dict)
            or _id_key(category.get("id")) is None
            or not isinstance(category.get("name"), str)
        ):
            raise ValueError(f"COCO file {path}: categories[{number}] needs an 'id' and a 'name'")
        if category["id"] in names:
            raise ValueError(f"COCO file {path}: category id {category['id']} is listed twice")
        names[category["id"]] = category["name"].strip()
    return names


def _id_key(value: object) -> int | str | None:
    """A usable COCO id (int or str, not bool), or None; ids are dict keys, so they must be hashable."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    return value


def _group_annotations(annotations: list) -> tuple[dict[object, list[dict]], list[int]]:
    """Annotations per image id, in file order, and the positions of those that name no usable image id."""
    by_image: dict[object, list[dict]] = {}
    stray: list[int] = []
    for number, annotation in enumerate(annotations):
        key = _id_key(annotation.get("image_id")) if isinstance(annotation, dict) else None
        if key is None:
            stray.append(number)
            continue
        by_image.setdefault(key, []).append(annotation)
    return by_image, stray


# --------------------------------------------------------------------------------------------------
# One image
# --------------------------------------------------------------------------------------------------


def finite_number(value: object) -> TypeGuard[int | float]:
    """True for an int or float (not bool) that is finite as a float.

    JSON integers have no size limit: ``1`` followed by 400 zeros is a valid int that no float holds
    (``math.isfinite`` raises OverflowError on it); it is not a usable number.
    """
    if not isinstance(value, Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _shown(value: object) -> str:
    """``repr`` cut to 40 characters (a 400-digit integer must not fill the message)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def coco_box(bbox: object) -> tuple[Box | None, str | None]:
    """COCO ``[x, y, w, h]`` -> pixel-edge ``(x1, y1, x2, y2) = (x, y, x + w, y + h)``.

    Returns ``(box, None)`` or ``(None, problem)`` for anything but 4 finite numbers with ``w, h >= 0``
    (a negative size is a malformed COCO box, not a geometry question left to the decoder).
    """
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None, f"bbox {_shown(bbox)} is not [x, y, w, h]"
    if not all(finite_number(v) for v in bbox):
        large = any(isinstance(v, int) and not isinstance(v, bool) and not finite_number(v) for v in bbox)
        return None, f"bbox {_shown(bbox)} holds a value that is not a finite number" + (
            " (too large for a float)" if large else ""
        )
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        return None, f"bbox {_shown(bbox)} has a negative width or height"
    return (x, y, x + w, y + h), None


def _annotated_size(entry: dict) -> tuple[tuple[int, int] | None, str | None]:
    """``(width, height)`` of the image entry, or None when absent or not positive; a problem for an
    integer too large for a float (any other odd value means "size unknown", as before)."""
    width, height = entry.get("width"), entry.get("height")
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, int) and not isinstance(value, bool) and not finite_number(value):
            return None, f"{name} {_shown(value)} is too large for a float"
    if not (finite_number(width) and width > 0 and finite_number(height) and height > 0):
        return None, None
    return (int(round(width)), int(round(height))), None


def _category_index(category_id: object, names: dict[object, str], classes: ClassList) -> tuple[int, str | None]:
    """Category id -> model output index, or ``(-1, problem)`` for an unknown id, an unknown name or a name
    that several classes share (``crane``: the problem names the keys to use)."""
    key = _id_key(category_id)
    if key is None or key not in names:
        return -1, f"unknown category id {category_id!r}"
    index, problem = classes.resolve(names[key])
    if problem and not problem.startswith("ambiguous"):
        return -1, f"unknown category {names[key]}"
    return index, problem


def _explicit_label(value: object, names: dict[object, str], classes: ClassList) -> tuple[int, str | None]:
    """The image's own label field: a category id (int) or a category name (str) -> output index."""
    if isinstance(value, str):
        # a category name reaches the outputs through the class list, exactly like the annotations' names
        index, problem = classes.resolve(value.strip())
        if problem and not problem.startswith("ambiguous"):
            return -1, f"unknown category {value.strip()}"
        return index, problem
    if isinstance(value, int) and not isinstance(value, bool):
        return _category_index(value, names, classes)
    return -1, f"label {value!r} is neither a category name nor a category id"


def _shared_label(annotations: list[dict], names: dict[object, str], classes: ClassList) -> tuple[int, str | None]:
    """The one class all annotations of an image share, or ``(-1, problem)``.

    Annotations agree when their categories map to the same model output (two category names for the
    same class, e.g. its key and its name, do not conflict).
    """
    if not annotations:
        return -1, "image has no annotations and no label"
    indices = set()
    for annotation in annotations:
        index, problem = _category_index(annotation.get("category_id"), names, classes)
        if problem:
            return -1, problem
        indices.add(index)
    if len(indices) > 1:
        found = sorted({str(names[a["category_id"]]) for a in annotations})
        return -1, f"annotations disagree ({', '.join(found)}) and the image has no label field"
    (index,) = indices
    return index, None


def _label_boxes(
    label: int, annotations: list[dict], names: dict[object, str], classes: ClassList
) -> tuple[np.ndarray, str | None]:
    """``[N, 4]`` float32 pixel-edge boxes of the annotations whose category is the label's class."""
    boxes = []
    for annotation in annotations:
        index, _ = _category_index(annotation.get("category_id"), names, classes)
        if index != label:
            continue  # another class's object: not ground truth for this label
        box, problem = coco_box(annotation.get("bbox"))
        if problem:
            name = f"annotation {annotation['id']}" if "id" in annotation else "an annotation"
            return empty_boxes(), f"{name}: {problem}"
        boxes.append(box)
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), None


def _entry_problem(entry: object, number: int) -> str | None:
    """Why an ``images[i]`` entry cannot even be looked up (not an object, no id, no file name)."""
    if not isinstance(entry, dict):
        return f"images[{number}] is not an object"
    if _id_key(entry.get("id")) is None:
        return f"images[{number}] has no usable id"
    if not isinstance(entry.get("file_name"), str) or not entry["file_name"].strip():
        return f"images[{number}] has no file_name"
    return None


def _candidate_ids(entries: list) -> list[str]:
    """File stem per image entry; the COCO id string for entries whose stems clash (or that have none)."""
    stems = [Path(e["file_name"]).stem if _entry_problem(e, i) is None else "" for i, e in enumerate(entries)]
    counts = Counter(stems)
    ids = []
    for number, (entry, stem) in enumerate(zip(entries, stems)):
        if stem and counts[stem] == 1:
            ids.append(stem)
        elif isinstance(entry, dict) and _id_key(entry.get("id")) is not None:
            ids.append(str(entry["id"]))
        else:
            ids.append(f"images-{number}")
    return ids


# --------------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------------


@dataclass
class _Context:
    """What every image entry is read against; ``seen_*`` remember earlier entries to find duplicates."""

    root: Path
    by_image: dict[object, list[dict]]
    names: dict[object, str]
    classes: ClassList
    label_field: str
    allow_outside_root: bool
    seen_ids: dict[object, int] = field(default_factory=dict)  # image id -> position of its first entry
    seen_files: dict[str, object] = field(default_factory=dict)  # normalised path -> image id of first entry


def read_coco(
    annotation_file: str | Path,
    image_dir: str | Path,
    classes: ClassList,
    label_field: str = "label",
    *,
    allow_outside_root: bool = False,
) -> list[SampleRecord]:
    """Read a COCO JSON file into one record per image entry, sorted by id.

    ``sample_id`` is the file name's stem; when two entries share a stem, those entries use their COCO
    image id (as a string) instead, and any id still taken gets a ``-2``, ``-3`` ... suffix. Boxes are
    ``[N, 4]`` float32 ``(x1, y1, x2, y2)`` pixel-edge coordinates of the stored image (from COCO
    ``[x, y, w, h]``), only those of the label's class. ``annotated_size`` is the entry's
    ``(width, height)``.

    Reported as records with ``problem`` (never raised): an image whose annotations disagree and that
    has no ``label_field``, an unknown category, an entry whose file is missing (``annotation ... has
    no image``) or resolves outside ``image_dir`` (``..``, absolute path; unless
    ``allow_outside_root``), an image without annotations and without label, a repeated image id or
    file name (on the later entries), and annotations that refer to no listed image.

    Raises:
        ValueError: the file cannot be read or is not COCO JSON (one line, naming the file).
    """
    annotation_file, root = Path(annotation_file), Path(image_dir)
    data = _load_coco(annotation_file)
    names = _category_names(data.get("categories", []), annotation_file)
    by_image, stray = _group_annotations(data.get("annotations", []))
    entries = data["images"]
    wanted = _candidate_ids(entries)

    listed_ids = {e["id"] for i, e in enumerate(entries) if _entry_problem(e, i) is None}
    orphans = [key for key in by_image if key not in listed_ids]
    wanted += [f"image-id-{key}" for key in orphans] + [f"annotations-{n}" for n in stray]
    sample_ids = unique_ids(wanted)

    context = _Context(root, by_image, names, classes, label_field, allow_outside_root)
    records = [_image_record(sample_ids[number], number, entry, context) for number, entry in enumerate(entries)]
    tail = sample_ids[len(entries) :]
    for sample_id, key in zip(tail, orphans):
        records.append(
            unusable_record(
                sample_id,
                "",
                "MissingImage",
                f"annotations refer to image id {key!r}, which is not in 'images'",
            )
        )
    for sample_id, number in zip(tail[len(orphans) :], stray):
        records.append(
            unusable_record(
                sample_id,
                "",
                "MissingImage",
                f"annotations[{number}] has no usable image_id",
            )
        )
    return sorted(records, key=lambda r: r.sample_id)


def _image_record(sample_id: str, number: int, entry: object, context: _Context) -> SampleRecord:
    """The record of ``images[number]`` (updates ``context.seen_*`` for the entries after it)."""
    problem = _entry_problem(entry, number)
    if problem:
        return unusable_record(sample_id, "", "BadAnnotation", problem)
    assert isinstance(entry, dict)
    size, size_problem = _annotated_size(entry)
    image, path_problem = resolve_image_path(context.root, entry["file_name"], context.allow_outside_root)
    if path_problem is not None:
        return unusable_record(sample_id, "", path_problem.type, path_problem.message, size)
    assert image is not None  # resolve_image_path gives a path or a problem
    image_path = str(image.resolve()) if is_file(image) else ""

    # duplicates: the first entry keeps the id / file (and the annotations); later ones are reported
    if entry["id"] in context.seen_ids:
        first = context.seen_ids[entry["id"]]
        message = f"duplicate image id {entry['id']!r} (also images[{first}])"
        return unusable_record(sample_id, image_path, "DuplicateId", message, size)
    context.seen_ids[entry["id"]] = number
    if str(image) in context.seen_files:
        first_id = context.seen_files[str(image)]
        message = f"duplicate file name {entry['file_name']} (also image id {first_id!r})"
        return unusable_record(sample_id, image_path, "DuplicateId", message, size)
    context.seen_files[str(image)] = entry["id"]

    if not image_path:
        message = f"annotation {entry['file_name']} (image id {entry['id']!r}) has no image"
        return unusable_record(sample_id, "", "MissingImage", message, size)
    if size_problem:
        return unusable_record(sample_id, image_path, "BadAnnotation", size_problem)
    annotations = context.by_image.get(entry["id"], [])
    if entry.get(context.label_field) is not None:
        label, problem = _explicit_label(entry[context.label_field], context.names, context.classes)
    else:
        label, problem = _shared_label(annotations, context.names, context.classes)
    if problem:
        kind = "MissingAnnotation" if not annotations and entry.get(context.label_field) is None else "BadLabel"
        return unusable_record(sample_id, image_path, kind, problem, size)
    boxes, problem = _label_boxes(label, annotations, context.names, context.classes)
    if problem:
        return unusable_record(sample_id, image_path, "BadAnnotation", problem, size)
    return SampleRecord(sample_id, image_path, label, boxes, size)
