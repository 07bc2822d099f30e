"""pipeline.atomic: a write either replaces the file completely or leaves it as it was, and no temporary
file stays behind."""

from __future__ import annotations

import pytest

from pipeline.atomic import atomic_path


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
