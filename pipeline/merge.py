"""The end of a run: its report, written once from every part in the run folder.

:func:`write_report` is the one way a report is written: the failure budget over the whole run, the
explainer's sanity check (once per run), then :func:`pipeline.reports.finalize.finalize_run` (the parts merged
in id order, the classes table, the summary, the review page). A run of one process (or of torchrun ranks)
calls it at its end (:func:`pipeline.run.finish_run`); a sharded run (:mod:`pipeline.shards`) calls it once
every shard is complete, through :func:`merge_shards`: from the last shard to finish
(:func:`merge_when_complete`, with the set-up it audited with) or from ``cam-audit merge <run>``
(:func:`merge_run`).

The merge needs the run's set-up (class names, resolved preprocessing, model for the sanity check, settings):
:func:`merge_run` builds it again with :func:`pipeline.setup.prepare` from the resolved configuration the first
shard recorded in ``parts/fingerprint.json``, and checks that this set-up's fingerprint is the stored one (same
classes, dataset, boxes, weights, preprocessing), so the report describes exactly what the shards audited.
Rebuilding is simpler and safer than recording each thing finalize reads (class list, preprocessing and its
sources, model info, layout, precision, the records for the provenance and the sanity sample): the same code
path builds them as in the shards, and the check refuses a merge whose data or model changed since.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
from omegaconf import DictConfig

from pipeline import logs, provenance, shards
from pipeline.errors import ConfigError
from pipeline.failure_budget import check_failure_budget
from pipeline.faithfulness.sanity import run_sanity_check
from pipeline.options import check_options
from pipeline.reports import schema as report_schema
from pipeline.reports.finalize import finalize_run
from pipeline.reports.parts import DamagedPart, list_parts, remove_leftovers
from pipeline.run_folder import acquire_lock, check_fingerprint, check_part_layout, run_fingerprint
from pipeline.settings import resolved_config, settings_from_config
from pipeline.setup import AuditSetup, max_boxes_option, prepare

logger = logging.getLogger("pipeline.merge")


def write_report(
    cfg: DictConfig,
    setup: AuditSetup,
    samples_schema: pa.Schema,
    run_dir: Path,
    images: int,
    loop_seconds: float,
    started: float,
    started_utc: str,
    setup_seconds: float,
    run_provenance: dict | None = None,
) -> dict:
    """The failure budget over the whole run, the sanity check, then the report (``finalize_run``); returns
    the summary. ``images`` and ``loop_seconds`` are what the loop(s) audited; ``started`` the
    ``time.perf_counter()`` of this process's start; ``run_provenance`` goes into ``summary.json`` ->
    ``provenance`` (a sharded run: its shards)."""
    settings = setup.settings
    check_failure_budget(run_dir / "parts", settings.runtime.max_error_fraction)
    origin = {
        "started_utc": started_utc,
        "tool_version": provenance.tool_version(),
        "git": provenance.git_revision(),
        "checkpoint": provenance.checkpoint_provenance(setup.model.info.get("checkpoint")),
        "dataset": provenance.dataset_fingerprint(setup.records),
        **(run_provenance or {}),
    }
    sanity = run_sanity_check(setup, max_boxes_option(cfg))  # sanity.*: once per run, before the report
    return finalize_run(
        run_dir,
        settings,
        resolved_config(cfg),
        setup,
        samples_schema,
        images_scored=images,
        loop_seconds=loop_seconds,
        total_seconds=time.perf_counter() - started,
        setup_seconds=setup_seconds,
        provenance=origin,
        sanity_check=sanity,
    )


def merge_shards(
    cfg: DictConfig, setup: AuditSetup, samples_schema: pa.Schema, run_dir: Path, started: float, setup_seconds: float
) -> dict:
    """The report of a sharded run whose shards are all complete, written by a process that holds the run
    folder exclusively: every sample exactly once over the shards, one table layout, the leftovers of stopped
    shards removed, then :func:`write_report` (images: the shards' last invocations summed; loop seconds: the
    slowest shard's, as for torchrun ranks)."""
    count = setup.settings.runtime.shards
    done = shards.refuse_incomplete(run_dir, count)
    shards.check_every_sample_once(run_dir, setup.records, count)
    try:
        check_part_layout(list_parts(run_dir / "parts", "samples"), samples_schema)
    except DamagedPart as error:
        raise ConfigError("run", str(error)) from error
    remove_leftovers(run_dir)
    marks = [done[index] for index in range(count)]
    logs.event(
        logger,
        "merge",
        f"merging {count} shards of {run_dir}: {sum(m['images'] for m in marks)} images audited in their last runs",
        shards=count,
        run_dir=str(run_dir),
    )
    return write_report(
        cfg,
        setup,
        samples_schema,
        run_dir,
        images=sum(m["images"] for m in marks),
        loop_seconds=max(m["seconds"] for m in marks),
        started=started,
        started_utc=min(m["started_utc"] for m in marks),
        setup_seconds=setup_seconds,
        run_provenance={"shards": marks, "merged_utc": logs.utc_now_iso()},
    )


def merge_when_complete(
    cfg: DictConfig, setup: AuditSetup, samples_schema: pa.Schema, run_dir: Path, started: float, setup_seconds: float
) -> dict | None:
    """A shard that has just finished (its locks given up) merges when it is the last: it takes the run
    folder exclusively, which is refused while another shard still runs or merges (that one is then the last),
    and merges when every shard is complete. None when it is not the last; a refused merge's reason (a sample
    missing) is raised as from ``cam-audit merge``."""
    try:
        lock = acquire_lock(run_dir)
    except ConfigError:
        return None  # another shard holds the folder: it finishes after this one, and merges
    try:
        if len(shards.completed(run_dir, setup.settings.runtime.shards)) < setup.settings.runtime.shards:
            return None  # a shard has not run yet (or stopped): it merges when it completes
        return merge_shards(cfg, setup, samples_schema, run_dir, started, setup_seconds)
    finally:
        lock.release()


def merge_run(run_dir: Path, overrides: Sequence[str] = ()) -> dict:
    """``cam-audit merge RUN [OVERRIDE ...]``: the report of the sharded run in ``run_dir`` (see the module
    doc). ``overrides`` (``runtime.device=cpu``...) change how the merge runs; one that changes the rows is
    refused by the fingerprint check. ConfigError when the folder is in use, not a sharded run, or a shard is
    not complete (naming it)."""
    started = time.perf_counter()
    if not (run_dir / "parts").is_dir():
        raise ConfigError("run", f"{run_dir} holds no run (no parts/ folder)")
    lock = acquire_lock(run_dir, option="run")  # refused while a shard runs, or another merge
    try:
        cfg, _ = shards.recorded_config(run_dir, list(overrides))
        settings = settings_from_config(cfg)
        check_options(cfg)
        shards.refuse_incomplete(run_dir, settings.runtime.shards)  # before the model is built: it is quick
        setup = prepare(cfg, run_dir, None, settings)
        try:
            check_fingerprint(run_dir / "parts", run_fingerprint(cfg, setup))
        except ConfigError as error:
            raise ConfigError("run", f"the merge's set-up is not the shards': {error.reason}") from error
        logs.open_run_log()
        samples_schema = report_schema.samples_schema(setup, settings)
        return merge_shards(cfg, setup, samples_schema, run_dir, started, time.perf_counter() - started)
    finally:
        lock.release()
