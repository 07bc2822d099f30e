"""The columns of ``samples.parquet`` and ``errors.parquet``.

``samples.parquet``, one row per scored image:
- identity: ``id``, ``path``, ``label``/``label_name`` (true class), ``pred``/``pred_name``,
  ``confidence`` (max softmax probability), ``prob_true``, ``correct``;
- geometry: ``width``/``height`` (stored image), ``n_boxes`` (boxes inside the network input),
  ``n_boxes_dropped`` (inverted, empty or outside the input), ``n_boxes_over_cap`` (annotated boxes beyond
  ``data.max_boxes``, not scored), ``no_box_in_input`` (flag: no box is left,
  e.g. the object lies outside the centre crop; its box scores are NaN, not 0);
- ``non_finite_output``: the model gave NaN/inf logits or maps for this image (diverged weights, a zero
  std): its prediction (``pred``, ``pred_name``, ``confidence``, ``prob_true``, ``correct``) and every map
  column are null, and the summary leaves it out of every dataset number (``non_finite_images`` counts it);
- per map ``m`` in ``pred``, ``true`` (and ``top2``.. with ``cam.top_k``; ``neg_*`` with
  ``cam.negative``): ``m_empty``, ``m_map_max`` and every score of the registry
  :data:`pipeline.scores.registry.SCORES` as ``m_<score>`` (per tau ``m_<score>_tau015``...);
- with ``scores.maxboxacc.enabled``: ``true_maxboxacc_best_iou``, per threshold the best IoU of any
  contour box of the true-class map (MaxBoxAccV2's per-image state, -1 for none);
- with ``report.shortcuts.grid`` > 0: ``pred_off_box_grid``, the predicted-class map's energy outside the
  boxes per cell of a grid x grid partition of the network input (row-major; the shortcut finder's input);
- ``triage`` (added when the run finishes, :mod:`pipeline.reports.triage`): which images need a look, and why;
- the dataset's metadata columns (e.g. ``marker_present`` for the built-in default).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.data.records import SampleRecord, printable_text
from pipeline.reports.shortcuts import GRID_COLUMN, ShortcutSettings
from pipeline.scores.registry import score_columns

ERRORS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("path", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
    ]
)

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
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("n_boxes", pa.int32()),
    ("n_boxes_dropped", pa.int32()),
    ("n_boxes_over_cap", pa.int32()),
    ("no_box_in_input", pa.bool_()),
    ("non_finite_output", pa.bool_()),
]


def score_fields(cfg) -> list[tuple[str, pa.DataType]]:
    """``(column suffix, Arrow type)`` of every score :func:`~pipeline.scores.score_map` returns for this
    configuration, in its order (from the score registry)."""
    return [(column, pa.type_for_alias(score.dtype)) for column, score, _ in score_columns(tuple(cfg.scores.taus))]


def samples_schema(setup, cfg) -> pa.Schema:
    """The schema of the samples table for this run (fixed by the configuration, so parts of a resumed
    run match)."""
    fields = list(IDENTITY)
    prefixes = [""] + (["neg_"] if cfg.cam.negative else [])
    for prefix in prefixes:
        for name in setup.map_names:
            if name.startswith("top"):
                fields.append((f"{prefix}{name}_class", pa.int32()))
            fields += [(f"{prefix}{name}_empty", pa.bool_()), (f"{prefix}{name}_map_max", pa.float32())]
            for score, dtype in score_fields(cfg):
                fields.append((f"{prefix}{name}_{score}", dtype))  # peaks too: NaN for an empty map
    if cfg.scores.maxboxacc.enabled:
        fields.append(("true_maxboxacc_best_iou", pa.list_(pa.float32(), int(cfg.scores.maxboxacc.thresholds))))
    grid = ShortcutSettings.from_config(cfg.report).grid
    if grid > 0:
        fields.append((GRID_COLUMN, pa.list_(pa.float32(), grid * grid)))
    if setup.metadata is not None:
        for column, dtype in setup.metadata.dtypes.items():
            if column not in {f[0] for f in fields}:
                fields.append((column, pa.from_numpy_dtype(dtype) if dtype != object else pa.string()))  # noqa: E721 (a NumPy dtype equals `object`, it is not it)
    return pa.schema(fields)


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
            if column in arrays:  # e.g. metadata's own `label` (a name): the pipeline's column wins, as in the schema
                continue
            arrays[column] = pa.array(frame[column].to_numpy(), type=schema.field(column).type, from_pandas=True)
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
