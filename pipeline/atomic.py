"""One way to write a file atomically, for every writer (parts, merged tables, summary.json, the default
model's checkpoint): readers see the old file or the new one, never a part of it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_sibling(path: Path) -> Path:
    """``<folder>/.<name>.tmp-<pid>``: hidden, beside ``path`` (same file system, so the rename is
    atomic), unique per process. A resumed run deletes leftovers by this pattern (``.*.tmp-*``)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; when the block succeeds it is renamed onto
    ``path`` (``os.replace``, atomic on POSIX), when it fails it is removed and ``path`` is untouched.

    Example: ``with atomic_path(out) as tmp: pq.write_table(table, tmp)``.
    """
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
