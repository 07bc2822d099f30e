"""Turn the ``data`` config group into sample records and a class list.

Every source (built-in synthetic, ILSVRC/VOC XML, COCO JSON, manifest) ends as the same list of
:class:`~pipeline.data.records.SampleRecord`; ids are unique afterwards (duplicates become problem
records) and paths cannot leave the data root unless ``data.allow_outside_root`` is set.

``data.source`` names a :class:`DatasetFormat` of :data:`DATASET_FORMATS`: the built-in ones are
registered below (``synthetic`` by the dotted path of the demo's reader, :func:`reader_at`: this package never
imports ``pipeline.demo``), a new one registers itself from ``pipeline/data/<name>.py`` with
:func:`register_dataset_format` (so a new format is that module and its ``conf/data/<name>.yaml``).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from PIL import Image

from pipeline import logs
from pipeline.data.records import ClassList, Problem, SampleRecord, empty_boxes, printable_text, read_class_file
from pipeline.errors import ConfigError

logger = logging.getLogger(__name__)
# Columns the report adds when the run finishes (pipeline.reports.finalize): a data.metadata column of one
# of these names would be replaced by the report's without a word, so it is left out, with a warning.
REPORT_FINISH_COLUMNS = ("triage", "triage_reason")
# data.box_units=pixels, yet every box within [-0.5, 1.5] on images over 16 px a side: normalised coordinates
# read as pixels (every box under 2 px); refused at start. The image sizes checked: the first few boxed samples.
NORMALIZED_LOOKING_RANGE = (-0.5, 1.5)
NORMALIZED_CHECK_MIN_SIDE = 16
NORMALIZED_CHECK_IMAGES = 8


def _existing(option: str, value, kind: str = "dir") -> Path:
    if value in (None, "", "???"):
        raise ConfigError(option, "is required for this data source")
    path = Path(str(value)).expanduser()
    if (kind == "dir" and not path.is_dir()) or (kind == "file" and not path.is_file()):
        raise ConfigError(option, f"{kind == 'dir' and 'folder' or 'file'} {str(path)!r} does not exist")
    return path


def _class_file(data_cfg, model_classes: tuple[tuple[str, ...], tuple[str, ...]] | None = None) -> ClassList:
    """The ``data.classes`` file, or with ``data.classes: null`` the model's own class list (keys, names).

    An unreadable or malformed file, or null for a model that names no classes, is a configuration error.
    """
    if data_cfg.classes is None:
        if model_classes is None:
            raise ConfigError(
                "data.classes",
                "no classes file was given and the model names no classes (a checkpoint's "
                "`classes`, torchvision weights, a timm ImageNet model); give data.classes=FILE",
            )
        return ClassList(tuple(model_classes[0]), tuple(model_classes[1]))
    path = _existing("data.classes", data_cfg.classes, "file")
    try:
        classes = read_class_file(path)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError("data.classes", str(error).splitlines()[0] if str(error) else type(error).__name__) from error
    if not len(classes):
        raise ConfigError("data.classes", f"file {str(path)!r} lists no class")
    return classes


ModelClasses = tuple[tuple[str, ...], tuple[str, ...]] | None  # the model's own (keys, names), or None


@dataclass(frozen=True)
class DatasetRead:
    """What a format's reader hands back.

    Attributes:
        records: one per sample, problems included, in any order (sorted and de-duplicated afterwards).
        classes: the class list the labels index.
        metadata: the format's own metadata file, used when ``data.metadata`` is null (or None).
    """

    records: list[SampleRecord]
    classes: ClassList
    metadata: Path | None = None


@dataclass(frozen=True)
class DatasetFormat:
    """One value of ``data.source``: its reader and the options to name when its samples are wrong.

    Attributes:
        read: ``read(data_cfg, cache_dir, model_classes) -> DatasetRead``; a bad option is a ``ConfigError``.
        samples_option: the option named when the dataset has no sample (almost always a wrong path).
        annotations_option: the option named when most samples cannot be audited before any image is read
            (unless the problems are labels: then ``data.classes``).
    """

    read: Callable[[DictConfig, Path, ModelClasses], DatasetRead]
    samples_option: str
    annotations_option: str


DATASET_FORMATS: dict[str, DatasetFormat] = {}  # data.source -> its format, in the order they were registered


def register_dataset_format(
    name: str, samples_option: str, annotations_option: str
) -> Callable[[Callable[[DictConfig, Path, ModelClasses], DatasetRead]], Callable]:
    """Decorator: register ``read`` as the reader of ``data.source=name``.

    Adding a format takes two files: ``pipeline/data/<name>.py``, whose reader registers itself with this
    decorator (the module is imported the first time ``data.source=<name>`` is asked for), and
    ``conf/data/<name>.yaml`` with ``source: <name>`` and the options its reader reads.
    """

    def register(read: Callable[[DictConfig, Path, ModelClasses], DatasetRead]) -> Callable:
        DATASET_FORMATS[name] = DatasetFormat(read, samples_option, annotations_option)
        return read

    return register


def dataset_format(name: str) -> DatasetFormat:
    """The format of ``data.source=name``: a registered one, or the one ``pipeline/data/<name>.py`` registers
    when imported. An unknown name is a ``ConfigError`` on ``data.source`` listing the known ones."""
    if name not in DATASET_FORMATS and name.isidentifier():
        module = f"{__package__}.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:  # the module exists but cannot be imported: a bug to show as it is
                raise
    if name not in DATASET_FORMATS:
        *others, last = DATASET_FORMATS
        raise ConfigError("data.source", f"unknown source {name!r}; choose {', '.join(others)} or {last}")
    return DATASET_FORMATS[name]


def reader_at(path: str) -> Callable[[DictConfig, Path, ModelClasses], DatasetRead]:
    """The reader named by ``path`` (``"package.module:function"``), imported the first time it reads: a
    format whose reader lives outside this package is listed here without this package importing it."""

    def read(data_cfg: DictConfig, cache_dir: Path, model_classes: ModelClasses = None) -> DatasetRead:
        return pkgutil.resolve_name(path)(data_cfg, cache_dir, model_classes)

    return read


# The built-in demo dataset (pipeline/demo/), generated under cache_dir on first use: its reader is the demo's.
register_dataset_format("synthetic", samples_option="data.synthetic", annotations_option="data.synthetic")(
    reader_at("pipeline.demo.sources:read_synthetic_source")
)


@register_dataset_format("voc", samples_option="data.images", annotations_option="data.annotations")
def read_voc_source(data_cfg: DictConfig, cache_dir: Path, model_classes: ModelClasses = None) -> DatasetRead:
    """An image folder and a folder of ILSVRC / VOC XML files (``pipeline/data/voc.py``)."""
    from pipeline.data.voc import read_voc

    classes = _class_file(data_cfg, model_classes)
    images = _existing("data.images", data_cfg.images)
    return DatasetRead(read_voc(images, _existing("data.annotations", data_cfg.annotations), classes), classes)


@register_dataset_format("coco", samples_option="data.annotations", annotations_option="data.annotations")
def read_coco_source(data_cfg: DictConfig, cache_dir: Path, model_classes: ModelClasses = None) -> DatasetRead:
    """A COCO JSON file and its image folder (``pipeline/data/coco.py``)."""
    from pipeline.data.coco import read_coco

    classes = _class_file(data_cfg, model_classes)
    try:
        records = read_coco(
            _existing("data.annotations", data_cfg.annotations, "file"),
            _existing("data.images", data_cfg.images),
            classes,
            allow_outside_root=bool(data_cfg.allow_outside_root),
        )
    except ValueError as error:
        raise ConfigError("data.annotations", str(error)) from error
    return DatasetRead(records, classes)


@register_dataset_format("manifest", samples_option="data.manifest", annotations_option="data.manifest")
def read_manifest_source(data_cfg: DictConfig, cache_dir: Path, model_classes: ModelClasses = None) -> DatasetRead:
    """A CSV / Parquet / JSONL manifest (``pipeline/data/manifest.py``)."""
    from pipeline.data.manifest import read_manifest

    classes = _class_file(data_cfg, model_classes)
    try:
        records = read_manifest(
            _existing("data.manifest", data_cfg.manifest, "file"),
            classes,
            allow_outside_root=bool(data_cfg.allow_outside_root),
            box_units=str(data_cfg.get("box_units", "pixels")),
        )
    except ValueError as error:
        raise ConfigError("data.manifest", str(error)) from error
    return DatasetRead(records, classes)


def load_records(
    data_cfg: DictConfig, cache_dir: Path, model_classes: ModelClasses = None
) -> tuple[list[SampleRecord], ClassList, Path | None]:
    """Read the dataset named by ``data_cfg`` with the reader of its ``source`` (:data:`DATASET_FORMATS`;
    ``model_classes``: the model's ``(keys, names)``, used when ``data.classes`` is null).

    Returns the records (sorted by id; problems included), the class list, and the metadata file to join
    (or None).
    """
    dataset = dataset_format(data_cfg.source)
    box_units = str(data_cfg.get("box_units", "pixels"))
    if box_units != "pixels" and data_cfg.source != "manifest":  # the other formats' boxes are pixels by definition
        raise ConfigError(
            "data.box_units", f"{box_units!r} is read by data=manifest only; {data_cfg.source} boxes are pixels"
        )
    read = dataset.read(data_cfg, cache_dir, model_classes)
    metadata = Path(data_cfg.metadata) if data_cfg.get("metadata") else read.metadata
    if metadata is not None and not metadata.is_file():
        raise ConfigError("data.metadata", f"file {str(metadata)!r} does not exist")
    if not read.records:  # an empty folder or file is almost always a wrong path: say so instead of "0 images"
        raise ConfigError(dataset.samples_option, "the dataset has no samples (no image or annotation found there)")
    option = "data.box_units" if data_cfg.source == "manifest" else dataset.annotations_option
    check_box_units(read.records, box_units, option)
    records = mark_duplicates(sorted((printable_ids(r) for r in read.records), key=lambda r: r.sample_id))
    if data_cfg.get("limit") is not None:  # checked to be >= 1 by pipeline.options before any work
        records = records[: int(data_cfg.limit)]
    return records, read.classes, metadata


def check_index_problems(
    records: list[SampleRecord], classes: ClassList, source: str, max_fraction: float, min_samples: int
) -> None:
    """Stop at start when the annotations as a whole do not fit the configuration.

    One bad entry is an error row; but when no sample is usable, or (with at least ``min_samples``
    records) more than ``max_fraction`` of them fail before any image is read, the cause is almost
    always a wrong option (a classes file whose keys are not the annotations' labels, a wrong folder), and
    a run that writes zero rows would look like success. Raises a ConfigError naming the likely option,
    with the most common problem and, for label problems, what the class list holds.
    """
    failed = [r.problem for r in records if r.problem]
    if not failed or not (
        len(failed) == len(records) or (len(records) >= min_samples and len(failed) > max_fraction * len(records))
    ):
        return
    label_problems = [problem.message for problem in failed if problem.type == "BadLabel"]
    label_problem = len(label_problems) * 2 > len(failed)
    chosen = label_problems if label_problem else [problem.message for problem in failed if problem.type != "BadLabel"]
    example, count = Counter(chosen).most_common(1)[0][0], len(chosen)
    option = "data.classes" if label_problem else dataset_format(source).annotations_option
    detail = (
        f"; the class list's keys look like {', '.join(repr(k) for k in classes.keys[:3])}" if label_problem else ""
    )
    raise ConfigError(
        option,
        f"{len(failed)} of {len(records)} samples cannot be audited before any image is read "
        f"({count} like {example!r}){detail}",
    )


def check_box_units(records: list[SampleRecord], box_units: str, option: str) -> None:
    """Refuse at start boxes whose coordinates are plainly in the other unit than ``box_units`` says.

    With ``pixels``: every box of the dataset within :data:`NORMALIZED_LOOKING_RANGE` while the images are
    larger than :data:`NORMALIZED_CHECK_MIN_SIDE` (their annotated size, else the file header, of the first
    :data:`NORMALIZED_CHECK_IMAGES` boxed samples): fractions of the image read as pixels, every box a
    speck in the corner (which would otherwise be a BadAnnotation row for every sample, or with larger
    images, a run of "object not in input"). With ``normalized``: most boxes reach past 1.5 (pixels read
    as fractions). ``option`` is the option named (``data.box_units``, or the annotations of a format
    that has no such option).
    """
    boxed = [r for r in records if r.problem is None and len(r.boxes)]
    if not boxed:
        return
    coords = np.concatenate([np.asarray(r.boxes, dtype=np.float64).reshape(-1, 4) for r in boxed])
    low, high = NORMALIZED_LOOKING_RANGE
    if box_units == "pixels":
        if coords.min() < low or coords.max() > high:
            return
        sizes = [size for size in (_image_size(r) for r in boxed[:NORMALIZED_CHECK_IMAGES]) if size]
        if not sizes or min(min(size) for size in sizes) <= NORMALIZED_CHECK_MIN_SIDE:
            return
        hint = "set data.box_units=normalized" if option == "data.box_units" else "this format's boxes are pixels"
        raise ConfigError(
            option,
            f"every box of the {len(boxed)} annotated samples lies within [{low:g}, {high:g}] while the images "
            f"checked are {sizes[0][0]}x{sizes[0][1]} px or larger: these look like coordinates normalised to the "
            f"image size, read as pixels ({hint})",
        )
    outside = np.count_nonzero((coords > high).any(axis=1))
    if outside * 2 > len(coords):
        raise ConfigError(
            option,
            f"data.box_units=normalized, but {outside} of {len(coords)} boxes reach past {high:g} (up to "
            f"{coords.max():g}): these look like pixel coordinates; set data.box_units=pixels",
        )


def _image_size(record: SampleRecord) -> tuple[int, int] | None:
    """The record's ``(width, height)``: as annotated, else from the image file's header (None if unreadable)."""
    if record.annotated_size:
        width, height = record.annotated_size  # a tuple, or a list read back from a file
        return width, height
    try:
        with Image.open(record.image_path) as image:
            return image.size
    except Exception:  # noqa: BLE001 -- an unreadable file is that sample's decode error later, not this check's
        return None


def printable_ids(record: SampleRecord) -> SampleRecord:
    """The record with its id and problem message as printable text (:func:`~pipeline.data.records.printable_text`:
    an undecodable file-name byte becomes ``\\xNN``); ``image_path`` keeps the real name, to open the file."""
    problem = record.problem and Problem(record.problem.type, printable_text(record.problem.message))
    if printable_text(record.sample_id) == record.sample_id and problem == record.problem:
        return record
    return replace(record, sample_id=printable_text(record.sample_id), problem=problem)


def mark_duplicates(records: list[SampleRecord]) -> list[SampleRecord]:
    """Keep the first record of each id; later ones become problem records with a unique id
    ``<id>#dupN`` (N = 1, 2, ... skipping any id that a record of the dataset already has, so a real
    ``img#dup1`` keeps its id). The reader's own problem, e.g. which files clash, is kept after
    ``duplicate id``."""
    taken = {record.sample_id for record in records}
    seen: dict[str, int] = {}
    out = []
    for record in records:
        original = record.sample_id
        number = seen.get(original, 0)
        if number:
            while f"{original}#dup{number}" in taken:
                number += 1
            taken.add(f"{original}#dup{number}")
            detail = f": {record.problem.message}" if record.problem else ""
            record = SampleRecord(
                f"{original}#dup{number}",
                record.image_path,
                record.label,
                empty_boxes(),
                problem=Problem("DuplicateId", f"duplicate id {original!r}{detail}"),
            )
        seen[original] = number + 1
        out.append(record)
    return out


def read_metadata(path: Path | None) -> pd.DataFrame | None:
    """Per-sample columns to carry into the report (a CSV with an ``id`` column), indexed by id."""
    if path is None:
        return None
    try:
        # ids as text (a zero-padded COCO id must not become a number); nullable types keep an integer
        # column with gaps an integer and a true/false column a boolean
        frame = pd.read_csv(
            path, dtype={"id": str}, keep_default_na=False, na_values=[""], dtype_backend="numpy_nullable"
        )
    except Exception as error:  # noqa: BLE001 -- pandas raises many types; all mean "not a readable CSV"
        raise ConfigError(
            "data.metadata", f"cannot read {path}: {(str(error).splitlines() or [type(error).__name__])[0]}"
        ) from error
    if "id" not in frame.columns:
        raise ConfigError("data.metadata", f"{path} has no 'id' column")
    reserved = [column for column in frame.columns if column in REPORT_FINISH_COLUMNS]
    if reserved:  # the report adds these when the run finishes: it would replace them silently
        logs.event(
            logger,
            "metadata_shadowed",
            f"cam-audit: warning: data.metadata columns {', '.join(map(repr, reserved))} have the names of report "
            "columns and are left out; rename them in the CSV to keep them",
            logging.WARNING,
            columns=reserved,
        )
        frame = frame.drop(columns=reserved)
    frame["id"] = frame["id"].astype(str)
    frame = frame.drop_duplicates()  # a row repeated as it is says nothing new
    repeated = frame["id"][frame["id"].duplicated()]
    if len(repeated):  # the same id with other values: which row is right cannot be guessed
        raise ConfigError(
            "data.metadata",
            f"{path}: id {repeated.iloc[0]!r} has rows with different values ({repeated.nunique()} such ids); "
            "keep one row per id",
        )
    return frame.set_index("id")
