"""Overlay pictures are written checked (issue 11, case 14).

A degenerate picture (1 x 3,000 px in ``scores.space=original``) once made a 224 x 114,000 JPEG that
OpenCV refused silently (``cv2.imwrite`` returned False), then the rename of the file that was never
written killed the run with ``FileNotFoundError``; a full disk did the same. Now the drawn size is
bounded, an overlay that cannot be written is an ``errors.parquet`` row (stage ``overlay``) and a full
disk stops the run (exit 4) with a message that says to resume.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import cv2
import pandas as pd
import pytest

from pipeline.errors import is_disk_full
from pipeline.reports.overlays import MAX_PANEL_SIDE, MIN_PANEL_WIDTH, panel_size, safe_file_stem
from tests.helpers_corpus import add_sample, base_overrides, good_dataset, noise_image, run_cli, run_in_process


def test_panel_size_is_bounded_whatever_the_aspect_ratio():
    assert panel_size(32, 32) == (MIN_PANEL_WIDTH, MIN_PANEL_WIDTH)  # small inputs enlarged by a whole factor
    assert panel_size(512, 1) == (MAX_PANEL_SIDE, 4)  # was 114,688 x 224: the zoom is capped by the long side
    assert panel_size(1, 100_000) == (1, MAX_PANEL_SIDE)
    assert panel_size(300, 400) == (300, 400)
    assert panel_size(96, 96) == (384, 384)  # tiny: a whole factor (4), crisp pixels
    assert panel_size(224, 224) == (320, 320)  # 224 px: the exact fraction, not twice the size (4x the pixels)


def test_a_one_pixel_wide_image_in_original_space_gets_a_bounded_overlay(tmp_path):
    root = tmp_path / "data"
    ids = good_dataset(root, 3)
    add_sample(root, "thin", noise_image(1, 800, 7), ext=".png", key="n002", boxes=[(1, 100, 1, 600)])
    # allowed on purpose (the default max_aspect_ratio refuses it): the overlay must stay bounded anyway
    overrides = base_overrides(
        root,
        tmp_path / "cache",
        **{"scores.space": "original", "report.overlays": "all", "data.preprocess.max_aspect_ratio": 1000},
    )
    summary = run_in_process(overrides, tmp_path / "run")
    assert summary["images"] == 4 and summary["errors"] == 0
    picture = cv2.imread(str(tmp_path / "run" / "overlays" / f"{safe_file_stem('thin')}.jpg"))
    assert picture is not None  # written and readable
    # the panel, then text: captions, the triage band and the legend strip
    assert picture.shape[0] <= MAX_PANEL_SIDE + 400 and picture.shape[1] <= 3 * MAX_PANEL_SIDE
    assert len(list((tmp_path / "run" / "overlays").glob("*.jpg"))) == len(ids) + 1


def test_an_overlay_that_cannot_be_written_is_an_error_row_and_the_run_goes_on(tmp_path):
    root = tmp_path / "data"
    ids = good_dataset(root, 5)
    blocked = tmp_path / "run" / "overlays" / f"{safe_file_stem(ids[2])}.jpg"
    blocked.mkdir(parents=True)  # a folder where the picture should go: the rename onto it fails
    summary = run_in_process(base_overrides(root, tmp_path / "cache", **{"report.overlays": "all"}), tmp_path / "run")
    samples = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    errors = pd.read_parquet(tmp_path / "run" / "errors.parquet")
    assert sorted(samples["id"]) == ids  # every sample scored, the one without a picture too
    assert errors[["id", "stage"]].values.tolist() == [[ids[2], "overlay"]]
    assert "overlay not written" in errors["message"].iloc[0]
    assert summary["errors_by_stage"] == [{"stage": "overlay", "error_type": "IsADirectoryError", "n": 1}]
    assert len(list((tmp_path / "run" / "overlays").glob("*.jpg"))) == 5  # four pictures and the folder
    assert not list((tmp_path / "run" / "overlays").glob(".*"))  # no temporary file left


def _mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` at ``path``; False where this user may not mount."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def _unmount(path: Path) -> None:
    """Unmount the test's tmpfs; lazily when a file in it is still open (a mount must not outlive the test)."""
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 160 KiB tmpfs (skipped where this user cannot mount); unmounted afterwards."""
    disk = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    if not _mount_tmpfs(disk, "160k"):
        pytest.skip("mounting a small tmpfs needs root")
    yield disk
    _unmount(disk)


def test_a_full_disk_stops_the_run_and_leaves_a_resumable_folder(tmp_path, small_disk):
    root, run_dir = tmp_path / "data", small_disk / "run"
    ids = good_dataset(root, 24, side=48)
    overrides = base_overrides(root, tmp_path / "cache", **{"report.overlays": "all", "report.rows_per_part": 4})
    with pytest.raises(OSError) as error:
        run_in_process(overrides, run_dir)
    assert is_disk_full(error.value), error.value
    assert not [p for p in run_dir.rglob(".*") if ".tmp" in p.name]  # no half-written file stays
    for part in (run_dir / "parts").glob("*.parquet"):
        pd.read_parquet(part)  # every part on disk is complete
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    run_in_process(overrides + ["resume=true"], run_dir)
    assert sorted(pd.read_parquet(run_dir / "samples.parquet")["id"]) == ids  # every sample exactly once


@pytest.mark.slow
def test_cli_full_disk_exits_4_with_one_line_and_resume_finishes(tmp_path):
    disk = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    if not _mount_tmpfs(disk, "160k"):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        root = tmp_path / "data"
        ids = good_dataset(root, 24, side=48)
        overrides = base_overrides(root, tmp_path / "cache", **{"report.overlays": "all", "report.rows_per_part": 4})
        run_dir = disk / "run"
        result = run_cli(overrides, run_dir)
        assert result.returncode == 4, result.stderr[-2000:]
        lines = [line for line in result.stderr.splitlines() if line.startswith("cam-audit:")]
        assert len(lines) == 1 and "disk" in lines[0] and "full" in lines[0] and "resume=true" in lines[0]
        assert "Traceback" not in result.stderr
        assert not [p for p in run_dir.rglob(".*") if ".tmp" in p.name]  # no half-written file stays
        for part in (run_dir / "parts").glob("*.parquet"):
            pd.read_parquet(part)  # every part on disk is complete
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        result = run_cli(overrides + ["resume=true"], run_dir)
        assert result.returncode == 0, result.stderr[-2000:]
        samples = pd.read_parquet(run_dir / "samples.parquet")["id"].tolist()
        assert sorted(samples) == ids  # every sample exactly once after the resume
    finally:
        _unmount(disk)
