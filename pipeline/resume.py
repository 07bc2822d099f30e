"""Resume, before the loop: the rows a stop left half-done are completed.

A run stopped between a batch's samples part and its pictures (a full disk in the overlay thread: exit 4)
left samples that are scored but have no overlay (``report.overlays``), no maps row (``cam.save_maps``) or no
probabilities row (``report.save_probabilities``) and no error; a resume skips scored samples, so they would
stay so. :func:`complete_done_rows` drops the orphan rows first (:func:`pipeline.run_folder.drop_orphan_rows`),
then makes those samples' maps and probabilities again with the same model and configuration (the
fingerprint guarantees it) and draws their overlays from the stored rows, or writes an ``overlay`` errors row.
"""

from __future__ import annotations

import logging
from collections.abc import Set as AbstractSet
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader

from pipeline import logs
from pipeline.compute import BatchFit, audit_fitting
from pipeline.data.dataset import AuditDataset, collate_samples
from pipeline.data.device_decode import decode_batch_on_device
from pipeline.data.records import SampleRecord
from pipeline.export import probabilities
from pipeline.reports import saved_maps
from pipeline.reports import schema as report_schema
from pipeline.reports.overlays import overlay_rows, safe_file_stem, save_overlays
from pipeline.reports.parts import list_parts, read_column, read_part
from pipeline.rows import overlay_error_rows
from pipeline.run_folder import drop_orphan_rows
from pipeline.setup import AuditSetup
from pipeline.sink import RowSink

logger = logging.getLogger("pipeline.resume")


def incomplete_rows(
    setup: AuditSetup, run_dir: Path, stored: pa.Table, save_maps: bool, parts_dir: Path | None = None
) -> tuple[set[str], set[str]]:
    """The ids of ``stored`` (the samples rows on disk) whose overlay is missing without an overlay error, and
    those whose maps row is missing (``save_maps``)."""
    parts_dir, overlay_dir = parts_dir or run_dir / "parts", run_dir / "overlays"
    report = setup.settings.report
    ids = stored.column("id").to_pylist()
    missing_overlay: set[str] = set()
    if report.overlays != "none":
        rows = overlay_rows(stored, report.overlays, report.triage)
        rows = rows[~stored.column("non_finite_output").to_numpy(zero_copy_only=False)[rows]]
        errors = set(read_column(list_parts(parts_dir, "errors"), "id"))
        drawn = {ids[i] for i in rows if (overlay_dir / f"{safe_file_stem(ids[i])}.jpg").is_file()}
        missing_overlay = {ids[i] for i in rows} - drawn - errors
    missing_maps = set(ids) - set(read_column(list_parts(parts_dir, "maps"), "id")) if save_maps else set()
    return missing_overlay, missing_maps


def complete_done_rows(
    setup: AuditSetup, run_dir: Path, max_boxes: int | None, sink: RowSink, parts_dir: Path | None = None
) -> None:
    """Complete the scored samples of an interrupted run (see the module docstring); writes through ``sink``."""
    parts_dir = parts_dir or run_dir / "parts"  # a shard's own folder (pipeline.shards): never another shard's rows
    stored_parts = [read_part(path) for path in list_parts(parts_dir, "samples")]
    if not stored_parts:
        return
    stored = pa.concat_tables(stored_parts)  # one layout: checked by check_part_layout
    dropped = drop_orphan_rows(parts_dir, set(stored.column("id").to_pylist()))
    missing_overlay, missing_maps = incomplete_rows(setup, run_dir, stored, setup.settings.cam.save_maps, parts_dir)
    missing_probabilities = set()
    if setup.settings.report.save_probabilities:
        written = set(read_column(list_parts(parts_dir, probabilities.TABLE), "id"))
        missing_probabilities = set(stored.column("id").to_pylist()) - written
    redo = [r for r in setup.records if r.sample_id in missing_overlay | missing_maps | missing_probabilities]
    if dropped or redo:
        logs.event(
            logger,
            "resume_completed",
            f"resume: {dropped} orphan rows dropped; {len(missing_overlay)} overlays, {len(missing_maps)} saved "
            f"maps and {len(missing_probabilities)} probabilities rows of samples already scored are made now",
            orphan_rows=dropped,
            overlays=len(missing_overlay),
            maps=len(missing_maps),
            probabilities=len(missing_probabilities),
        )
    if redo:
        redo_rows(setup, run_dir, max_boxes, sink, stored, redo, missing_overlay, missing_maps, missing_probabilities)


def redo_rows(
    setup: AuditSetup,
    run_dir: Path,
    max_boxes: int | None,
    sink: RowSink,
    stored: pa.Table,
    redo: list[SampleRecord],
    missing_overlay: AbstractSet[str],
    missing_maps: AbstractSet[str],
    missing_probabilities: AbstractSet[str] = frozenset(),
) -> None:
    """Run the model again on ``redo`` and write the missing maps and probabilities rows and overlays (captions
    from ``stored``)."""
    position = {sample_id: i for i, sample_id in enumerate(stored.column("id").to_pylist())}
    labels = torch.tensor([r.label for r in redo], dtype=torch.long)
    fit = BatchFit.from_option(setup.settings.runtime.batch_size, setup.device)
    dataset = AuditDataset(redo, setup.preprocess, max_boxes, setup.decode_on_device)
    for batch in DataLoader(dataset, batch_size=fit.size, collate_fn=collate_samples):
        if batch.encoded:
            batch = decode_batch_on_device(
                batch, setup.preprocess, setup.device, [redo[i].image_path for i in batch.index.tolist()]
            )
        unreadable = [redo[f.index] for f in batch.failures if redo[f.index].sample_id in missing_overlay]
        if unreadable:  # scored before, unreadable now: no picture, said in an errors row
            why = "overlay not written: the image could not be read again on resume"
            sink.add_errors(report_schema.error_rows([(r, "overlay", "ImageUnreadable", why) for r in unreadable]))
        if not len(batch):
            continue
        for piece, (columns, maps, view) in audit_fitting(setup, batch, labels[batch.index], fit):
            piece_ids = [redo[i].sample_id for i in piece.index.tolist()]
            table = stored.take(pa.array([position[i] for i in piece_ids]))
            needed = np.flatnonzero([i in missing_maps for i in piece_ids])
            if needed.size:
                rows = saved_maps.map_rows(table.column("id"), maps.signed_low_res, piece, setup.map_names)
                sink.add_maps(rows.take(pa.array(needed)))
            needed = np.flatnonzero([i in missing_probabilities for i in piece_ids])
            if needed.size:
                report = setup.settings.report
                schema = probabilities.probabilities_schema(len(setup.classes.names), report.probabilities_dtype)
                softmax = columns[probabilities.COLUMN].detach().float().cpu()
                sink.add_probabilities(
                    probabilities.probability_rows(table.column("id"), softmax, schema).take(pa.array(needed))
                )
            draw = np.flatnonzero([i in missing_overlay for i in piece_ids])
            if draw.size:
                original = None
                if view.grid_size is not None:
                    paths = [redo[i].image_path for i in piece.index.tolist()]
                    original = (view, paths, setup.preprocess.boxes_refer_to)
                failures = save_overlays(
                    run_dir / "overlays",
                    table,
                    piece,
                    maps,
                    original=original,
                    rows=draw,
                    triage_settings=setup.settings.report.triage,
                )
                if failures:
                    sink.add_errors(overlay_error_rows(failures, table))
