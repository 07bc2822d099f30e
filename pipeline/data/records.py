r"""The sample record every dataset source yields, and the class list.

A record is what the readers know about one image before it is decoded: where it is, its label as a
model output index, and its boxes in pixel-edge coordinates of the *stored* image (see
``docs`` in the README: a box ``(x1, y1, x2, y2)`` covers columns ``x1 <= x < x2`` and rows
``y1 <= y < y2``). Readers never raise for one bad entry: they return a record with ``problem`` set
(a :class:`Problem`: its type and a message), and the run turns it into a row of ``errors.parquet``.

Ids and paths are text. A file name that is not valid UTF-8 (``caf\xe9.jpg`` from a Latin-1 archive)
reaches Python as a string with lone surrogates (``os.fsdecode``'s ``surrogateescape``); the file is
opened through that string, and wherever the name is *shown* (the sample id, the report's ``path``,
messages) each undecodable byte is written as a backslash escape ``\xNN``: :func:`printable_text`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

# The ``error_type`` of a problem found while reading the annotations (before any image is decoded).
PROBLEM_TYPES = (
    "DuplicateId",  # a second entry with an id already taken (renamed ``<id>#dupN``)
    "PathOutsideRoot",  # the path leaves the data folder (``..``, absolute) without data.allow_outside_root
    "MissingImage",  # no image file for the entry (absent, unusable or over-long name)
    "UnsupportedFormat",  # an image file of a format the reader does not read (e.g. ``.gif``)
    "MissingAnnotation",  # an image without annotation, or without annotations and label
    "BadLabel",  # unknown, ambiguous, disagreeing or out-of-range label
    "BadAnnotation",  # unreadable annotation, malformed or non-finite boxes or sizes
)


BOX_UNITS = ("pixels", "normalized")  # data.box_units: what a manifest's box coordinates are measured in


class BadAnnotation(ValueError):
    """An annotation that contradicts its image, found once the image is decoded (a box outside it, past
    its edge, or without area): the sample's ``errors.parquet`` row has ``error_type`` ``BadAnnotation``
    (the class name), like the problems found while reading the annotations."""


@dataclass(frozen=True)
class Problem:
    """Why a sample cannot be audited: ``type`` (one of :data:`PROBLEM_TYPES`, the ``error_type``
    column people filter on) and ``message`` (the detail, for a person)."""

    type: str
    message: str

    def __post_init__(self) -> None:
        if self.type not in PROBLEM_TYPES:
            raise ValueError(f"unknown problem type {self.type!r}; add it to PROBLEM_TYPES")

    def __str__(self) -> str:
        return self.message


def printable_text(text: str) -> str:
    r"""``text`` with every undecodable file-name byte written as a backslash escape; valid text unchanged.

    A byte ``0xNN`` that ``surrogateescape`` turned into the lone surrogate ``U+DCNN`` becomes the four
    characters ``\xNN`` (the name ``b"caf\xe9"`` is shown as ``caf\xe9``); any other lone surrogate
    becomes ``\uNNNN``. The result always encodes as UTF-8 (Parquet, JSON, file names). Two names can
    escape alike (a real ``caf\xe9`` typed with a backslash): then the second is a duplicate id.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join(_printable_char(c) for c in text)


def _printable_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's encoding of the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return char


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
        box_units: ``pixels``, or ``normalized``: ``boxes`` are fractions of the stored width and height
            (``data.box_units`` of a manifest), scaled to pixels once the image is decoded and its size known.
    """

    sample_id: str
    image_path: str
    label: int
    boxes: np.ndarray
    annotated_size: tuple[int, int] | None = None
    problem: Problem | None = None
    extra: dict = field(default_factory=dict)
    box_units: str = "pixels"


def empty_boxes() -> np.ndarray:
    """A ``[0, 4]`` float32 array: the boxes of an image without annotation."""
    return np.zeros((0, 4), dtype=np.float32)


def unusable_record(
    sample_id: str,
    image_path: str,
    problem_type: str,
    message: str,
    annotated_size: tuple[int, int] | None = None,
) -> SampleRecord:
    """A sample that cannot be audited (no label, no boxes): its ``Problem`` becomes an ``errors.parquet`` row.
    ``annotated_size`` is the ``(width, height)`` its annotation states, when it states one."""
    return SampleRecord(sample_id, image_path, -1, empty_boxes(), annotated_size, Problem(problem_type, message))


@dataclass(frozen=True)
class ClassList:
    """Class names in model-output order.

    ``keys`` are what annotations use (e.g. WordNet ids ``n01440764``); ``names`` are what people read
    (``tench``). For datasets whose annotations use the readable name, keys == names.

    A label is looked up by :meth:`resolve`: a key first (a key is an identifier, so it wins over another
    class's name), then a name. A text that names several classes (ImageNet lists ``crane`` twice: the
    bird and the machine; a model's own list without keys repeats it as a key) is *ambiguous*: it is
    never resolved to one of them, the sample is reported with the keys (or indices) to use instead.
    """

    keys: tuple[str, ...]
    names: tuple[str, ...]

    @cached_property
    def _targets(self) -> dict[str, tuple[int, ...]]:
        """Text -> the output indices it can mean (one for a good label, several for an ambiguous one)."""
        by_name: dict[str, list[int]] = {}
        for i, name in enumerate(self.names):
            by_name.setdefault(name, []).append(i)
        by_key: dict[str, list[int]] = {}
        for i, key in enumerate(self.keys):
            by_key.setdefault(key, []).append(i)
        targets = {text: tuple(indices) for text, indices in by_name.items()}
        targets.update({text: tuple(indices) for text, indices in by_key.items()})  # keys win over names
        return targets

    def index(self) -> dict[str, int]:
        """Map every key and name that means one class to its output index (keys win on a clash); an
        ambiguous text (:meth:`ambiguous`) is left out: :meth:`resolve` says why."""
        return {text: indices[0] for text, indices in self._targets.items() if len(indices) == 1}

    def ambiguous(self) -> dict[str, tuple[int, ...]]:
        """Texts that name more than one class -> their output indices."""
        return {text: indices for text, indices in self._targets.items() if len(indices) > 1}

    def resolve(self, text: str) -> tuple[int, str | None]:
        """A label text -> ``(output index, None)``, or ``(-1, problem)`` for an unknown or ambiguous text."""
        indices = self._targets.get(text)
        if indices is None:
            return -1, f"unknown label {text}"
        if len(indices) == 1:
            return indices[0], None
        return -1, self.ambiguity(text, indices)

    def ambiguity(self, text: str, indices: Sequence[int]) -> str:
        """Why ``text`` cannot be used as a label: the classes it names and what to write instead."""
        keys = [self.keys[i] for i in indices]
        if len(set(keys)) == len(keys) and text not in keys:
            listed = ", ".join(f"{key} (class {i})" for key, i in zip(keys, indices))
            return f"ambiguous label {text}: it names {len(indices)} classes, {listed}; use the key instead"
        listed = ", ".join(str(i) for i in indices)
        return (
            f"ambiguous label {text}: classes {listed} share it and have no distinct keys; "
            "give a classes file with one key per class (data.classes), or the class index where the format allows"
        )

    def __len__(self) -> int:
        return len(self.keys)


def read_class_file(path: str | Path) -> ClassList:
    """Read a classes file: one class per line, in output order, ``<key> [<name>]``.

    ``n01440764 tench`` gives key ``n01440764`` and name ``tench``; a line with one word uses it for both.
    Blank lines and lines starting with ``#`` are skipped. The file is UTF-8; a byte-order mark (Windows
    editors write one) is not part of the first key. Raises ValueError (one line, naming the file) for a
    file that is not UTF-8 text (a Latin-1 ``caf\xe9`` would otherwise become a key no label matches) or
    that lists a key twice.
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line_number = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"classes file {path} is not UTF-8 text (byte 0x{data[error.start]:02x} on line {line_number}); save it as UTF-8"
        ) from None
    keys: list[str] = []
    names: list[str] = []
    lines: dict[str, int] = {}  # key -> the line it is on
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if parts[0] in lines:
            raise ValueError(
                f"classes file {path} lists a class twice: {parts[0]!r} on lines {lines[parts[0]]} and {number}"
            )
        lines[parts[0]] = number
        keys.append(parts[0])
        names.append(parts[1].strip() if len(parts) > 1 else parts[0])
    return ClassList(tuple(keys), tuple(names))
