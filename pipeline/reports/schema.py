"""The columns of ``samples.parquet`` and ``errors.parquet``.

``samples.parquet``, one row per scored image:
- identity: ``id``, ``path``, ``label``/``label_name`` (true class), ``pred``/``pred_name``,
  ``confidence`` (max softmax probability), ``prob_true``, ``correct``, ``hardness`` and ``mistakenness``
  (FiftyOne brain's definitions, :mod:`pipeline.export.label_quality`);
- geometry: ``width``/``height`` (stored image), ``n_boxes`` (boxes inside the network input),
  ``n_boxes_dropped`` (valid boxes the crop cut away: outside the input), ``n_boxes_over_cap`` (annotated boxes beyond
  ``data.max_boxes``, not scored), ``no_box_in_input`` (flag: no box is left,
  e.g. the object lies outside the centre crop; its box scores are null, not 0);
- ``non_finite_output``: the model gave NaN/inf logits or maps for this image (diverged weights, a zero
  std): its prediction (``pred``, ``pred_name``, ``confidence``, ``prob_true``, ``correct``) and every map
  column are null, and the summary leaves it out of every dataset number (``non_finite_images`` counts it);
- per map ``m`` in ``pred``, ``true`` (and ``top2``.. with ``cam.top_k``, each with ``m_class``,
  ``m_class_name``, ``m_prob``; ``neg_*`` with ``cam.negative``): ``m_empty``, ``m_map_max`` and every score of
  the registry :data:`pipeline.scores.registry.SCORES` as ``m_<score>`` (per tau ``m_<score>_tau015``...;
  flags such as ``m_pointing_hit``, ``m_localised_<tau>`` as nullable booleans; a missing value is null, never NaN);
- with ``scores.maxboxacc.enabled``: ``true_maxboxacc_best_iou``, per threshold the best IoU of any
  contour box of the true-class map (MaxBoxAccV2's per-image state, -1 for none);
- with ``report.shortcuts.grid`` > 0: ``pred_off_box_grid``, the predicted-class map's energy outside the
  boxes per cell of a grid x grid partition of the network input (row-major; the shortcut finder's input);
- with ``report.strategies.grid`` > 0: ``pred_map_grid``, the predicted-class map averaged per cell of a grid x
  grid partition of the network input (the strategy clustering's input, :mod:`pipeline.reports.strategies`);
- with ``faithfulness.*``: ``<m>_masked_prob``, ``<m>_confidence_drop``, ``<m>_confidence_increase`` (``m`` = pred,
  true; every row) and ``pred_deletion_auc``, ``pred_insertion_auc`` (the sample's rows, null elsewhere):
  :mod:`pipeline.faithfulness.columns`;
- ``triage`` (added when the run finishes, :mod:`pipeline.reports.triage`): which images need a look, and why;
- the dataset's metadata columns (e.g. ``marker_present`` for the built-in default).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.data.records import SampleRecord, printable_text
from pipeline.export.label_quality import HARDNESS_DESCRIPTION, MISTAKENNESS_DESCRIPTION
from pipeline.faithfulness.columns import faithfulness_fields
from pipeline.reports.shortcuts import GRID_COLUMN
from pipeline.reports.strategies import MAP_GRID_COLUMN, MAP_GRID_DESCRIPTION
from pipeline.scores import registry
from pipeline.scores.registry import score_columns
from pipeline.settings import Settings

# Every column's one-line description, stored in the Parquet field metadata (``description``) and listed in
# the README's data dictionary (``scripts/data_dictionary.py``). Scores describe themselves in the registry.
ERRORS_COLUMNS = {
    "id": "sample id (as in samples.parquet)",
    "path": "image path",
    "stage": "where it failed: index, decode, annotation, preprocess",
    "error_type": "what failed: DuplicateId, PathOutsideRoot, MissingImage, MissingAnnotation, BadLabel, BadAnnotation, or the exception's type",
    "message": "the reason, for a person",
}
IDENTITY_DESCRIPTIONS = {
    "id": "sample id (file stem for folder datasets; text, also when it looks like a number)",
    "path": "image path",
    "label": "true class: index into the model's outputs",
    "label_name": "true class name",
    "pred": "predicted class (arg max of the logits): index into the model's outputs",
    "pred_name": "predicted class name",
    "confidence": "softmax probability of the predicted class",
    "prob_true": "softmax probability of the true class",
    "correct": "the prediction is the true class",
    "hardness": HARDNESS_DESCRIPTION,
    "mistakenness": MISTAKENNESS_DESCRIPTION,
    "width": "stored image width, pixels",
    "height": "stored image height, pixels",
    "n_boxes": "ground-truth boxes inside the network input",
    "n_boxes_dropped": "annotated boxes the preprocessing cut away (outside the network input; a degenerate or out-of-image box makes the sample a BadAnnotation error row instead)",
    "n_boxes_over_cap": "annotated boxes beyond data.max_boxes: not scored",
    "no_box_in_input": "no box is left in the input (e.g. the object lies outside the centre crop): box scores are null",
    "non_finite_output": "the model gave NaN/inf logits or maps for this image: its prediction and map columns are null",
}
IDENTITY = [
    ("id", pa.string()),
    ("path", pa.string()),
    ("label", pa.int32()),
    ("label_name", pa.string()),
    ("pred", pa.int32()),
    ("pred_name", pa.string()),
    ("confidence", pa.float32()),
    ("prob_true", pa.float32()),
    ("correct", pa.bool_()),
    ("hardness", pa.float32()),
    ("mistakenness", pa.float32()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("n_boxes", pa.int32()),
    ("n_boxes_dropped", pa.int32()),
    ("n_boxes_over_cap", pa.int32()),
    ("no_box_in_input", pa.bool_()),
    ("non_finite_output", pa.bool_()),
]
MAP_DESCRIPTIONS = {
    "pred": "the predicted class's map",
    "true": "the true class's map",
}  # top<k>: the k-th ranked class's map
MAP_COLUMN_DESCRIPTIONS = {
    "class": "class of this map: index into the model's outputs",
    "class_name": "class name of this map",
    "prob": "softmax probability of this map's class",
    "empty": "the map is constant after ReLU (nothing positive): its peak and threshold scores are null",
    "map_max": "maximum of the raw map before normalisation (its scale)",
}
MAXBOXACC_DESCRIPTION = (
    "MaxBoxAccV2 state: per threshold, the best IoU of any contour box of the true-class map (-1: none)"
)
METADATA_DESCRIPTION = "from the dataset's metadata file (data.metadata); null where it has no row for this id"
ERRORS_SCHEMA = pa.schema(
    [pa.field(name, pa.string(), metadata={"description": text}) for name, text in ERRORS_COLUMNS.items()]
)


def map_description(map_name: str) -> str:
    prefix, counterfactual = (map_name[4:], True) if map_name.startswith("neg_") else (map_name, False)
    text = MAP_DESCRIPTIONS.get(prefix) or f"the {prefix[3:]}-th ranked class's map"
    return f"{text} (negative, counterfactual)" if counterfactual else text


def score_fields(taus: Sequence[float]) -> list[tuple[str, pa.DataType]]:
    """``(column suffix, Arrow type)`` of every score :func:`~pipeline.scores.score_map` returns for the
    thresholds ``taus`` (``scores.taus``), in its order (from the score registry)."""
    return [(column, pa.type_for_alias(score.dtype)) for column, score, _ in score_columns(tuple(taus))]


def metadata_arrow_types(metadata: pd.DataFrame) -> dict[str, tuple[pa.DataType, str | None]]:
    """Arrow type and pandas extension dtype (or None) of each metadata column.

    Text -> string, integers (also with missing values) -> int64 (pandas ``Int64``), true/false -> bool
    (pandas ``boolean``), numbers -> float64; a column with no value at all -> string.
    """
    out = {}
    for column in metadata.columns:
        series = metadata[column]
        arrow = pa.Schema.from_pandas(series.to_frame(), preserve_index=False).field(str(column)).type
        if (
            series.isna().all()
            or pa.types.is_large_string(arrow)
            or pa.types.is_null(arrow)
            or pa.types.is_string(arrow)
        ):
            arrow, extension = pa.string(), None
        elif pa.types.is_integer(arrow):
            arrow, extension = pa.int64(), "Int64"
        elif pa.types.is_boolean(arrow):
            extension = "boolean"
        elif pa.types.is_floating(arrow):
            arrow, extension = pa.float64(), None
        else:
            extension = None
        out[str(column)] = (arrow, extension)
    return out


def pandas_metadata(schema: pa.Schema, extension_dtypes: dict[str, str]) -> bytes:
    """The ``pandas`` schema metadata that makes ``pandas.read_parquet`` give ``extension_dtypes`` (e.g.
    ``boolean`` for a flag with nulls, which would otherwise be an object column of True/False/None)."""
    frame = schema.empty_table().to_pandas()
    for column, dtype in extension_dtypes.items():
        frame[column] = frame[column].astype(dtype)
    return pa.Schema.from_pandas(frame, preserve_index=False).metadata[b"pandas"]


def samples_schema(setup, settings: Settings) -> pa.Schema:
    """The schema of the samples table for this run (fixed by the ``settings`` and ``setup.map_names`` /
    ``setup.metadata``, so parts of a resumed run match). Every field has a ``description`` in its metadata;
    flags with undefined values are nullable booleans (pandas reads them as ``boolean``), missing numbers
    are null."""
    fields = [pa.field(name, dtype, metadata={"description": IDENTITY_DESCRIPTIONS[name]}) for name, dtype in IDENTITY]
    columns = map_columns(setup.map_names, settings) + per_image_columns(settings)
    if setup.metadata is not None:
        taken = {f.name for f in fields} | {name for name, _, _, _ in columns}
        columns += [
            (column, dtype, METADATA_DESCRIPTION, pandas_dtype)
            for column, (dtype, pandas_dtype) in metadata_arrow_types(setup.metadata).items()
            if column not in taken
        ]
    fields += [pa.field(name, dtype, metadata={"description": about}) for name, dtype, about, _ in columns]
    extension = {name: pandas_dtype for name, _, _, pandas_dtype in columns if pandas_dtype}
    schema = pa.schema(fields)
    return schema.with_metadata({b"pandas": pandas_metadata(schema, extension)})


# (name, Arrow type, description, pandas extension dtype or None): one column of the samples table.
Column = tuple[str, pa.DataType, str, "str | None"]


def map_columns(map_names: list[str], settings: Settings) -> list[Column]:
    """Every map's columns: its class (top-k maps), emptiness, raw maximum and every score of the registry,
    for the positive maps and with ``cam.negative`` the ``neg_`` ones. A 1 / 0 / NaN score is a boolean
    with nulls (pandas ``boolean``)."""
    columns: list[Column] = []
    for prefix in [""] + (["neg_"] if settings.cam.negative else []):
        for name in map_names:
            map_name = f"{prefix}{name}"
            about = map_description(map_name)
            if name.startswith("top"):
                columns += [
                    (f"{map_name}_class", pa.int32(), f"{MAP_COLUMN_DESCRIPTIONS['class']}; {about}", None),
                    (f"{map_name}_class_name", pa.string(), f"{MAP_COLUMN_DESCRIPTIONS['class_name']}; {about}", None),
                    (f"{map_name}_prob", pa.float32(), f"{MAP_COLUMN_DESCRIPTIONS['prob']}; {about}", None),
                ]
            columns += [
                (f"{map_name}_empty", pa.bool_(), f"{MAP_COLUMN_DESCRIPTIONS['empty']}; {about}", None),
                (f"{map_name}_map_max", pa.float32(), f"{MAP_COLUMN_DESCRIPTIONS['map_max']}; {about}", None),
            ]
            for score, dtype in score_fields(settings.scores.taus):
                boolean = pa.types.is_boolean(dtype)  # peaks and boxes too: null for an empty map
                columns.append(
                    (
                        f"{map_name}_{score}",
                        dtype,
                        f"{registry.describe(score)}; {about}",
                        "boolean" if boolean else None,
                    )
                )
    return columns


def per_image_columns(settings: Settings) -> list[Column]:
    """The per-image vectors and extras the settings switch on: the MaxBoxAccV2 state, the off-box grid, the
    strategy grid and the faithfulness columns."""
    columns: list[Column] = []
    if settings.scores.maxboxacc.enabled:
        thresholds = settings.scores.maxboxacc.thresholds
        columns.append(("true_maxboxacc_best_iou", pa.list_(pa.float32(), thresholds), MAXBOXACC_DESCRIPTION, None))
    grid = settings.report.shortcuts.grid
    if grid > 0:
        about = (
            "the predicted-class map's energy outside the boxes per cell of a "
            "grid x grid partition of the network input (row-major; report.shortcuts.grid)"
        )
        columns.append((GRID_COLUMN, pa.list_(pa.float32(), grid * grid), about, None))
    strategy_grid = settings.report.strategies.grid
    if strategy_grid > 0:
        columns.append(
            (MAP_GRID_COLUMN, pa.list_(pa.float32(), strategy_grid * strategy_grid), MAP_GRID_DESCRIPTION, None)
        )
    for name, dtype, description in faithfulness_fields(settings.faithfulness):
        columns.append((name, dtype, description, "boolean" if pa.types.is_boolean(dtype) else None))
    return columns


def is_metadata_field(field: pa.Field) -> bool:
    """The column came from ``data.metadata`` (its description says so)."""
    return (field.metadata or {}).get(b"description") == METADATA_DESCRIPTION.encode()


def with_descriptions(table: pa.Table, described: dict[str, str]) -> pa.Table:
    """``table`` with each known column's description in its field metadata."""
    fields = [
        field.with_metadata({**(field.metadata or {}), b"description": described[field.name].encode()})
        if field.name in described
        else field
        for field in table.schema
    ]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def descriptions(schema: pa.Schema) -> dict[str, str]:
    """Column name -> description, from the field metadata."""
    return {f.name: (f.metadata or {}).get(b"description", b"").decode() for f in schema}


def unmatched_metadata_ids(metadata: pd.DataFrame | None, records: list[SampleRecord]) -> list[str]:
    """The ids of the good records the metadata has no row for (in id order)."""
    if metadata is None:
        return []
    known = set(metadata.index)
    return sorted(r.sample_id for r in records if not r.problem and r.sample_id not in known)


def record_arrays(records: list[SampleRecord], setup, schema: pa.Schema) -> dict[str, pa.Array]:
    """Per-record columns known before decoding (id, path, label, metadata), as Arrow arrays to ``take``
    rows from by batch index."""
    names = np.asarray(setup.classes.names, dtype=object)
    labels = np.asarray([r.label for r in records], dtype=np.int64)
    arrays = {
        "id": pa.array([r.sample_id for r in records], pa.string()),
        "path": pa.array(
            [printable_text(r.image_path) for r in records], pa.string()
        ),  # the real name may not be UTF-8
        "label": pa.array(labels.astype(np.int32)),
        "label_name": pa.array(names[labels] if len(records) else [], pa.string()),
    }
    if setup.metadata is not None:
        frame = setup.metadata.reindex(pd.Index([r.sample_id for r in records], dtype=object))
        for column in setup.metadata.columns:
            if column not in schema.names or not is_metadata_field(schema.field(column)):
                continue  # named like a report column (`label`, `correct`): the report's column wins, as in the schema
            values = frame[column].astype(object) if schema.field(column).type == pa.string() else frame[column]
            arrays[column] = pa.Array.from_pandas(values, type=schema.field(column).type)
    return arrays


def error_rows(entries: list[tuple[SampleRecord, str, str, str]]) -> pa.Table:
    """Rows of ``errors.parquet`` from ``(record, stage, error type, message)``; paths and messages as
    printable text (a decoder's message can quote a file name that is not UTF-8)."""
    return pa.table(
        {
            "id": [r.sample_id for r, *_ in entries],
            "path": [printable_text(r.image_path) for r, *_ in entries],
            "stage": [e[1] for e in entries],
            "error_type": [e[2] for e in entries],
            "message": [printable_text(str(e[3])) for e in entries],
        },
        schema=ERRORS_SCHEMA,
    )
