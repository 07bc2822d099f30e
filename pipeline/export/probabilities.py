"""The softmax over all classes per image (``report.save_probabilities=true`` -> ``probabilities.parquet``).

One row per audited image: ``id`` (as in ``samples.parquet``) and ``probabilities``, a fixed-size list of the
``C`` class probabilities in the model's output order (``report.probabilities_dtype``: float32, or float16 at
half the size), null for an image whose logits were not finite. With ``label`` from ``samples.parquet``
(indices into the same outputs) it is what label-issue finders take, e.g.
``cleanlab.filter.find_label_issues(labels, pred_probs)`` (:func:`labels_and_probabilities`). For that use
the audited split must not be the split the model was trained on: on its training images a model is
confident about whatever label it was fitted to, so label errors there do not show.

Written like ``maps.parquet``: parts (``parts/probabilities-*.parquet``) by the run's sink, merged when the
run finishes; a resume drops orphan rows and makes the missing ones again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

COLUMN = "probabilities"  # the [B, C] softmax in audit_batch's columns (not a samples column)
TABLE = "probabilities"  # parts/probabilities-*.parquet -> probabilities.parquet
DTYPES = ("float32", "float16")
DESCRIPTIONS = {
    "id": "sample id (as in samples.parquet)",
    COLUMN: "softmax probability of every class, in the model's output order (index = samples.parquet's label "
    "and pred); null where the logits were not finite",
}


def probabilities_schema(n_classes: int, dtype: str = "float32") -> pa.Schema:
    """``id`` and a fixed-size list of ``n_classes`` probabilities of ``dtype`` (float32 or float16)."""
    if dtype not in DTYPES:
        raise ValueError(f"probabilities dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    value = pa.float16() if dtype == "float16" else pa.float32()
    return pa.schema(
        [
            pa.field("id", pa.string(), metadata={"description": DESCRIPTIONS["id"]}),
            pa.field(COLUMN, pa.list_(value, n_classes), metadata={"description": DESCRIPTIONS[COLUMN]}),
        ]
    )


def probability_rows(ids: pa.Array, probabilities: torch.Tensor, schema: pa.Schema) -> pa.Table:
    """Rows for one batch: ``probabilities`` ``[B, C]`` on the host (NaN rows, the non-finite images, as null)."""
    values = probabilities.float().numpy()
    value_type = schema.field(COLUMN).type.value_type
    flat = values.astype(np.float16 if value_type == pa.float16() else np.float32).reshape(-1)
    missing = pa.array(np.isnan(values).any(axis=1)) if values.size else None
    lists = pa.FixedSizeListArray.from_arrays(pa.array(flat, value_type), values.shape[1], mask=missing)
    return pa.table({"id": ids, COLUMN: lists}, schema=schema)


def labels_and_probabilities(run_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(ids, labels [N] int64, pred_probs [N, C] float32)`` of a finished run's images with finite outputs,
    in ``probabilities.parquet``'s order, each row renormalised to sum to 1 (float16 rounding): the arguments
    of ``cleanlab.filter.find_label_issues(labels, pred_probs)``."""
    run_dir = Path(run_dir)
    table = pq.read_table(run_dir / "probabilities.parquet")
    table = table.filter(table.column(COLUMN).is_valid())
    ids = table.column("id").to_pylist()
    column = table.column(COLUMN).combine_chunks()
    n_classes = column.type.list_size
    probs = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, n_classes)
    probs /= probs.sum(axis=1, keepdims=True)
    samples = pq.read_table(run_dir / "samples.parquet", columns=["id", "label"]).to_pydict()
    label_of = dict(zip(samples["id"], samples["label"]))
    labels = np.asarray([label_of[i] for i in ids], dtype=np.int64)
    return ids, labels, probs
