"""A resume completes what the stopped run left half-done (issue 23, case 6, and a kill between two parts).

A run stopped between a batch's samples part and its pictures (a full disk in the overlay thread, exit 4)
left scored rows with no overlay and no ``overlay`` errors row, and the resume skipped them. The parts of one
batch are flushed one table after the other, so a kill between two flushes left maps rows of unscored
samples (a second row after the resume) or scored samples without maps rows, and an ``overlay`` errors row
counted its sample as done although its samples row was never written (the sample was lost).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import is_disk_full
from pipeline.reports.overlays import safe_file_stem
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process


def _interrupt(run_dir: Path) -> None:
    """A finished run as a stopped one: the merged tables and the summary gone, the parts kept."""
    for name in ("samples.parquet", "errors.parquet", "classes.parquet", "maps.parquet", "summary.json"):
        (run_dir / name).unlink(missing_ok=True)


def _overlay(run_dir: Path, sample_id: str) -> Path:
    return run_dir / "overlays" / f"{safe_file_stem(sample_id)}.jpg"


def _part_holding(run_dir: Path, table: str, sample_id: str) -> Path:
    return next(
        p for p in sorted((run_dir / "parts").glob(f"{table}-*.parquet")) if sample_id in set(pd.read_parquet(p)["id"])
    )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """An 8-image run with every overlay and the maps, made once under ``work/`` and copied to ``pristine/``:
    ``(base, ids, overrides)``."""
    base = tmp_path_factory.mktemp("resume_completion")
    ids = good_dataset(base / "work" / "data", 8)
    overrides = base_overrides(
        base / "work" / "data",
        base / "work" / "cache",
        **{"report.overlays": "all", "report.rows_per_part": 2, "runtime.batch_size": 2, "cam.save_maps": "true"},
    )
    run_in_process(overrides, base / "work" / "run")
    shutil.copytree(base / "work", base / "pristine")
    return base, ids, overrides


@pytest.fixture
def finished(pristine) -> tuple[list[str], list[str], Path]:
    """The run as it was made, at the same paths (a resume compares them): ``(ids, overrides, run_dir)``; each
    test may change it, the next one gets it back."""
    base, ids, overrides = pristine
    shutil.rmtree(base / "work")
    shutil.copytree(base / "pristine", base / "work")
    return ids, overrides, base / "work" / "run"


def test_missing_overlays_of_scored_rows_are_drawn_again_on_resume(finished):
    ids, overrides, run_dir = finished
    _interrupt(run_dir)
    lost = {sample_id: _overlay(run_dir, sample_id).read_bytes() for sample_id in ids[1:4]}
    for sample_id in lost:
        _overlay(run_dir, sample_id).unlink()
    summary = run_in_process(overrides + ["resume=true"], run_dir)
    assert summary["images_scored_this_invocation"] == 0  # no row is audited again
    for sample_id, picture in lost.items():  # the same model, maps and stored captions: the same picture
        assert _overlay(run_dir, sample_id).read_bytes() == picture
    assert len(pd.read_parquet(run_dir / "errors.parquet")) == 0
    assert sorted(pd.read_parquet(run_dir / "samples.parquet")["id"]) == ids


def test_an_overlay_that_cannot_be_drawn_on_resume_is_an_error_row(finished):
    ids, overrides, run_dir = finished
    _interrupt(run_dir)
    _overlay(run_dir, ids[5]).unlink()
    _overlay(run_dir, ids[5]).mkdir()  # a folder where the picture should go
    run_in_process(overrides + ["resume=true"], run_dir)
    errors = pd.read_parquet(run_dir / "errors.parquet")
    assert errors[["id", "stage"]].values.tolist() == [[ids[5], "overlay"]]


def test_missing_and_orphan_maps_rows_are_mended_on_resume(finished):
    ids, overrides, run_dir = finished
    _interrupt(run_dir)
    _part_holding(run_dir, "maps", ids[0]).unlink()  # killed after the samples part, before the maps part
    _part_holding(run_dir, "samples", ids[7]).unlink()  # killed after the maps part, before the samples part
    run_in_process(overrides + ["resume=true"], run_dir)
    maps = pd.read_parquet(run_dir / "maps.parquet")["id"].tolist()
    assert sorted(maps) == ids == sorted(pd.read_parquet(run_dir / "samples.parquet")["id"])  # each once


def test_an_overlay_error_row_does_not_count_its_sample_as_done(tmp_path):
    ids = good_dataset(tmp_path / "data", 6)
    overrides = base_overrides(
        tmp_path / "data",
        tmp_path / "cache",
        **{"report.overlays": "all", "report.rows_per_part": 2, "runtime.batch_size": 2},
    )
    run_dir = tmp_path / "run"
    _overlay(run_dir, ids[2]).mkdir(parents=True)  # its overlay fails: an errors row at stage overlay
    run_in_process(overrides, run_dir)
    _interrupt(run_dir)
    _part_holding(run_dir, "samples", ids[2]).unlink()  # the errors part was flushed, its samples part not
    run_in_process(overrides + ["resume=true"], run_dir)
    assert sorted(pd.read_parquet(run_dir / "samples.parquet")["id"]) == ids  # was: ids[2] lost
    errors = pd.read_parquet(run_dir / "errors.parquet")
    assert errors[["id", "stage"]].values.tolist() == [[ids[2], "overlay"]]  # once, not the stale one too


def test_after_a_full_disk_in_the_overlays_every_scored_row_has_its_overlay_or_an_error(tmp_path):
    from tests.reports.test_overlay_writes import _mount_tmpfs, _unmount

    disk = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    if not _mount_tmpfs(disk, "160k"):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        root, run_dir = tmp_path / "data", disk / "run"
        ids = good_dataset(root, 24, side=48)
        overrides = base_overrides(root, tmp_path / "cache", **{"report.overlays": "all", "report.rows_per_part": 4})
        with pytest.raises(OSError) as error:
            run_in_process(overrides, run_dir)
        assert is_disk_full(error.value), error.value
        scored = {i for p in (run_dir / "parts").glob("samples-*.parquet") for i in pd.read_parquet(p)["id"]}
        assert any(not _overlay(run_dir, i).exists() for i in scored)  # the stop left scored rows without picture
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        run_in_process(overrides + ["resume=true"], run_dir)
        errors = pd.read_parquet(run_dir / "errors.parquet")
        overlay_errors = set(errors.loc[errors["stage"] == "overlay", "id"])
        assert sorted(pd.read_parquet(run_dir / "samples.parquet")["id"]) == ids
        assert [i for i in ids if not _overlay(run_dir, i).is_file() and i not in overlay_errors] == []
    finally:
        _unmount(disk)
