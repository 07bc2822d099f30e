"""Where a run's numbers came from: tool version, git revision, checkpoint hash, dataset fingerprint, times.

Written into ``summary.json`` (``provenance``) and the metadata of every Parquet table
(``cam_audit.provenance``), so that a report found later says what made it. Everything here is cheap:
the dataset fingerprint reads file sizes and modification times, never the images.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from importlib import metadata
from pathlib import Path

from pipeline.data.records import SampleRecord

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def tool_version() -> str:
    """The installed ``cam-audit`` version (``unknown`` when the package is not installed, e.g. a bare checkout)."""
    try:
        return metadata.version("cam-audit")
    except metadata.PackageNotFoundError:
        return "unknown"


def git_revision(root: Path = PACKAGE_ROOT) -> dict | None:
    """``{"commit": <40 hex>, "dirty": bool}`` of the checkout the code runs from; None outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, hex (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_provenance(path: str | None) -> dict | None:
    """``{"path", "bytes", "sha256"}`` of the model's checkpoint file; None when the model has none."""
    if not path or not Path(path).is_file():
        return None
    return {"path": str(path), "bytes": Path(path).stat().st_size, "sha256": file_sha256(Path(path))}


def dataset_fingerprint(records: list[SampleRecord]) -> dict:
    """A cheap fingerprint of the data: SHA-256 over ``id, label, size, mtime_ns`` of every record's image,
    in id order (a missing file counts as size -1). Equal fingerprints: the same ids, labels and (very likely)
    the same files; it changes when an image is replaced, added, removed or relabelled."""
    digest = hashlib.sha256()
    total = 0
    for record in sorted(records, key=lambda r: r.sample_id):
        try:
            stat = os.stat(record.image_path) if record.image_path else None
        except OSError:
            stat = None
        size, mtime = (stat.st_size, stat.st_mtime_ns) if stat is not None else (-1, 0)
        total += max(size, 0)
        digest.update(f"{record.sample_id}\0{record.label}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return {"sha256": digest.hexdigest(), "samples": len(records), "bytes": total}
