"""Who owns a run folder, and what its rows were made with.

- **Lock**: one run at a time per folder. The first run takes an exclusive ``flock`` on
  ``<run>/.cam-audit.lock`` and writes its pid, host and start time there; a second run (a scheduler
  retry while the first still runs) is refused at start, naming the holder, and changes nothing in the
  folder. The kernel drops the lock when its process dies, so a lock file left by a killed run is stale:
  the next run takes it over. Where ``flock`` is not supported (some network file systems), the pid and
  host are checked instead: a live pid on this host holds the folder, a dead one is stale, and another
  host's lock must be removed by hand. The shards of a sharded run (:mod:`pipeline.shards`) hold the
  folder's lock *shared* (they run at once; a run or a merge, which take it exclusively, is refused while
  any of them runs) and each its own exclusive lock in ``parts/shard-<NNN>/``.
- **Fingerprint**: everything that decides which rows a run holds and what they mean, stored as
  ``parts/fingerprint.json`` beside the parts: the whole effective configuration except what only decides
  where and how the run executes (``runtime.*`` but the precision, ``cache_dir``, ``resume``) or only shapes
  the files (``report.rows_per_part``, ``report.review_page``, ``report.review_max_images``), so
  ``data.limit`` counts (another limit audits another set); the resolved preprocessing, normalisation and
  target layer; and the content of what paths point to: the model weights (``model.weights_sha256``, not
  ``model.checkpoint``'s path), the class list (``data.classes_sha256``: keys and names in order, not
  ``data.classes``'s path: a classes file edited in place changes what label 0 means), the dataset
  (``data.dataset_sha256``: ids, labels, image sizes and times; ``data.boxes_sha256``: the boxes) and the
  ``data.metadata`` table (``data.metadata_sha256``: its values join the rows). A resume
  whose fingerprint differs is refused, naming what differs, so one ``samples.parquet`` never mixes two
  configurations or two datasets. A folder whose fingerprint is missing, or lacks some of these keys (an
  older version), cannot be checked: its resume is refused unless ``runtime.resume_unchecked=true``.
- **Resume state**: whether the folder already holds a run (:func:`refuse_existing_run`), whether its parts
  have this run's table layout (:func:`check_part_layout`), which samples are done (:func:`done_ids`), and
  the rows a kill left without their sample (:func:`drop_orphan_rows`).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from omegaconf import DictConfig, OmegaConf

from pipeline.errors import ConfigError
from pipeline.jsonio import dumps_strict, write_json_atomic
from pipeline.reports.parts import layout_differences, list_parts, read_column, read_part, write_table_atomic

LOCK_NAME = ".cam-audit.lock"
FINGERPRINT_NAME = "fingerprint.json"
# What the fingerprint holds: 2 since the whole configuration and the contents (classes, dataset, boxes) are in
# it. A stored fingerprint without it was written by an older version: the keys it lacks cannot be checked.
VERSION_KEY, FINGERPRINT_VERSION = "fingerprint_version", 2
# A sharded run's fingerprint also holds the resolved configuration its shards ran with (pipeline.shards), for
# the merge to build the same set-up; it is not compared.
RECORDED_CONFIG_KEY = "recorded_config"


@dataclass
class RunLock:
    """A hold on a run folder; :meth:`release` (or process death) gives it up."""

    path: Path
    fd: int
    shared: bool = False  # held with other processes (the shards of a run): the file is theirs too

    def release(self) -> None:
        """Drop the lock; an exclusive holder removes the lock file first (a waiting run then creates a fresh
        file), a shared one leaves it to the others that may still hold it."""
        try:
            if not self.shared:
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)


def _holder(path: Path) -> dict:
    """What the lock file says about its holder (empty when unreadable)."""
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:  # shared holders write nothing: the shards of a sharded run
        return "the shards of a sharded run (runtime.shards), or a run starting"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def acquire_lock(run_dir: Path, shared: bool = False, option: str = "hydra.run.dir", what: str = "") -> RunLock:
    """Take the run folder for this process, or raise ConfigError (``option``) naming the holder.

    ``shared``: held together with other shared holders (the shards of a run), refused while an exclusive
    holder has it and refusing one meanwhile; a shared holder writes nothing into the file. ``what`` names
    the folder in the refusal (``shard 3 of <run>``). A refusal leaves the folder as it was (the holder's lock
    file is only read).
    """
    path = run_dir / LOCK_NAME
    while True:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # a file in the way, no permission: the folder cannot be this run's
            raise ConfigError(
                "hydra.run.dir", f"output folder {str(run_dir)!r} cannot be written ({error.strerror or error})"
            ) from error
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                option,
                f"{what or run_dir} is in use by another run ({_describe(_holder(path))}); wait for it "
                "to finish, or choose another hydra.run.dir",
            ) from None
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            _check_holder_without_flock(path, fd, run_dir)
        try:  # the holder may have removed the file between our open and our lock: start again on the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    if shared:  # what an exclusive holder killed earlier wrote would name it as the holder
        os.ftruncate(fd, 0)
        return RunLock(path, fd, shared=True)
    payload = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(payload).encode(), 0)
    return RunLock(path, fd)


def _check_holder_without_flock(path: Path, fd: int, run_dir: Path) -> None:
    """No ``flock`` here: refuse when the file names a live process on this host or any other host."""
    holder = _holder(path)
    if not holder or holder.get("pid") == os.getpid():
        return
    if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
        return  # stale: its process is gone
    os.close(fd)
    raise ConfigError(
        "hydra.run.dir",
        f"{run_dir} is in use by another run ({_describe(holder)}) and this file system cannot "
        f"check whether it still runs; if it does not, remove {path}",
    )


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes and bytes of every tensor, in order)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


# Options a resume may change: where and how the run executes, and what only shapes the files (no row, and
# not which rows). runtime.precision changes the numbers: it stays (run_fingerprint adds it back).
RESUME_MAY_CHANGE = (
    "resume",
    "cache_dir",
    "runtime.",
    "report.rows_per_part",
    "report.review_page",
    "report.review_max_images",
)
# Paths whose content is fingerprinted instead (moving the file is fine, editing it is not), and the
# preprocessing options, fingerprinted as resolved (``auto`` filled in from the model).
REPLACED_BY_CONTENT = ("model.checkpoint", "data.classes", "data.metadata", "data.preprocess.")
# What the hashes of the fingerprint stand for, for the refusal's message.
CONTENT_KEYS = {
    "model.weights_sha256": "the model's weights",
    "data.classes_sha256": "the class list (keys and names in output order)",
    "data.dataset_sha256": "the dataset (ids, labels, image file sizes and times)",
    "data.boxes_sha256": "the annotations' boxes",
    "data.metadata_sha256": "the data.metadata table's columns and values",
}


def _compared(key: str) -> bool:
    return not any(key == p or (p.endswith(".") and key.startswith(p)) for p in RESUME_MAY_CHANGE + REPLACED_BY_CONTENT)


def classes_digest(keys, names) -> str:
    """SHA-256 of a class list: its keys and names in model-output order."""
    return hashlib.sha256(json.dumps([list(keys), list(names)]).encode()).hexdigest()


def boxes_digest(records) -> str:
    """SHA-256 of every record's id, label, annotated size, problem and boxes, in id order."""
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: r.sample_id):
        problem = record.problem.type if record.problem else ""
        head = f"{record.sample_id}\0{record.label}\0{record.annotated_size}\0{problem}\0"
        digest.update(head.encode("utf-8", "surrogateescape"))
        digest.update(np.ascontiguousarray(record.boxes, dtype=np.float32).tobytes() + b"\n")
    return digest.hexdigest()


def metadata_digest(metadata) -> str | None:
    """SHA-256 of the ``data.metadata`` table as read (column names and types, ids and values, in row order);
    None without one. An edited CSV would join other values to the rows audited after a resume."""
    if metadata is None:
        return None
    import pandas as pd

    digest = hashlib.sha256(json.dumps([[str(c), str(t)] for c, t in metadata.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(metadata, index=True).to_numpy().tobytes())
    return digest.hexdigest()


def run_fingerprint(cfg: DictConfig, setup) -> dict[str, object]:
    """``option -> value`` for every choice that decides the rows (dotted config keys; see the module doc).

    ``setup`` is the :class:`~pipeline.setup.AuditSetup`: the resolved preprocessing, normalisation and
    target layer (``auto`` filled in), ``weights_sha256`` of the model as loaded, the class list and the records.
    """
    from pipeline.provenance import dataset_fingerprint

    flat: dict[str, object] = {}
    _flatten("", OmegaConf.to_container(cfg, resolve=True), flat)
    out = {key: value for key, value in flat.items() if _compared(key)}
    out["model.target_layer"] = setup.target_layer
    out["model.mean"] = [float(v) for v in setup.model.mean]
    out["model.std"] = [float(v) for v in setup.model.std]
    out["model.weights_sha256"] = setup.weights_sha256
    _flatten("data.preprocess", asdict(setup.preprocess), out)
    out["data.classes_sha256"] = classes_digest(setup.classes.keys, setup.classes.names)
    out["data.dataset_sha256"] = dataset_fingerprint(setup.records)["sha256"]
    out["data.boxes_sha256"] = boxes_digest(setup.records)
    out["data.metadata_sha256"] = metadata_digest(setup.metadata)
    # resolved: runtime.precision=auto is bf16 on CUDA and fp32 on the CPU, so the option alone would let a
    # run started on the CPU be resumed on a GPU with bf16 rows after fp32 ones
    out["runtime.precision"] = str(setup.precision)
    shards = int(OmegaConf.select(cfg, "runtime.shards", default=1) or 1)
    if shards > 1:  # which samples a shard audits depends on it (pipeline.shards); unsharded runs keep no key
        out["runtime.shards"] = shards
    out[VERSION_KEY] = FINGERPRINT_VERSION
    return json.loads(json.dumps(out, default=str))  # plain JSON values, as they read back from the file


UNCHECKED_HINT = (
    "set runtime.resume_unchecked=true to resume without this check (only if you know the parts were made "
    "with this configuration and data), or start a new hydra.run.dir"
)


def check_fingerprint(parts_dir: Path, fingerprint: dict[str, object], unchecked: bool = False) -> list[str]:
    """Compare with the fingerprint stored beside the parts; raise ConfigError (``resume``) naming every
    option that differs. A folder without a stored fingerprint, or whose fingerprint lacks some of this
    version's keys, cannot be checked (in full): refused, unless ``unchecked`` (``runtime.resume_unchecked``):
    then the keys both hold are compared and the rest comes back as warning lines."""
    path = parts_dir / FINGERPRINT_NAME
    if not path.is_file():
        problem = f"{parts_dir.parent} has no {path.relative_to(parts_dir.parent)}: what its rows were made with cannot be checked"
        if unchecked:
            return [f"{problem} (runtime.resume_unchecked=true: resumed anyway)"]
        raise ConfigError("resume", f"{problem}; {UNCHECKED_HINT}")
    try:
        stored = json.loads(path.read_text())
    except ValueError as error:
        raise ConfigError(
            "resume",
            f"{path} cannot be read ({error}); remove it only if you are sure this resume uses the "
            "configuration the parts were made with",
        ) from error
    stored.pop(RECORDED_CONFIG_KEY, None)  # what the shards ran with, for their merge: not compared
    unrecorded = sorted(set(fingerprint) - set(stored)) if VERSION_KEY not in stored else []
    warnings = []
    if unrecorded:
        problem = (
            f"{path} does not record {', '.join(unrecorded[:8])}{' ...' if len(unrecorded) > 8 else ''} "
            "(written by an older version): they cannot be checked"
        )
        if not unchecked:
            raise ConfigError("resume", f"{problem}; {UNCHECKED_HINT}")
        warnings.append(f"{problem} (runtime.resume_unchecked=true: resumed anyway)")
    differing = sorted(  # the options first, then the contents (hashes) they lead to
        (
            key
            for key in set(stored) | set(fingerprint)
            if key not in unrecorded and stored.get(key) != fingerprint.get(key)
        ),
        key=lambda key: (key in CONTENT_KEYS, key),
    )
    if differing:
        changes = "; ".join(f"{key}: {_short(stored, key)} -> {_short(fingerprint, key)}" for key in differing[:8])
        more = f" (and {len(differing) - 8} more)" if len(differing) > 8 else ""
        meaning = "; ".join(f"{key} is {CONTENT_KEYS[key]}" for key in differing if key in CONTENT_KEYS)
        raise ConfigError(
            "resume",
            f"this run differs from the one in {parts_dir.parent} in {', '.join(differing)}: {changes}{more}"
            f"{f' ({meaning})' if meaning else ''}. Resuming would mix two configurations or two datasets in one "
            f"report; resume with only hydra.run.dir=... resume=true (the run's recorded options are used), or "
            "start a new hydra.run.dir",
        )
    return warnings


def _short(values: dict, key: str) -> str:
    text = json.dumps(values[key]) if key in values else "(unset)"
    return text if len(text) <= 40 else text[:37] + "..."


def store_fingerprint(parts_dir: Path, fingerprint: dict[str, object]) -> None:
    """Write ``parts/fingerprint.json`` (atomically) before the first part."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(parts_dir / FINGERPRINT_NAME, fingerprint, indent=1, sort_keys=True)


def create_fingerprint(parts_dir: Path, record: dict[str, object]) -> bool:
    """Write ``parts/fingerprint.json`` only when there is none, atomically: written to a temporary file,
    then hard-linked into place (a link never replaces a file, also over NFS). True when this call wrote it,
    False when another process had (the shards of one run start at once: one of them writes it)."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    path = parts_dir / FINGERPRINT_NAME
    temporary = parts_dir / f".{FINGERPRINT_NAME}.tmp-{os.getpid()}"
    temporary.write_text(dumps_strict(record, indent=1, sort_keys=True))
    try:
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)


def check_part_layout(parts: list[Path], schema: pa.Schema) -> None:
    """Refuse a resume whose samples parts were written with another table layout (another version of the
    tool, or other metadata columns): merging would cast their columns silently (:func:`layout_differences`)."""
    differing = layout_differences(parts, schema)
    if differing:
        shown = "; ".join(differing[:5]) + (f" (and {len(differing) - 5} more)" if len(differing) > 5 else "")
        raise ConfigError(
            "resume",
            f"the parts in {parts[0].parent} hold another table layout ({shown}), e.g. written by another version "
            "of cam-audit; resuming would mix the two. Finish that run with the version that started it, or "
            "start a new hydra.run.dir",
        )


def done_ids(parts_dir: Path) -> set[str]:
    """The samples a resume skips: those with a samples row, and those with an errors row at any stage but
    ``overlay`` (an overlay error's sample is scored: its samples row may be in a part a kill never wrote)."""
    errors = [read_part(path, ["id", "stage"]) for path in list_parts(parts_dir, "errors")]
    failed = {
        i
        for t in errors
        for i, stage in zip(t.column("id").to_pylist(), t.column("stage").to_pylist())
        if stage != "overlay"
    }
    return set(read_column(list_parts(parts_dir, "samples"), "id")) | failed


def drop_orphan_rows(parts_dir: Path, scored: set[str]) -> int:
    """Rewrite the maps and probabilities parts and the errors parts' ``overlay`` rows without the rows of
    samples that have no samples row: the parts of one batch are flushed one table after the other, so a kill
    between two flushes leaves them; the samples are audited again and would get a second maps row, or a stale
    overlay error. Returns how many rows went."""
    dropped = 0
    for table_name in ("maps", "probabilities", "errors"):
        for path in list_parts(parts_dir, table_name):
            table = read_part(path)
            orphan = ~pc.is_in(table.column("id"), pa.array(sorted(scored), pa.string())).to_numpy(zero_copy_only=False)
            if table_name == "errors":
                orphan &= table.column("stage").to_numpy(zero_copy_only=False) == "overlay"
            if orphan.any():
                kept = table.filter(pa.array(~orphan))
                if kept.num_rows:
                    write_table_atomic(kept, path)
                else:
                    path.unlink()
                dropped += int(orphan.sum())
    return dropped


def refuse_existing_run(run_dir: Path, resume: bool) -> list[Path]:
    """The parts already in ``run_dir``; a ConfigError when it holds a run and ``resume`` is off.

    Checked before anything is built or written, so that a refused start leaves the folder as it was.
    """
    parts_dir = run_dir / "parts"
    existing = list_parts(parts_dir, "samples") + list_parts(parts_dir, "errors")
    finished = [name for name in ("samples.parquet", "summary.json") if (run_dir / name).exists()]
    if (existing or finished) and not resume:
        held = f"{len(existing)} parts" if existing else ", ".join(finished)
        raise ConfigError(
            "resume",
            f"{run_dir} already holds a run ({held}); set resume=true to finish it, or choose a new hydra.run.dir",
        )
    return existing
