"""ILSVRC / PASCAL VOC XML annotations: one XML file per image.

Layout (ImageNet CLS-LOC val): ``<images>/<stem>.<ext>`` and ``<annotations>/<stem>.xml``. Each XML has
``<size>`` and one ``<object>`` per instance with ``<name>`` (the class key, e.g. a WordNet id) and
``<bndbox>`` ``xmin ymin xmax ymax`` as **1-based inclusive** pixel indices. They are converted once,
here, to pixel-edge coordinates: ``x1 = xmin - 1``, ``x2 = xmax`` (same for y).

The image's label is the class of its objects; objects of other classes are ignored for scoring (only
the true class's boxes form the ground-truth region). The ``<key>_`` prefix of the file name (ImageNet's
``<wnid>_...`` convention) picks the label among the objects' classes, or gives it when the XML has no
object; a prefix that names a class none of the objects has is a ``BadLabel`` row (:func:`image_label`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from pipeline.data.records import ClassList, SampleRecord, unusable_record

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _int(node: ET.Element, tag: str) -> int:
    text = node.findtext(tag)
    if text is None:
        raise ValueError(f"missing <{tag}>")
    try:
        return int(round(float(text)))
    except OverflowError:  # inf, or a number past float range: the same kind of bad value as nan
        raise ValueError(f"<{tag}> {text.strip()[:40]!r} is not a finite number") from None


def parse_voc_xml(
    path: Path,
) -> tuple[list[tuple[str, tuple[float, float, float, float]]], tuple[int, int] | None, str | None]:
    """Parse one XML file.

    Returns:
        objects: ``(class_key, (x1, y1, x2, y2))`` per object, pixel-edge coordinates (converted from
            1-based inclusive).
        size: ``(width, height)`` from ``<size>``, or None when absent or zero.
        filename: the ``<filename>`` text, or None.
    """
    root = ET.parse(path).getroot()
    size = None
    size_node = root.find("size")
    if size_node is not None and size_node.findtext("width") and size_node.findtext("height"):
        width, height = _int(size_node, "width"), _int(size_node, "height")
        size = (width, height) if width > 0 and height > 0 else None
    objects = []
    for obj in root.iter("object"):
        key = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if box is None:
            continue
        xmin, ymin, xmax, ymax = (_int(box, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        objects.append((key, (float(xmin - 1), float(ymin - 1), float(xmax), float(ymax))))
    return objects, size, root.findtext("filename")


def _index_images(image_dir: Path) -> tuple[dict[str, Path], list[Path], dict[str, Path]]:
    """Map file stem -> image path for every image file directly in ``image_dir`` (sorted, stable).

    Two files with one stem (``a.jpg`` and ``a.png``) share an id: the first in sorted order is the
    sample, the others are returned as the second value so they are reported, never silently dropped.
    The third value maps the stem of every other file (``a.gif``, a format not read) to it, so that an
    annotation whose image has such a format says so instead of "has no image".
    """
    found: dict[str, Path] = {}
    clashes: list[Path] = []
    others: dict[str, Path] = {}
    for path in sorted(image_dir.iterdir()):
        if not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            others.setdefault(path.stem, path)
        elif path.stem in found:
            clashes.append(path)
        else:
            found[path.stem] = path
    return found, clashes, others


def read_voc(image_dir: str | Path, annotation_dir: str | Path, classes: ClassList) -> list[SampleRecord]:
    """Read every image of ``image_dir`` with its XML annotation from ``annotation_dir``.

    Samples are sorted by id. An image without annotation, an annotation without image, an unreadable
    XML file, an unknown class or a second image with the same file stem becomes a record with
    ``problem`` set (it is reported, never guessed).
    Boxes are ``[N, 4]`` pixel-edge coordinates of the stored image, as written in the file (validity
    against the image size is checked after decoding, when the real size is known).
    """
    image_dir, annotation_dir = Path(image_dir), Path(annotation_dir)
    images, clashes, others = _index_images(image_dir)
    annotations = {p.stem: p for p in sorted(annotation_dir.glob("*.xml"))}
    lookup = classes.index()
    records = []
    for sample_id in sorted(set(images) | set(annotations)):
        image = images.get(sample_id)
        xml = annotations.get(sample_id)
        image_path = str(image.resolve()) if image else ""
        if xml is None:
            records.append(
                unusable_record(
                    sample_id,
                    image_path,
                    "MissingAnnotation",
                    "image has no annotation file",
                )
            )
            continue
        if image is None and sample_id in others:
            other = others[sample_id]
            records.append(
                unusable_record(
                    sample_id,
                    str(other.resolve()),
                    "UnsupportedFormat",
                    f"{other.name}: unsupported format {other.suffix!r} (read: {', '.join(IMAGE_SUFFIXES)})",
                )
            )
            continue
        if image is None:
            records.append(
                unusable_record(
                    sample_id,
                    "",
                    "MissingImage",
                    f"annotation {xml.name} has no image",
                )
            )
            continue
        try:
            objects, size, _ = parse_voc_xml(xml)
        except (ET.ParseError, ValueError) as error:
            records.append(
                unusable_record(
                    sample_id,
                    image_path,
                    "BadAnnotation",
                    f"bad annotation {xml.name}: {error}",
                )
            )
            continue
        label, problem = image_label(sample_id, objects, classes)
        if problem:
            records.append(unusable_record(sample_id, image_path, "BadLabel", problem, size))
            continue
        boxes = [box for key, box in objects if lookup.get(key) == label]
        array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        records.append(SampleRecord(sample_id, image_path, label, array, size))
    for (
        path
    ) in clashes:  # same id as an audited image: a problem record (pipeline.data.sources.mark_duplicates renames it)
        records.append(
            unusable_record(
                path.stem,
                str(path.resolve()),
                "DuplicateId",
                f"{path.name} and {images[path.stem].name} share the file stem",
            )
        )
    return sorted(records, key=lambda r: r.sample_id)


def file_name_class(sample_id: str, classes: ClassList) -> int | None:
    """The class the ``<key>_`` prefix of a file name names (ImageNet's ``n01440764_tench``), or None: no
    ``_``, a prefix that is no class, or one that names several (an ambiguous name is no evidence)."""
    if "_" not in sample_id:
        return None
    index, problem = classes.resolve(sample_id.split("_", 1)[0])
    return None if problem else index


def image_label(sample_id: str, objects: list, classes: ClassList) -> tuple[int, str | None]:
    """The image label: ``(output index, None)``, or ``(-1, problem)`` for a ``BadLabel`` row.

    The label is the class of the annotation's objects. The file-name prefix (:func:`file_name_class`) only
    picks among them (an image with objects of several classes whose name says which one it is about), or
    gives the label of an image without objects; it never overrides them: a file ``cat_and_dog_001.jpg``
    whose objects are all ``dog`` is reported, naming both, instead of being audited as a cat. Every object's
    class must be known and unambiguous (a typo'd key would silently lose its boxes).
    """
    from_name = file_name_class(sample_id, classes)
    indices = set()
    for key in dict.fromkeys(key for key, _ in objects):
        index, problem = classes.resolve(key)
        if problem:
            return -1, problem if problem.startswith("ambiguous") else f"unknown or ambiguous label {key}"
        indices.add(index)
    if not indices:
        if from_name is None:
            return -1, "unknown or ambiguous label <no object>"
        return from_name, None
    if from_name is not None and from_name not in indices:
        found = ", ".join(_described(classes, i) for i in sorted(indices))
        named = f"{sample_id.split('_', 1)[0]!r} is class {_described(classes, from_name)}"
        return -1, f"the file name's prefix {named} but the annotation's objects are {found}; fix one of them"
    if from_name is not None:
        return from_name, None
    if len(indices) > 1:
        found = ", ".join(sorted({key for key, _ in objects}))
        return (
            -1,
            f"unknown or ambiguous label {found}: the objects are of several classes and the file name names none",
        )
    (index,) = indices
    return index, None


def _described(classes: ClassList, index: int) -> str:
    """``dog (n02084071)``: a class as people read it and as annotations write it."""
    key, name = classes.keys[index], classes.names[index]
    return key if key == name else f"{name} ({key})"
