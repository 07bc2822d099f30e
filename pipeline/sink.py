"""Where a run's rows go: the row-sink seam, and its Parquet-parts implementation.

The run loop hands every batch to a :class:`RowSink` and knows nothing about files. The one sink,
:class:`ParquetPartsSink`, writes atomic Parquet parts under ``<run>/parts/`` (``samples``, ``errors`` and,
with ``cam.save_maps``, ``maps``; with ``report.save_probabilities``, ``probabilities``;
:mod:`pipeline.reports.parts`) and draws the overlays, on two background threads so that the loop goes on
with the next batch meanwhile:

- the **parquet thread** owns every :class:`~pipeline.reports.parts.PartWriter`: it waits for a batch's
  host copy, builds its rows (:mod:`pipeline.rows`), adds them to the parts, counts the non-finite images
  into the failure budget and hands the batch's overlays on;
- the **overlay thread** draws them (:mod:`pipeline.reports.overlays`); a picture that cannot be made
  becomes an ``overlay`` errors row, handed back to the parquet thread through a list (never a wait on the
  parquet thread: no cycle).

A full disk or another write failure on either thread surfaces in the loop (:meth:`ParquetPartsSink.check`,
:meth:`~ParquetPartsSink.close`) as :class:`~pipeline.reports.background.BackgroundWriteError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import torch

from pipeline.data.batch import Batch
from pipeline.data.records import SampleRecord
from pipeline.export import probabilities
from pipeline.failure_budget import FailureBudget
from pipeline.maps.engine import UpsampledMaps
from pipeline.reports import saved_maps
from pipeline.reports import schema as report_schema
from pipeline.reports.background import BackgroundWorker
from pipeline.reports.overlays import overlay_rows, save_overlays
from pipeline.reports.parts import PartWriter
from pipeline.rows import HostColumns, columns_to_table, overlay_error_rows, start_host_copy
from pipeline.run_folder import done_ids
from pipeline.scores.space import ScoringView
from pipeline.setup import AuditSetup


class RowSink(Protocol):
    """What the run loop writes to. Calls come from the loop's thread, in order."""

    def add_samples(
        self, columns: dict[str, torch.Tensor], batch: Batch, maps: UpsampledMaps, view: ScoringView
    ) -> None:
        """One batch's score columns (device tensors, :func:`pipeline.compute.audit_batch`) with its maps."""

    def add_errors(self, rows: pa.Table) -> None:
        """Rows of ``errors.parquet`` (:data:`pipeline.reports.schema.ERRORS_SCHEMA`)."""

    def add_maps(self, rows: pa.Table) -> None:
        """Rows of ``maps.parquet`` (:data:`pipeline.reports.saved_maps.MAPS_SCHEMA`); ignored without it."""

    def add_probabilities(self, rows: pa.Table) -> None:
        """Rows of ``probabilities.parquet`` (:mod:`pipeline.export.probabilities`); ignored without it."""

    def done_ids(self) -> set[str]:
        """The samples already written by an earlier invocation (a resume skips them)."""

    def start(self, records: list[SampleRecord]) -> None:
        """The records this invocation audits: ``batch.index`` of every later batch points into them."""

    def check(self) -> None:
        """Raise a write failure met so far, to stop the loop early."""

    def close(self) -> None:
        """Write everything queued; raise a write failure met."""

    def abort(self) -> None:
        """Stop for another reason: let queued work land where it can, raise nothing."""


class ParquetPartsSink:
    """The rows of one rank into ``<run>/parts/``, the overlays into ``<run>/overlays/`` (see module doc).

    ``schema`` is the samples schema, ``budget`` the failure budget its non-finite counts go to; ``parts_dir``
    another folder for the parts (a shard's ``parts/shard-<NNN>/``, :mod:`pipeline.shards`)."""

    def __init__(
        self,
        run_dir: Path,
        setup: AuditSetup,
        schema: pa.Schema,
        rank: int,
        budget: FailureBudget,
        parts_dir: Path | None = None,
    ):
        settings = setup.settings
        report = settings.report
        self.parts_dir = parts_dir or run_dir / "parts"
        self.overlay_dir = run_dir / "overlays"
        self.setup, self.schema, self.budget = setup, schema, budget
        self.todo: list[SampleRecord] = []
        self.todo_arrays: dict[str, pa.Array] = {}
        self.samples = PartWriter(self.parts_dir, "samples", schema, rank, report.rows_per_part)
        self.errors = PartWriter(self.parts_dir, "errors", report_schema.ERRORS_SCHEMA, rank, report.rows_per_part)
        self.maps = (
            PartWriter(self.parts_dir, "maps", saved_maps.MAPS_SCHEMA, rank, report.rows_per_part)
            if settings.cam.save_maps
            else None
        )
        self.probabilities = (
            PartWriter(
                self.parts_dir,
                probabilities.TABLE,
                probabilities.probabilities_schema(len(setup.classes.names), report.probabilities_dtype),
                rank,
                report.rows_per_part,
            )
            if report.save_probabilities
            else None
        )
        pending = max(1, settings.runtime.writer_queue)
        self.parquet = BackgroundWorker("parquet", pending)
        self.overlays = BackgroundWorker("overlays", pending) if report.overlays != "none" else None
        self.overlay_failures: list[pa.Table] = []  # appended on the overlay thread, written by the parquet thread

    # --- the RowSink interface -------------------------------------------------------------------------
    def add_samples(
        self, columns: dict[str, torch.Tensor], batch: Batch, maps: UpsampledMaps, view: ScoringView
    ) -> None:
        self.parquet.submit(self._write_batch, start_host_copy(columns), batch, maps, view)

    def add_errors(self, rows: pa.Table) -> None:
        self.parquet.submit(self.errors.add, rows)

    def add_maps(self, rows: pa.Table) -> None:
        if self.maps is not None:
            self.parquet.submit(self.maps.add, rows)

    def add_probabilities(self, rows: pa.Table) -> None:
        if self.probabilities is not None:
            self.parquet.submit(self.probabilities.add, rows)

    def done_ids(self) -> set[str]:
        return done_ids(self.parts_dir)

    def start(self, records: list[SampleRecord]) -> None:
        self.parquet.drain()  # the rows already queued were built for the previous records
        self.todo, self.todo_arrays = records, report_schema.record_arrays(records, self.setup, self.schema)

    def check(self) -> None:
        if self.overlays is not None:
            self.overlays.check()  # a failed overlay writer stops the run in the loop, not on the parquet thread

    def close(self) -> None:
        self.parquet.drain()  # every batch's rows are in the part writers and its overlays queued
        if self.overlays is not None:
            self.overlays.close()
        self.parquet.submit(self._write_overlay_errors)
        self.parquet.submit(self._flush)
        self.parquet.close()

    def abort(self) -> None:
        for worker in (self.parquet, self.overlays):  # parquet first: it hands work on to the overlay thread
            if worker is not None:
                worker.close(check=False)

    # --- on the writer threads -------------------------------------------------------------------------
    def _write_batch(self, host: HostColumns, batch: Batch, maps: UpsampledMaps, view: ScoringView) -> None:
        """On the parquet thread: the batch's rows into the parts, then its overlays to the overlay thread."""
        table = columns_to_table(host, batch, list(self.setup.classes.names), self.todo_arrays, self.schema)
        self.samples.add(table)
        self.budget.non_finite.append(int(pc.sum(table.column("non_finite_output")).as_py() or 0))
        if self.maps is not None:
            signed = maps.signed_low_res
            assert signed is not None  # audit_batch keeps the layer-resolution map on every batch it returns
            self.maps.add(saved_maps.map_rows(table.column("id"), signed, batch, self.setup.map_names))
        if self.probabilities is not None:
            softmax = host.vectors[probabilities.COLUMN]
            self.probabilities.add(
                probabilities.probability_rows(table.column("id"), softmax, self.probabilities.schema)
            )
        self._write_overlay_errors()
        if self.overlays is not None:
            report = self.setup.settings.report
            rows = overlay_rows(table, report.overlays, report.triage)
            self.overlays.submit(self._draw, table, batch, maps, self._original(batch, view), rows)

    def _draw(self, table: pa.Table, batch: Batch, maps: UpsampledMaps, original, rows) -> None:
        """On the overlay thread: a picture that cannot be made is an errors row (its sample stays scored)."""
        failures = save_overlays(
            self.overlay_dir,
            table,
            batch,
            maps,
            original=original,
            rows=rows,
            triage_settings=self.setup.settings.report.triage,
        )
        if failures:
            self.overlay_failures.append(overlay_error_rows(failures, table))

    def _write_overlay_errors(self) -> None:
        """On the parquet thread: the overlay failures reported so far into the errors parts."""
        while self.overlay_failures:
            self.errors.add(self.overlay_failures.pop(0))

    def _flush(self) -> None:
        """On the parquet thread: every writer's pending rows into a part."""
        for writer in (self.maps, self.probabilities, self.samples, self.errors):
            if writer is not None:
                writer.flush()

    def _original(self, batch: Batch, view: ScoringView):
        """For ``scores.space=original``: draw on the whole photo (what the crop cut away is shown dimmed)."""
        if view.grid_size is None:
            return None
        paths = [self.todo[i].image_path for i in batch.index.tolist()]
        return (view, paths, self.setup.preprocess.boxes_refer_to)
