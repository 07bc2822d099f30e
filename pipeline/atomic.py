"""One way to write a file atomically, for every writer (Parquet parts and merged tables, summary.json, the
overlays, the run fingerprint, the default model's checkpoint): readers see the old file or the new one,
never a part of it, and a failed write (a full disk) leaves no temporary file behind."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_sibling(path: Path) -> Path:
    """``<folder>/.<name>.tmp-<pid>``: hidden, beside ``path`` (same file system, so the rename is
    atomic), unique per process. A resumed run deletes leftovers by this pattern (``.*.tmp-*``)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_file(path: Path) -> None:
    """Flush ``path``'s content to the disk, so that the rename that follows never exposes an empty file
    after a power loss."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; when the block succeeds it is flushed to the disk
    (``fsync``) and renamed onto ``path`` (``os.replace``, atomic on POSIX), when it fails it is removed and
    ``path`` is untouched. The block's exception (``OSError`` for a full disk, see
    :func:`pipeline.errors.is_disk_full`) propagates unchanged.

    Example: ``with atomic_path(out) as tmp: pq.write_table(table, tmp)``.
    """
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(temporary_path)`` and put the file it wrote at ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        write(tmp)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_path`)."""
    write_bytes_atomic(path, text.encode("utf-8"))
