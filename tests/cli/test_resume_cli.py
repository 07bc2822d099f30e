"""Resuming from the command line (issue 23, cases 2 and 3): the printed resume command alone continues the
run with the options it was started with; a sweep job's folder, named by its overrides, can be resumed.

The commands go through the entry point in this process (``run_cli_here``: the same options, record and lines
as ``python -m pipeline`` without an interpreter start); the sweep is a real multirun process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.errors import ExitCode
from pipeline.hydra_app import hydra_quoted, quote_run_dir, resume_command
from tests.helpers_corpus import CONFIG_LINE, MAIN, base_overrides, good_dataset, run_cli_here


def _definitions(run_dir: Path) -> dict:
    return json.loads(pq.read_schema(run_dir / "samples.parquet").metadata[b"cam_audit.definitions"])


def _interrupt(run_dir: Path, keep_parts: int) -> None:
    """Make a finished run look interrupted: the merged tables gone and only the first samples parts kept."""
    for name in ("samples.parquet", "errors.parquet", "classes.parquet", "summary.json"):
        (run_dir / name).unlink(missing_ok=True)
    for part in sorted((run_dir / "parts").glob("samples-*.parquet"))[keep_parts:]:
        part.unlink()


@pytest.fixture
def started(tmp_path) -> tuple[list[str], Path]:
    """A run of 4 of 6 images with layercam, through the CLI, then cut back to its first 2 rows."""
    good_dataset(tmp_path / "data", 6)
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache", **{"report.rows_per_part": 1})
    run_dir = tmp_path / "run"
    result = run_cli_here(overrides + ["cam.method=layercam", "data.limit=4"], run_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    _interrupt(run_dir, keep_parts=2)
    return overrides, run_dir


def test_the_resume_command_alone_continues_with_the_recorded_options(started):
    _, run_dir = started
    result = run_cli_here(["resume=true"], run_dir)  # what the interrupted run prints: no option retyped
    assert result.returncode == 0, result.stderr[-2000:]
    samples = pd.read_parquet(run_dir / "samples.parquet")
    assert sorted(samples["id"]) == [f"img_{i:05d}" for i in range(4)]  # data.limit=4 kept
    assert _definitions(run_dir)["cam_method"] == "layercam"
    start = (run_dir / "cam-audit.log").read_text()
    assert "resumed with the run's recorded options" in start and "data.limit=4" in start


def test_part_of_the_overrides_retyped_audits_the_same_set(started):
    """Was: `cam.method=layercam resume=true` without data.limit=4 audited all 6 images into the report."""
    _, run_dir = started
    result = run_cli_here(["cam.method=layercam", "resume=true"], run_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(pd.read_parquet(run_dir / "samples.parquet")) == 4


def test_a_retyped_option_that_differs_is_refused_naming_it(started):
    _, run_dir = started
    before = sorted(p.name for p in (run_dir / "parts").iterdir())
    result = run_cli_here(["data.limit=6", "cam.method=gradcam", "resume=true"], run_dir)
    assert result.returncode == ExitCode.CONFIG
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and CONFIG_LINE.match(lines[0])["option"] == "resume", lines
    assert " in cam.method, data.limit, " in lines[0] and 'cam.method: "layercam" -> "gradcam"' in lines[0]
    assert sorted(p.name for p in (run_dir / "parts").iterdir()) == before


def test_a_sweep_job_named_by_its_overrides_resumes(tmp_path):
    """The sweep of docs/scaling.md: folders named by hydra.job.override_dirname (`cam.method=layercam,data.limit=4`).
    Resuming one failed with "mismatched input '='": the folder name was parsed as overrides."""
    good_dataset(tmp_path / "data", 6)
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache", **{"report.rows_per_part": 1})
    keys = ",".join(option.split("=", 1)[0].lstrip("+") for option in overrides)
    sweep = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "-m",
            *overrides,
            "cam.method=gradcam,layercam",
            "data.limit=4",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "hydra.sweep.subdir=${hydra.job.override_dirname}",
            f"hydra.job.config.override_dirname.exclude_keys=[{keys}]",
        ],
        cwd=MAIN,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    job = tmp_path / "sweep" / "cam.method=layercam,data.limit=4"
    assert job.is_dir(), sorted(p.name for p in (tmp_path / "sweep").iterdir())
    _interrupt(job, keep_parts=1)
    result = run_cli_here(["resume=true"], job)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(pd.read_parquet(job / "samples.parquet")) == 4 and _definitions(job)["cam_method"] == "layercam"


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("outputs/run", "outputs/run"),
        ("outputs/sweep/cam=layercam,data.limit=4", "'outputs/sweep/cam=layercam,data.limit=4'"),
        ("'already=quoted'", "'already=quoted'"),
        ("it's=here", '"it\'s=here"'),
        ("outputs/${now:%Y-%m-%d}", "outputs/${now:%Y-%m-%d}"),
    ],
)
def test_hydra_run_dir_is_quoted_only_when_hydra_would_parse_it(value, quoted):
    assert hydra_quoted(value) == quoted
    assert quote_run_dir(["cam=layercam", f"hydra.run.dir={value}"]) == ["cam=layercam", f"hydra.run.dir={quoted}"]


def test_the_printed_resume_command_survives_a_shell():
    import shlex

    folder = Path("/tmp/my runs/cam=layercam,data.limit=4")
    assert shlex.split(resume_command(folder)) == [f"hydra.run.dir={folder}", "resume=true"]
