"""Sharded runs: one dataset audited by ``runtime.shards`` independent jobs into one run folder, then merged.

The per-image audit needs no communication between GPUs, so a dataset of millions of images is split into
shards that run as separate jobs (a SLURM job array through ``hydra/launcher=shards_slurm``, or any scheduler),
each writing its rows into the same run folder; the report is written once, by the last shard to finish or by
``cam-audit merge <run>`` (:mod:`pipeline.merge`).

- **Which samples**: shard ``k`` of ``N`` audits the records whose id hashes to ``k`` (the first 8 bytes of
  SHA-256 of ``"shard\\0" + id``, modulo ``N``): it depends on the id alone, so a record keeps its shard
  whatever its position, and a dataset that grows by appending keeps every earlier assignment.
- **Where**: shard ``k`` writes its parts into ``parts/shard-<kkk>/`` (its own part names, its own resume
  state), its overlays into the shared ``overlays/`` (one file per id), its log into
  ``cam-audit-shard-<kkk>.log``; a shard started again (a scheduler's retry, submitit's requeue after
  preemption, the same command typed again) continues its own folder: ``resume`` is implied for its
  shard, because a requeued job re-runs its original command line.
- **Locks**: each shard holds its own folder's lock (exclusively: the same shard twice at once is refused)
  and the run folder's lock *shared* (all shards at once; a one-process run or the merge, which take it
  exclusively, are refused while any shard runs, and a shard while either of them runs).
- **One configuration**: the first shard to start writes ``parts/fingerprint.json`` (created exclusively:
  :func:`pipeline.run_folder.create_fingerprint`) with the resolved configuration it ran with; every other
  shard, first start or retry, is checked against it (:func:`claim_fingerprint`), so all shards of a folder
  audit the same data with the same model and options. ``runtime.shards`` is part of the fingerprint.
- **Complete**: a shard whose every sample is written leaves ``parts/shard-<kkk>/complete.json`` (its images
  and seconds); a shard that starts removes it first, so a stopped shard is never taken for a complete one.
  The merge refuses while a shard is not complete, naming it (:func:`refuse_incomplete`), and checks that every
  sample of the index has exactly one row over all shards (:func:`check_every_sample_once`).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.errors import ConfigError
from pipeline.jsonio import write_json_atomic
from pipeline.reports.parts import list_parts, read_column, read_part
from pipeline.run_folder import (
    FINGERPRINT_NAME,
    LOCK_NAME,
    RECORDED_CONFIG_KEY,
    RunLock,
    acquire_lock,
    check_fingerprint,
    create_fingerprint,
)

SALT = "shard"  # the hash of the id that picks its shard
COMPLETE_NAME = "complete.json"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``runtime.shard`` of ``runtime.shards``); ``count=1``: not sharded."""

    index: int = 0
    count: int = 1

    @property
    def is_sharded(self) -> bool:
        return self.count > 1

    @property
    def name(self) -> str:
        return f"shard-{self.index:03d}"

    def parts_dir(self, run_dir: Path) -> Path:
        """Where this shard writes its parts: ``parts/shard-<NNN>/``, or ``parts/`` when not sharded."""
        return run_dir / "parts" / self.name if self.is_sharded else run_dir / "parts"

    def __str__(self) -> str:
        return f"shard {self.index} of {self.count}"


def from_settings(runtime) -> Shard:
    """The shard of ``runtime`` (:class:`~pipeline.settings.RuntimeSettings`); their ranges are option rules
    (:mod:`pipeline.options`), the shard's place below the count is checked here."""
    if not 0 <= runtime.shard < runtime.shards:
        raise ConfigError(
            "runtime.shard",
            f"{runtime.shard} is not a shard of runtime.shards={runtime.shards}: shards are numbered 0 .. "
            f"{runtime.shards - 1} (in a multirun: 'runtime.shard=range({runtime.shards})')",
        )
    return Shard(runtime.shard, runtime.shards)


def shard_of(sample_id: str, count: int) -> int:
    """The shard of a sample id among ``count``: SHA-256 of ``"shard\\0" + id`` (UTF-8, undecodable bytes as
    ``surrogateescape``), its first 8 bytes big-endian, modulo ``count``."""
    digest = hashlib.sha256(f"{SALT}\0{sample_id}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def select(records: list, shard: Shard) -> list:
    """The records of ``shard``, in their order (all of them when not sharded)."""
    if not shard.is_sharded:
        return records
    return [r for r in records if shard_of(r.sample_id, shard.count) == shard.index]


def acquire_locks(run_dir: Path, shard: Shard) -> list[RunLock]:
    """The locks a run holds while it writes into ``run_dir`` (see the module doc): the folder's, exclusive,
    when not sharded; the folder's shared and the shard's own when sharded. Raises ConfigError naming the
    holder; a refusal takes nothing."""
    if not shard.is_sharded:
        return [acquire_lock(run_dir)]
    folder = acquire_lock(run_dir, shared=True)
    try:
        own = acquire_lock(shard.parts_dir(run_dir), option="runtime.shard", what=f"{shard} of {run_dir}")
    except BaseException:
        folder.release()
        raise
    return [folder, own]


def parts_on_disk(run_dir: Path, shard: Shard, resume: bool) -> list[Path]:
    """The shard's parts already written (a shard started again continues them, resume or not); a ConfigError
    when the run folder holds a merged run and ``resume`` is off."""
    finished = [name for name in ("samples.parquet", "summary.json") if (run_dir / name).exists()]
    if finished and not resume:
        raise ConfigError(
            "resume",
            f"{run_dir} already holds a finished (merged) run ({', '.join(finished)}); set resume=true to run "
            f"{shard} again, or choose a new run folder",
        )
    parts_dir = shard.parts_dir(run_dir)
    return list_parts(parts_dir, "samples") + list_parts(parts_dir, "errors")


def claim_fingerprint(
    run_dir: Path, shard: Shard, fingerprint: dict, config: DictConfig | str, unchecked: bool = False
) -> list[str]:
    """Make ``fingerprint`` the run's (``parts/fingerprint.json``, with the resolved ``config`` for the merge)
    when the folder has none yet, else check it against the stored one: every shard of a folder runs with
    one configuration. Returns warning lines (``runtime.resume_unchecked``); a ConfigError names what
    differs."""
    parts_dir = run_dir / "parts"
    config_yaml = config if isinstance(config, str) else OmegaConf.to_yaml(config, resolve=True)
    if not (parts_dir / FINGERPRINT_NAME).exists():
        if create_fingerprint(parts_dir, {**fingerprint, RECORDED_CONFIG_KEY: config_yaml}):
            return []
    try:
        return check_fingerprint(parts_dir, fingerprint, unchecked)
    except ConfigError as error:
        raise ConfigError(
            "runtime.shard", f"{shard}: every shard of a run shares one configuration, and {error.reason}"
        ) from error


def recorded_config(run_dir: Path, overrides: Sequence[str] = ()) -> tuple[DictConfig, dict]:
    """The resolved configuration the shards of ``run_dir`` ran with (``parts/fingerprint.json``), with
    ``overrides`` (``key=value``) on top and ``runtime.precision`` as they resolved it; and the stored
    fingerprint. A ConfigError when the folder is not a sharded run."""
    path = run_dir / "parts" / FINGERPRINT_NAME
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("run", f"{run_dir} holds no sharded run: {path} is missing") from None
    except ValueError as error:
        raise ConfigError("run", f"{path} cannot be read ({error})") from error
    if RECORDED_CONFIG_KEY not in stored or int(stored.get("runtime.shards", 1)) < 2:
        raise ConfigError(
            "run",
            f"{run_dir} is not a sharded run (its fingerprint records no runtime.shards); a run of one process or "
            "of torchrun ranks writes its report itself (resume=true finishes an interrupted one)",
        )
    cfg = OmegaConf.create(stored[RECORDED_CONFIG_KEY])
    cfg.runtime.precision = stored["runtime.precision"]  # as the shards resolved it (auto: bf16 on CUDA)
    try:
        extra = OmegaConf.from_dotlist(list(overrides))
    except Exception as error:  # noqa: BLE001 -- OmegaConf's grammar errors have no common base
        raise ConfigError("overrides", f"cannot read {' '.join(overrides)!r}: {error}") from error
    merged = OmegaConf.merge(cfg, extra)
    assert isinstance(merged, DictConfig)  # a mapping merged onto a mapping
    return merged, stored


def clear_complete(run_dir: Path, shard: Shard) -> None:
    """A shard that starts is not complete until it finishes again."""
    (shard.parts_dir(run_dir) / COMPLETE_NAME).unlink(missing_ok=True)


def mark_complete(run_dir: Path, shard: Shard, **facts) -> None:
    """Every sample of ``shard`` is written: ``complete.json`` in its folder, with ``facts`` (images, seconds,
    start and end time, ranks) for the merge's summary."""
    payload = {"shard": shard.index, "shards": shard.count, **facts}
    write_json_atomic(shard.parts_dir(run_dir) / COMPLETE_NAME, payload, indent=1, sort_keys=True)


def completed(run_dir: Path, count: int) -> dict[int, dict]:
    """``shard -> complete.json`` of the shards of ``run_dir`` that are complete."""
    out = {}
    for index in range(count):
        path = Shard(index, count).parts_dir(run_dir) / COMPLETE_NAME
        try:
            out[index] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            continue
    return out


def is_running(run_dir: Path, shard: Shard) -> bool:
    """Whether a process holds the shard's lock now (probed with a lock of our own, given back at once)."""
    folder = shard.parts_dir(run_dir)
    if not (folder / LOCK_NAME).exists():
        return False
    try:
        acquire_lock(folder, shared=True).release()
    except ConfigError:
        return True
    return False


def refuse_incomplete(run_dir: Path, count: int) -> dict[int, dict]:
    """Every shard's ``complete.json``; a ConfigError (``run``) naming the shards that are not complete:
    running, stopped (parts but no mark) or never started."""
    done = completed(run_dir, count)
    missing = [index for index in range(count) if index not in done]
    if not missing:
        return done
    states = []
    for index in missing:
        shard = Shard(index, count)
        if is_running(run_dir, shard):
            states.append(f"{index} (running)")
        elif list_parts(shard.parts_dir(run_dir), "samples") or list_parts(shard.parts_dir(run_dir), "errors"):
            states.append(f"{index} (stopped: run it again, it continues)")
        else:
            states.append(f"{index} (not started)")
    raise ConfigError(
        "run",
        f"{run_dir}: {len(missing)} of {count} shards are not complete: shard {', '.join(states)}; run "
        f"those shards (runtime.shard=<k> runtime.shards={count}, the same run folder and options), then merge",
    )


def check_every_sample_once(run_dir: Path, records: list, count: int) -> None:
    """Exactly once over the shards: every record of the index has one samples row or one errors row (not at
    stage ``overlay``) in some shard's parts, and no id has two. A ConfigError (``run``) naming the shards to
    run again otherwise (a complete mark over parts that were moved away, or rows of another run)."""
    parts_dir = run_dir / "parts"
    ids = read_column(list_parts(parts_dir, "samples"), "id")
    for path in list_parts(parts_dir, "errors"):
        table = read_part(path, ["id", "stage"])
        ids += [
            i
            for i, stage in zip(table.column("id").to_pylist(), table.column("stage").to_pylist())
            if stage != "overlay"
        ]
    seen = Counter(ids)
    twice = sorted(i for i, n in seen.items() if n > 1)
    expected = {r.sample_id for r in records}
    missing = sorted(expected - set(seen))
    foreign = sorted(set(seen) - expected)
    if not (twice or missing or foreign):
        return
    problems = []
    if missing:
        shards = sorted({shard_of(i, count) for i in missing})
        problems.append(
            f"{len(missing)} samples have no row (e.g. {missing[0]!r}; shard {', '.join(map(str, shards))}: run "
            "it again, it continues)"
        )
    if twice:
        problems.append(f"{len(twice)} samples have two rows (e.g. {twice[0]!r})")
    if foreign:
        problems.append(f"{len(foreign)} rows belong to no sample of the index (e.g. {foreign[0]!r})")
    raise ConfigError("run", f"{run_dir}: the shards' rows are not every sample exactly once: {'; '.join(problems)}")


def remove_shard_leftovers(run_dir: Path, shard: Shard) -> list[Path]:
    """The temporary files a stopped run of this shard left in its own folder (its half-written parts); the
    shared folders' leftovers (overlays) are removed by the merge, which holds the whole run folder."""
    removed = []
    for leftover in shard.parts_dir(run_dir).glob(".*.tmp-*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed
