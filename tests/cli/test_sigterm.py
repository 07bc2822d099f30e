"""SIGTERM, what schedulers send, stops a run like Ctrl-C (issue 23, case 5). Before: the process died at
once with no log event and no message (exit -15); rows queued for the writers were lost without a word."""

from __future__ import annotations

import json
import os
import signal
import time

import pandas as pd
import pytest

from pipeline.errors import ExitCode
from tests.helpers_corpus import add_sample, base_overrides, good_dataset, run_cli, start_cli_job


@pytest.mark.slow  # a real process signalled mid-run, then resumed: 20-50 s on 2 cores
def test_sigterm_mid_run_keeps_the_parts_logs_and_exits_143_then_resume_finishes(tmp_path):
    root, run_dir = tmp_path / "data", tmp_path / "run"
    ids = good_dataset(root, 60, side=16)
    add_sample(root, "img_00030b", b"not an image", boxes=[(1, 1, 5, 5)], size=(16, 16))
    ids.append("img_00030b")
    overrides = base_overrides(
        root,
        tmp_path / "cache",
        **{
            "report.rows_per_part": 4,
            "runtime.batch_size": 4,
            "runtime.num_workers": 2,
            "runtime.log_format": "json",
            "+model.kwargs.delay_s": 0.05,
        },
    )
    process = start_cli_job(overrides, run_dir)
    try:
        deadline = time.monotonic() + 120
        while not list((run_dir / "parts").glob("samples-*.parquet")):
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before it was signalled"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGTERM)  # the whole job, loader workers too, as a scheduler does
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
    assert process.returncode == ExitCode.TERMINATED == 143, err[-2000:]
    events = [json.loads(line) for line in err.splitlines()]  # every stderr line one JSON event: no traceback
    last = events[-1]
    assert last["event"] == "error" and last["exit_code"] == 143
    assert "terminated (SIGTERM)" in last["message"] and f"hydra.run.dir={run_dir}" in last["message"]
    logged = [json.loads(line) for line in (run_dir / "cam-audit.log").read_text().splitlines()]
    assert logged[-1]["event"] == "error" and logged[-1]["exit_code"] == 143  # in the job log too
    assert not (run_dir / "summary.json").exists()
    kept = [pd.read_parquet(p)["id"].tolist() for p in sorted((run_dir / "parts").glob("*-r000-*.parquet"))]
    done = [i for part in kept for i in part]
    assert 0 < len(done) < len(ids) and len(set(done)) == len(done)

    result = run_cli(["resume=true"], run_dir)  # the printed command: the recorded options are used
    assert result.returncode == 0, result.stderr[-2000:]
    samples = pd.read_parquet(run_dir / "samples.parquet")["id"].tolist()
    errors = pd.read_parquet(run_dir / "errors.parquet")["id"].tolist()
    assert sorted(samples + errors) == sorted(ids)  # every sample exactly once: none lost, none twice
    assert errors == ["img_00030b"]
