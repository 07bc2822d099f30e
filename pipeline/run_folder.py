"""Who owns a run folder, and what its rows were made with.

- **Lock**: one run at a time per folder. The first run takes an exclusive ``flock`` on
  ``<run>/.cam-audit.lock`` and writes its pid, host and start time there; a second run (a scheduler
  retry while the first still runs) is refused at start, naming the holder, and changes nothing in the
  folder. The kernel drops the lock when its process dies, so a lock file left by a killed run is stale:
  the next run takes it over. Where ``flock`` is not supported (some network file systems), the pid and
  host are checked instead: a live pid on this host holds the folder, a dead one is stale, and another
  host's lock must be removed by hand.
- **Fingerprint**: everything that changes the numbers stored in the rows (model weights, target layer,
  CAM method and options, resolved preprocessing and normalisation, data source, scores options,
  precision), stored as ``parts/fingerprint.json`` beside the parts. A resume whose fingerprint differs is
  refused, naming the options that differ, so one ``samples.parquet`` never mixes two configurations.
  Left out, because they do not change any row: ``data.limit`` (a resume may audit more), the report
  options, the runtime options other than the precision, and the checkpoint's path (its weights count).
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

import torch
from omegaconf import DictConfig, OmegaConf

from pipeline.atomic import write_text_atomic
from pipeline.errors import ConfigError

LOCK_NAME = ".cam-audit.lock"
FINGERPRINT_NAME = "fingerprint.json"


@dataclass
class RunLock:
    """An exclusive hold on a run folder; :meth:`release` (or process death) gives it up."""

    path: Path
    fd: int

    def release(self) -> None:
        """Remove the lock file and drop the lock (unlink first: a waiting run then creates a fresh file)."""
        try:
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
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def acquire_lock(run_dir: Path) -> RunLock:
    """Take the run folder for this process, or raise ConfigError (``hydra.run.dir``) naming the holder.

    A refusal leaves the folder as it was (the holder's lock file is only read).
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
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                "hydra.run.dir",
                f"{run_dir} is in use by another run ({_describe(_holder(path))}); wait for it "
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


def run_fingerprint(cfg: DictConfig, setup) -> dict[str, object]:
    """``option -> value`` for every choice that changes the numbers of the rows (dotted config keys).

    ``setup`` is the :class:`~pipeline.run.AuditSetup`: the resolved preprocessing, normalisation and
    target layer (``auto`` filled in) and ``weights_sha256`` of the model as loaded.
    """
    out: dict[str, object] = {}
    model = OmegaConf.to_container(cfg.model, resolve=True)
    model.pop("checkpoint", None)  # its content counts (weights_sha256), not where it lies
    _flatten("model", model, out)
    out["model.target_layer"] = setup.target_layer
    out["model.mean"] = [float(v) for v in setup.model.mean]
    out["model.std"] = [float(v) for v in setup.model.std]
    out["model.weights_sha256"] = setup.weights_sha256
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.pop("limit", None)
    data.pop("preprocess", None)
    _flatten("data", data, out)
    _flatten("data.preprocess", asdict(setup.preprocess), out)
    _flatten("cam", OmegaConf.to_container(cfg.cam, resolve=True), out)
    _flatten("scores", OmegaConf.to_container(cfg.scores, resolve=True), out)
    out["runtime.precision"] = str(cfg.runtime.precision)
    return json.loads(json.dumps(out, default=str))  # plain JSON values, as they read back from the file


def check_fingerprint(parts_dir: Path, fingerprint: dict[str, object]) -> list[str]:
    """Compare with the fingerprint stored beside the parts; raise ConfigError (``resume``) naming every
    option that differs. Returns a warning line when the folder has no stored fingerprint (a run made
    before fingerprints existed), else nothing."""
    path = parts_dir / FINGERPRINT_NAME
    if not path.is_file():
        return [f"{parts_dir.parent} has no {FINGERPRINT_NAME} (an older run): its configuration cannot be checked"]
    try:
        stored = json.loads(path.read_text())
    except ValueError as error:
        raise ConfigError(
            "resume",
            f"{path} cannot be read ({error}); remove it only if you are sure this resume uses the "
            "configuration the parts were made with",
        ) from error
    differing = sorted(key for key in set(stored) | set(fingerprint) if stored.get(key) != fingerprint.get(key))
    if differing:
        changes = "; ".join(
            f"{key}: {_short(stored.get(key))} -> {_short(fingerprint.get(key))}" for key in differing[:8]
        )
        more = f" (and {len(differing) - 8} more)" if len(differing) > 8 else ""
        raise ConfigError(
            "resume",
            f"this run differs from the one in {parts_dir.parent} in {', '.join(differing)}: {changes}{more}. "
            "Resuming would mix two configurations in one report; use the original options, or "
            "a new hydra.run.dir",
        )
    return []


def _short(value: object) -> str:
    text = "(unset)" if value is None else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def store_fingerprint(parts_dir: Path, fingerprint: dict[str, object]) -> None:
    """Write ``parts/fingerprint.json`` (atomically) before the first part."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(parts_dir / FINGERPRINT_NAME, json.dumps(fingerprint, indent=1, sort_keys=True))
