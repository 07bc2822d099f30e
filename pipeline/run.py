"""Orchestration: one image from the loader to its Parquet row.

Read it top to bottom: :func:`run_audit` checks every option, takes the run folder's lock
(:mod:`pipeline.run_folder`) and calls :func:`open_run` (set-up, resume checks, the folder accepted),
:func:`audit_loop` (batches from the loader through :func:`pipeline.compute.audit_batch` into a
:class:`~pipeline.sink.RowSink`, within the :class:`~pipeline.failure_budget.FailureBudget`) and
:func:`finish_run` (the ranks gathered, then :func:`pipeline.merge.write_report`: the explainer's sanity check
and :func:`pipeline.reports.finalize.finalize_run`).

A sharded run (``runtime.shards``, :mod:`pipeline.shards`) takes the same path on its shard of the dataset, into
its own ``parts/shard-<NNN>/``; it ends with :func:`finish_shard` (its complete mark) instead of the report, and
the last shard to finish merges them all (:func:`merge_if_last`) once it has given up its locks.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from signal import SIG_IGN, SIGTERM, SIGUSR1, SIGUSR2, signal

import pyarrow as pa
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import distributed, logs, shards
from pipeline.compute import BatchFit, audit_fitting
from pipeline.data.dataset import AuditDataset, collate_samples
from pipeline.data.device_decode import decode_batch_on_device
from pipeline.data.records import SampleRecord
from pipeline.errors import ConfigError, is_disk_full
from pipeline.failure_budget import FailureBudget
from pipeline.merge import merge_when_complete, write_report
from pipeline.options import check_options
from pipeline.reports import schema as report_schema
from pipeline.reports.background import BackgroundWriteError
from pipeline.reports.parts import DamagedPart, list_parts, remove_leftovers
from pipeline.resume import complete_done_rows
from pipeline.run_folder import (
    check_fingerprint,
    check_part_layout,
    refuse_existing_run,
    run_fingerprint,
    store_fingerprint,
)
from pipeline.settings import Settings, resolved_config, settings_from_config
from pipeline.setup import AuditSetup, max_boxes_option, prepare, warn_shadowed_metadata
from pipeline.sink import ParquetPartsSink, RowSink

logger = logging.getLogger("pipeline.run")


@dataclass
class OpenRun:
    """A run whose folder is accepted: what :func:`open_run` hands on to the loop and the finish."""

    setup: AuditSetup
    samples_schema: pa.Schema
    shard: shards.Shard  # the shard of the dataset it audits (all of it when not sharded)
    resumed: bool  # the folder (the shard's folder) held parts of an earlier invocation
    started: float  # time.perf_counter() at the start
    started_utc: str
    setup_seconds: float  # data generation, training, model load: not the audit's time


def run_audit(cfg: DictConfig, run_dir: Path, on_accepted: Callable[[], None] | None = None) -> dict:
    """Run (or resume) a whole audit into ``run_dir``; returns the summary.

    ``on_accepted`` is called once the configuration is checked and the folder may be written to (the
    command line writes Hydra's record and opens the job log then); nothing before it writes to ``run_dir``
    except a probe file that is removed at once.

    Under ``torchrun`` every rank runs this on its share (:mod:`pipeline.distributed`); rank 0 returns
    the summary of the whole run, the other ranks a line of their own counts. A shard of a sharded run
    returns its own counts, or the summary of the whole run when it was the last and merged.
    """
    settings = settings_from_config(cfg)  # built once: an unknown or ill-typed option stops here
    check_options(cfg)  # every value in range, every enumerated option known: before anything is built
    shard = shards.from_settings(settings.runtime)  # runtime.shard of runtime.shards: which samples
    ranks = distributed.from_environment(settings.runtime.rank, settings.runtime.ranks_from)
    distributed.start(ranks, settings.runtime.sync_timeout_minutes)
    try:
        return _run_holding_the_folder(cfg, settings, run_dir, ranks, shard, on_accepted)
    finally:
        distributed.stop(ranks)


def _run_holding_the_folder(
    cfg: DictConfig,
    settings: Settings,
    run_dir: Path,
    ranks: distributed.Ranks,
    shard: shards.Shard,
    on_accepted: Callable[[], None] | None,
) -> dict:
    """The run under the folder's locks (:func:`pipeline.shards.acquire_locks`): rank 0 holds them, the other
    ranks learn whether it got them. A shard gives them up before it merges (:func:`merge_if_last`)."""
    started, started_utc = time.perf_counter(), logs.utc_now_iso()
    folders = set(distributed.gather(ranks, str(run_dir)))
    if len(folders) > 1:  # every rank sees the same list, so all of them stop here
        raise ConfigError(
            "hydra.run.dir",
            f"the ranks resolved different run folders ({', '.join(sorted(folders))}); set "
            "hydra.run.dir explicitly so that every rank writes to the same folder",
        )
    locks = distributed.on_main(ranks, lambda: shards.acquire_locks(run_dir, shard)) or []
    try:
        run = open_run(cfg, settings, run_dir, ranks, shard, on_accepted, started, started_utc)
        n_done, elapsed = audit_loop(cfg, run, run_dir, ranks)
        if not shard.is_sharded:
            return finish_run(cfg, run, run_dir, ranks, n_done, elapsed)
        shard_counts = finish_shard(run, run_dir, ranks, n_done, elapsed)
    finally:
        for lock in reversed(locks):
            lock.release()
    return merge_if_last(cfg, run, run_dir, ranks, shard_counts)


def open_run(
    cfg: DictConfig,
    settings: Settings,
    run_dir: Path,
    ranks: distributed.Ranks,
    shard: shards.Shard,
    on_accepted: Callable[[], None] | None,
    started: float,
    started_utc: str,
) -> OpenRun:
    """Build the run (:func:`pipeline.setup.prepare`), check a resume (and every shard) against the folder
    (fingerprint, table layout), then accept the folder: ``on_accepted``, the ``configured`` event, leftovers
    removed and the fingerprint stored. A refusal before the acceptance leaves the folder as it was."""
    parts_dir = shard.parts_dir(run_dir)
    existing = parts_already_written(run_dir, shard, bool(cfg.resume))
    if not ranks.is_main:
        distributed.barrier(ranks)  # rank 0 builds the caches (built-in dataset, default model) first
    setup = prepare(cfg, run_dir, ranks, settings)
    if ranks.is_main:
        distributed.barrier(ranks)
    setup_seconds = time.perf_counter() - started
    fingerprint = run_fingerprint(cfg, setup)
    samples_schema = report_schema.samples_schema(setup, settings)
    warn_shadowed_metadata(setup.metadata, samples_schema)
    for warning in check_configuration(cfg, run_dir, ranks, shard, fingerprint, bool(existing)):
        print(f"cam-audit: warning: {warning}", file=sys.stderr)
    try:
        check_part_layout(list_parts(parts_dir, "samples"), samples_schema)
    except DamagedPart as error:
        raise ConfigError("resume", str(error)) from error
    if on_accepted is not None:
        on_accepted()
    logs.event(
        logger,
        "configured",
        f"configuration resolved: {len(setup.records)} samples, model {setup.model.info.get('name', '?')}, "
        f"layer {setup.target_layer}, device {setup.device}",
        samples=len(setup.records),
        target_layer=setup.target_layer,
        device=str(setup.device),
        model=setup.model.info,
        resume=bool(cfg.resume) or bool(existing),
        **({"shard": shard.index, "shards": shard.count} if shard.is_sharded else {}),
    )
    distributed.barrier(ranks)  # every rank has read the run's state before any rank writes to it
    if ranks.is_main:
        start_writing(run_dir, shard, fingerprint, bool(cfg.resume))
    distributed.barrier(ranks)
    return OpenRun(setup, samples_schema, shard, bool(existing), started, started_utc, setup_seconds)


def parts_already_written(run_dir: Path, shard: shards.Shard, resume: bool) -> list[Path]:
    """The parts an earlier invocation left, checked before anything is built: a run's (refused without
    ``resume``, :func:`pipeline.run_folder.refuse_existing_run`), or a shard's own, which a shard started again
    continues without ``resume`` (a requeued job re-runs its command line: :func:`pipeline.shards.parts_on_disk`)."""
    if shard.is_sharded:
        return shards.parts_on_disk(run_dir, shard, resume)
    return refuse_existing_run(run_dir, resume)


def start_writing(run_dir: Path, shard: shards.Shard, fingerprint: dict, resume: bool) -> None:
    """On rank 0, once the folder is accepted: the leftovers of a stopped invocation removed and the fingerprint
    stored; a shard touches its own folder only (the others may be writing into the shared ones), and is not
    complete until it finishes again (its fingerprint is the run's, claimed before)."""
    if shard.is_sharded:
        shards.remove_shard_leftovers(run_dir, shard)
        shards.clear_complete(run_dir, shard)
        return
    if resume:
        remove_leftovers(run_dir)
    store_fingerprint(run_dir / "parts", fingerprint)


def check_configuration(
    cfg: DictConfig, run_dir: Path, ranks: distributed.Ranks, shard: shards.Shard, fingerprint: dict, resumed: bool
) -> list[str]:
    """The rows already in the folder must have been made with this configuration: a resume's
    (:func:`pipeline.run_folder.check_fingerprint`), and every shard's, resumed or not, against the first
    shard's (:func:`pipeline.shards.claim_fingerprint`, on rank 0). Returns warning lines; a ConfigError names
    what differs."""
    unchecked = bool(cfg.runtime.resume_unchecked)
    if shard.is_sharded:
        claim = lambda: shards.claim_fingerprint(run_dir, shard, fingerprint, resolved_config(cfg), unchecked)
        return distributed.on_main(ranks, claim) or []
    return check_fingerprint(run_dir / "parts", fingerprint, unchecked) if resumed else []


def ignore_scheduler_signals(worker_id: int) -> None:
    """In a loader worker: ignore SIGTERM, SIGUSR1 and SIGUSR2. A scheduler signals the whole process group; the
    main process stops the run (pipeline.cli: exit 143, parts kept) and shuts its workers down itself. A worker
    killed by the signal first made the main process report "DataLoader worker ... killed by signal" (a
    traceback); in a submitit job (hydra/launcher=shards_slurm) a worker inherits submitit's SIGUSR2 handler,
    which would requeue the job a second time and exit the worker."""
    for scheduler_signal in (SIGTERM, SIGUSR1, SIGUSR2):
        signal(scheduler_signal, SIG_IGN)


def make_loader(setup: AuditSetup, todo: list[SampleRecord], max_boxes: int | None, batch_size: int) -> DataLoader:
    """Batches of ``todo`` (decoded, placed, boxes moved: :class:`~pipeline.data.dataset.AuditDataset`)."""
    runtime = setup.settings.runtime
    return DataLoader(
        AuditDataset(todo, setup.preprocess, max_boxes, setup.decode_on_device),
        batch_size=batch_size,
        shuffle=False,
        num_workers=runtime.num_workers,
        pin_memory=setup.device.type == "cuda",
        collate_fn=collate_samples,
        persistent_workers=False,
        worker_init_fn=ignore_scheduler_signals,
    )


def records_to_audit(
    records: list[SampleRecord], done: set[str], ranks: distributed.Ranks, shard: shards.Shard = shards.Shard()
):
    """This rank's share of this shard's ``records`` not ``done`` yet: ``(to audit, found bad by the index)``."""
    todo = [r for r in distributed.shard(shards.select(records, shard), ranks) if r.sample_id not in done]
    return [r for r in todo if not r.problem], [r for r in todo if r.problem]


def audit_loop(cfg: DictConfig, run: OpenRun, run_dir: Path, ranks: distributed.Ranks) -> tuple[int, float]:
    """Every batch of this rank's remaining samples through the model into the sink, within the failure
    budget. Returns how many samples this invocation audited or failed in the loader, and the loop's seconds."""
    setup, runtime = run.setup, run.setup.settings.runtime
    parts_dir = run.shard.parts_dir(run_dir)
    budget = FailureBudget(runtime.max_error_fraction, runtime.min_samples_for_error_check, parts_dir)
    sink = ParquetPartsSink(run_dir, setup, run.samples_schema, ranks.rank, budget, parts_dir)
    try:
        todo, bad = records_to_audit(setup.records, sink.done_ids(), ranks, run.shard)
        if run.resumed and ranks.is_main:
            complete_done_rows(setup, run_dir, max_boxes_option(cfg), sink, parts_dir)
        if bad:
            sink.add_errors(report_schema.error_rows([(r, "index", r.problem.type, r.problem.message) for r in bad]))
            budget.failed += len(bad)
        sink.start(todo)
        if setup.faithfulness is not None:
            setup.faithfulness.bind(todo, setup.device)  # the batches' index -> the deletion / insertion sample
        loader = make_loader(
            setup, todo, max_boxes_option(cfg), BatchFit.from_option(runtime.batch_size, setup.device).size
        )
        n_done, seconds = batches_into_sink(setup, todo, loader, sink, budget, len(bad))
        sink.close()
    except BackgroundWriteError as error:
        sink.abort()
        if isinstance(error.error, OSError) and is_disk_full(error.error):
            raise error.error from error  # a full disk is its own stop (exit 4, resumable), whichever thread met it
        raise
    except BaseException:
        # Stopping for another reason (an interrupt, a failed batch): the writers' queued work still lands, so
        # that what was computed is kept, but their own errors must not hide the one that stops the run.
        sink.abort()
        raise
    setup.engine.close()  # the model is left without the engine's hook
    if budget.exceeded(n_done + len(bad)):  # the last batches' non-finite images, counted once written
        raise budget.stop(n_done + len(bad))
    return n_done, seconds


def batches_into_sink(
    setup: AuditSetup,
    todo: list[SampleRecord],
    loader: DataLoader,
    sink: RowSink,
    budget: FailureBudget,
    index_errors: int,
) -> tuple[int, float]:
    """The loop itself: decode (on the device when asked), audit in pieces that fit, hand on to the sink,
    report progress, stop when the failure budget is exceeded. Returns (samples seen here, seconds)."""
    runtime = setup.settings.runtime
    fit = BatchFit.from_option(runtime.batch_size, setup.device)
    labels = torch.tensor([r.label for r in todo], dtype=torch.long)
    progress = tqdm(  # a bar only on a terminal: in a captured log its carriage returns are noise
        total=len(todo), unit="img", disable=not (runtime.progress and sys.stderr.isatty()), dynamic_ncols=True
    )
    n_done, started = 0, time.perf_counter()
    for batch_number, batch in enumerate(loader, start=1):
        sink.check()
        if batch.encoded:  # data.decode=gpu: this batch's JPEGs, decoded on the device (bad files leave it)
            paths = [todo[i].image_path for i in batch.index.tolist()]
            batch = decode_batch_on_device(batch, setup.preprocess, setup.device, paths)
        if batch.failures:
            failed = [(todo[f.index], f.stage, f.error_type, f.error) for f in batch.failures]
            sink.add_errors(report_schema.error_rows(failed))
            budget.failed += len(batch.failures)
        if len(batch):
            for piece, (columns, maps, view) in audit_fitting(setup, batch, labels[batch.index], fit):
                sink.add_samples(columns, piece, maps, view)
        n_done += len(batch) + len(batch.failures)
        progress.update(len(batch) + len(batch.failures))
        if runtime.log_every_batches > 0 and batch_number % runtime.log_every_batches == 0:
            _progress_event(n_done, len(todo), budget.failed, time.perf_counter() - started)
        if budget.exceeded(n_done + index_errors):  # non-finite images count as their rows are written (late)
            sink.close()
            raise budget.stop(n_done + index_errors)
    progress.close()
    return n_done, time.perf_counter() - started


def _progress_event(done: int, total: int, failed: int, seconds: float) -> None:
    logs.event(
        logger,
        "progress",
        f"{done} of {total} samples, {failed} failed, {done / seconds:.1f} samples/s",
        done=done,
        total=total,
        failed=failed,
        samples_per_second=done / seconds,
    )


def finish_run(
    cfg: DictConfig, run: OpenRun, run_dir: Path, ranks: distributed.Ranks, n_seen: int, elapsed: float
) -> dict:
    """Gather the ranks; rank 0 writes the report (:func:`pipeline.merge.write_report`: the failure budget over
    the whole run, the explainer's sanity check, :func:`pipeline.reports.finalize.finalize_run`)."""
    per_rank = distributed.gather(ranks, (n_seen, elapsed))  # also the barrier: every rank's parts are on disk
    if not ranks.is_main:
        return _rank_done(ranks, n_seen, elapsed)
    n_seen, elapsed = sum(count for count, _ in per_rank), max(seconds for _, seconds in per_rank)
    return write_report(
        cfg, run.setup, run.samples_schema, run_dir, n_seen, elapsed, run.started, run.started_utc, run.setup_seconds
    )


def finish_shard(run: OpenRun, run_dir: Path, ranks: distributed.Ranks, n_seen: int, elapsed: float) -> dict:
    """Gather the shard's ranks; rank 0 marks the shard complete (:func:`pipeline.shards.mark_complete`: its
    images and seconds for the merge's summary) and says how many of the run's shards are."""
    per_rank = distributed.gather(ranks, (n_seen, elapsed))  # every rank's parts are on disk
    if not ranks.is_main:
        return _rank_done(ranks, n_seen, elapsed)
    n_seen, elapsed = sum(count for count, _ in per_rank), max(seconds for _, seconds in per_rank)
    shard = run.shard
    shards.mark_complete(
        run_dir,
        shard,
        images=n_seen,
        seconds=elapsed,
        started_utc=run.started_utc,
        finished_utc=logs.utc_now_iso(),
        ranks=ranks.world_size,
    )
    complete = len(shards.completed(run_dir, shard.count))
    message = f"{shard}: {n_seen} images in {elapsed:.1f}s; {complete} of {shard.count} shards complete"
    logs.event(logger, "shard_done", message, shard=shard.index, shards=shard.count, images=n_seen, seconds=elapsed)
    if run.setup.settings.runtime.log_format != "json":
        print(message)
    return {"shard": shard.index, "shards": shard.count, "images_scored_this_invocation": n_seen, "seconds": elapsed}


def merge_if_last(cfg: DictConfig, run: OpenRun, run_dir: Path, ranks: distributed.Ranks, counts: dict) -> dict:
    """After a shard has given up its locks: rank 0 merges the run when this shard is the last to finish
    (``runtime.merge_when_last``; :func:`pipeline.merge.merge_when_complete`) and returns the summary;
    otherwise the shard's ``counts``."""
    if not ranks.is_main or not run.setup.settings.runtime.merge_when_last:
        return counts
    summary = merge_when_complete(cfg, run.setup, run.samples_schema, run_dir, run.started, run.setup_seconds)
    if summary is None:  # another shard still runs, or one has not run yet: the last one merges
        logs.event(
            logger,
            "merge_later",
            f"{run.shard}: the last shard to finish writes the report (or, once every shard is complete, "
            f"cam-audit merge {run_dir})",
        )
        return counts
    return summary


def _rank_done(ranks: distributed.Ranks, n_seen: int, elapsed: float) -> dict:
    """A rank other than 0 at the end: its own counts (rank 0 writes the report, or the shard's mark)."""
    message = f"rank {ranks.rank}/{ranks.world_size}: {n_seen} images in {elapsed:.1f}s"
    print(f"{message}; rank 0 finishes the run")
    logs.event(logger, "rank_done", message, rank=ranks.rank, images=n_seen, seconds=elapsed)
    return {"rank": ranks.rank, "images_scored_this_invocation": n_seen, "seconds": elapsed}
