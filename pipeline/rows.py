"""Row building: a batch's score columns (device tensors) become Arrow rows of ``samples.parquet``.

:func:`start_host_copy` starts one non-blocking copy of the batch's ``[B]`` columns to the host (the loop
goes on meanwhile); :func:`columns_to_table` waits for it and builds the rows in the samples schema: flags
as booleans, labels as integers, null where a value is undefined or the image's outputs were not finite,
the class names beside their indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from pipeline.compute import INPUT_COLUMNS
from pipeline.data.batch import Batch
from pipeline.reports import schema as report_schema
from pipeline.reports.overlays import OverlayFailure


@dataclass
class HostColumns:
    """A batch's ``[B]`` score vectors on their way to the host: one stacked copy, started without waiting.

    Attributes:
        names: column names, the rows of ``matrix``.
        matrix: ``[n_columns, B]`` float32 on the host (pinned when copied from CUDA; complete after ``wait``).
        vectors: name -> ``[B, T]`` host tensors (per-image vectors such as the MaxBoxAccV2 state).
        ready: a CUDA event recorded after the copies, or None on the CPU.
    """

    names: list[str]
    matrix: torch.Tensor
    vectors: dict[str, torch.Tensor]
    ready: torch.cuda.Event | None = None

    def wait(self) -> None:
        """Block until the copies have landed (only the calling thread waits)."""
        if self.ready is not None:
            self.ready.synchronize()


def start_host_copy(columns: dict[str, torch.Tensor]) -> HostColumns:
    """Copy the ``[B]`` (and ``[B, T]``) columns to the host with non-blocking copies into pinned memory, so the
    main loop can launch the next batch while they travel; :meth:`HostColumns.wait` before reading them."""
    names = [n for n, c in columns.items() if c.dim() == 1]
    stacked = torch.stack([columns[n].float() for n in names])  # [n_columns, B]: one transfer
    on_cuda = stacked.device.type == "cuda"

    def to_host(tensor: torch.Tensor) -> torch.Tensor:
        if not on_cuda:
            return tensor.cpu()
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        return host

    matrix = to_host(stacked)
    vectors = {n: to_host(c.float()) for n, c in columns.items() if c.dim() == 2}
    ready = None
    if on_cuda:
        ready = torch.cuda.Event()
        ready.record()
    return HostColumns(names, matrix, vectors, ready)


def columns_to_table(
    columns: dict[str, torch.Tensor] | HostColumns,
    batch: Batch,
    class_names: list[str],
    todo_arrays: dict[str, pa.Array],
    schema: pa.Schema,
) -> pa.Table:
    """An Arrow table of the batch's rows from its score columns (device tensors, or a :class:`HostColumns`
    already on its way to the host, which is waited for here). ``todo_arrays`` are the per-record columns
    (id, path, label, metadata: :func:`pipeline.reports.schema.record_arrays`) of the run's records, taken at
    ``batch.index``; ``class_names`` name the class indices."""
    host = columns if isinstance(columns, HostColumns) else start_host_copy(columns)
    host.wait()
    names, matrix = host.names, host.matrix.numpy()
    positions = pa.array(batch.index.numpy())
    data = {key: array.take(positions) for key, array in todo_arrays.items()}
    null = (
        matrix[names.index("non_finite_output")].astype(bool)
        if "non_finite_output" in names
        else np.zeros(matrix.shape[1], bool)
    )
    for row, name in enumerate(names):
        data[name] = nullable(
            matrix[row],
            null if name not in INPUT_COLUMNS + ("non_finite_output",) else None,
            schema.field(name).type if name in schema.names else None,
        )
    for name, values in host.vectors.items():  # per-image vectors (MaxBoxAccV2 state) become list columns
        flat = values.numpy()
        data[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1], mask=pa.array(null))
    names_of = np.asarray(class_names, dtype=object)
    for row, name in enumerate(names):
        if name == "pred" or name.endswith("_class"):  # a map's class: its name beside its index (top-k maps too)
            known = null | np.isnan(matrix[row])
            index = np.where(known, 0, np.nan_to_num(matrix[row])).astype(np.int64)
            data["pred_name" if name == "pred" else f"{name}_name"] = pa.array(names_of[index], pa.string(), mask=known)
    data["width"], data["height"] = batch.width.numpy(), batch.height.numpy()
    data["n_boxes_dropped"], data["n_boxes_over_cap"] = batch.n_boxes_dropped.numpy(), batch.n_boxes_over_cap.numpy()
    return pa.table({field.name: data[field.name] for field in schema}).cast(schema)


def nullable(values: np.ndarray, null: np.ndarray | None, arrow_type: pa.DataType | None) -> np.ndarray | pa.Array:
    """One ``[B]`` float column as its Arrow type (flags as booleans, labels as integers), null where the value
    is undefined (NaN: e.g. a box score without a box) or where ``null`` is set (a non-finite image)."""
    missing = np.isnan(values) if null is None else np.isnan(values) | null
    if arrow_type is None or pa.types.is_floating(arrow_type):
        return pa.array(values, arrow_type, mask=missing)
    filled = np.where(missing, 0, values)
    return pa.array(
        filled.astype(bool) if pa.types.is_boolean(arrow_type) else filled.astype(np.int64), mask=missing
    ).cast(arrow_type)


def overlay_error_rows(failures: list[OverlayFailure], table: pa.Table) -> pa.Table:
    """``errors.parquet`` rows (stage ``overlay``) for the overlays of ``table``'s samples that could not be made."""
    paths = dict(zip(table.column("id").to_pylist(), table.column("path").to_pylist()))
    return pa.table(
        {
            "id": [f.sample_id for f in failures],
            "path": [paths.get(f.sample_id) for f in failures],
            "stage": ["overlay"] * len(failures),
            "error_type": [f.error_type for f in failures],
            "message": [f.message for f in failures],
        },
        schema=report_schema.ERRORS_SCHEMA,
    )
