"""Two runs started into one folder at the same time (a scheduler that retries too early, a doubled cron
line): tried while breaking the run folder's promises (issue 23). One runs, the other is refused (exit 2)
without writing anything into the folder; the report holds every sample once."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest

from pipeline.errors import ExitCode
from tests.helpers_corpus import MAIN, base_overrides, cli_command, good_dataset


@pytest.mark.slow  # two real processes racing: 15-30 s on 2 cores (the lock itself: tests/run/test_run_folder.py)
def test_two_runs_into_one_new_folder_at_once_one_runs_one_is_refused(tmp_path):
    ids = good_dataset(tmp_path / "data", 12)
    overrides = base_overrides(
        tmp_path / "data",
        tmp_path / "cache",
        **{"+model.kwargs.delay_s": 0.05, "runtime.log_format": "json", "report.rows_per_part": 4},
    )
    run_dir = tmp_path / "night"
    processes = [
        subprocess.Popen(
            cli_command(overrides, run_dir), cwd=MAIN, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=240), p.stderr.read()) for p in processes]
    codes = sorted(code for code, _ in results)
    assert codes == [ExitCode.OK, ExitCode.CONFIG], [err[-1500:] for _, err in results]
    refused = next(err for code, err in results if code == ExitCode.CONFIG)
    last = json.loads(refused.strip().splitlines()[-1])
    assert last["exit_code"] == ExitCode.CONFIG
    assert "in use by another run" in last["message"] or "already holds a run" in last["message"], last
    starts = [e for e in map(json.loads, (run_dir / "cam-audit.log").read_text().splitlines()) if e["event"] == "start"]
    assert len(starts) == 1  # the refused start wrote nothing into the folder's log
    samples = pd.read_parquet(run_dir / "samples.parquet")["id"].tolist()
    assert sorted(samples) == ids  # every sample once
