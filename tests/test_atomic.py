"""pipeline.atomic: a write either replaces the file completely or leaves it as it was, and no temporary
file stays behind."""

from __future__ import annotations

import errno

import numpy as np
import pyarrow as pa
import pytest

from pipeline import atomic
from pipeline.atomic import atomic_path, write_atomic, write_bytes_atomic
from pipeline.errors import is_disk_full
from pipeline.jsonio import write_json_atomic
from pipeline.reports.overlays import write_jpeg_atomic
from pipeline.reports.parts import merge_parts, write_table_atomic
from pipeline.run_folder import FINGERPRINT_NAME, store_fingerprint


def test_success_replaces_and_failure_leaves_the_old_file(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".summary.json.tmp-")
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the block ends
    assert target.read_text() == "new"
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError("disk full")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no temporary file left


def test_bytes_and_callback_writers_replace_the_file(tmp_path):
    target = tmp_path / "a.bin"
    write_bytes_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    write_atomic(target, lambda tmp: tmp.write_text("from a callback"))
    assert target.read_text() == "from a callback"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def _full_disk(path):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


WRITERS = {
    "part or table": lambda path: write_table_atomic(pa.table({"id": ["a"]}), path),
    "merged table": lambda path: merge_parts([], path, pa.schema([("id", pa.string())]), {}),
    "summary.json": lambda path: write_json_atomic(path, {"images": 1}),
    "overlay": lambda path: write_jpeg_atomic(path, np.zeros((4, 4, 3), np.uint8)),
    "fingerprint": lambda path: store_fingerprint(path.parent, {"seed": 0}),
}


@pytest.mark.parametrize("writer", WRITERS, ids=list(WRITERS))
def test_every_writer_goes_through_the_one_atomic_writer(tmp_path, monkeypatch, writer):
    """A full disk at the last step of ``pipeline.atomic`` reaches each writer as a disk-full error (exit 4
    in the command line), leaves the old file as it was and no temporary file: so each writer uses it."""
    target = tmp_path / FINGERPRINT_NAME if writer == "fingerprint" else tmp_path / "out"
    target.write_bytes(b"old")
    monkeypatch.setattr(atomic, "fsync_file", _full_disk)
    with pytest.raises(OSError) as error:
        WRITERS[writer](target)
    assert is_disk_full(error.value)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
