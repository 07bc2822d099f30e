"""Sharded runs (issue 22): ``runtime.shards`` jobs audit one dataset into one run folder, then one merge.

The shards run as separate processes of the command line, as SLURM array tasks would (two of them at once),
into one folder; ``cam-audit merge`` (or the last shard) writes the report. The merged tables are compared with
a one-process run of the same data: the same rows, the same classes and errors, the same summary but for the
timings and the provenance. A shard stopped with SIGTERM mid-run (what SLURM sends before a kill) and started
again with its own command line (what a requeue does) continues its shard: every sample exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from pipeline.errors import ConfigError, ExitCode
from pipeline.shards import Shard, acquire_locks, select, shard_of
from tests.helpers_corpus import (
    MAIN,
    base_overrides,
    good_dataset,
    read_summary,
    run_cli,
    run_in_process,
    start_cli_job,
)

TABLES = ("samples", "classes", "errors")
# summary.json keys that differ between two runs of the same data: where and when they ran, how long, and how
# much their last invocations audited (a resumed shard, like a resumed run, counts what it did; checked apart)
TIMINGS = {"run_dir", "provenance", "images_per_second", "seconds", "setup_seconds", "total_seconds"}
TIMINGS |= {"images_scored_this_invocation"}


def sharded(overrides: list[str], shard: int, shards: int) -> list[str]:
    return [*overrides, f"runtime.shards={shards}", f"runtime.shard={shard}"]


def merge_cli(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline", "merge", str(run_dir), *overrides]
    return subprocess.run(command, cwd=MAIN, capture_output=True, text=True, timeout=180)


def read_table(run_dir: Path, table: str) -> pd.DataFrame:
    frame = pd.read_parquet(run_dir / f"{table}.parquet")
    key = ["label"] if table == "classes" else ["id"]
    return frame.sort_values(key, kind="stable").reset_index(drop=True)


def assert_same_report(merged: Path, single: Path) -> None:
    """The report of ``merged`` is the one-process run's: every table's rows (in id order, as written), and the
    summary but for the timings and the provenance (and the sanity check's seconds). Floats to 1e-5: a shard's
    batches hold other images than one process's, and a batched forward on the CPU rounds with its batch."""
    for table in TABLES:
        ours, theirs = read_table(merged, table), read_table(single, table)
        pd.testing.assert_frame_equal(ours, theirs, check_exact=False, atol=1e-5, rtol=1e-5)
    ids = pd.read_parquet(merged / "samples.parquet")["id"].tolist()
    assert ids == sorted(ids)  # written in id order, as one process writes them
    ours, theirs = read_summary(merged), read_summary(single)
    for summary in (ours, theirs):  # what the sanity check and the strategies took, in seconds
        summary["sanity_check"].pop("seconds")
        summary["strategies"] = {k: v for k, v in summary["strategies"].items() if not k.endswith("seconds")}
    assert_close(
        {k: v for k, v in ours.items() if k not in TIMINGS}, {k: v for k, v in theirs.items() if k not in TIMINGS}
    )


def assert_close(ours, theirs, where: str = "summary") -> None:
    """Equal JSON values, numbers to 1e-5 (see :func:`assert_same_report`)."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and ours.keys() == theirs.keys(), where
        for key in theirs:
            assert_close(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), where
        for index, (mine, other) in enumerate(zip(ours, theirs)):
            assert_close(mine, other, f"{where}[{index}]")
    elif isinstance(theirs, float) and not isinstance(ours, bool):
        assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-5), where
    else:
        assert ours == theirs, where


def test_every_sample_has_one_shard_that_its_id_alone_decides():
    records = [SimpleNamespace(sample_id=f"img_{i:05d}") for i in range(300)]
    for count in (2, 3, 8):
        shards = [select(records, Shard(k, count)) for k in range(count)]
        assert sorted(r.sample_id for part in shards for r in part) == [r.sample_id for r in records]
        assert min(map(len, shards)) > 300 / count / 2  # no shard left (nearly) empty
        # the same records in another order, or with more appended, keep their shards
        assert {r.sample_id for r in select(records[::-1], Shard(1, count))} == {r.sample_id for r in shards[1]}
        grown = records + [SimpleNamespace(sample_id=f"new_{i}") for i in range(50)]
        assert select(grown, Shard(1, count))[: len(shards[1])] == shards[1]
    assert select(records, Shard(0, 1)) == records  # not sharded: everything
    # the assignment is part of a run folder's contract (a shard resumed by a later version must find its own
    # samples): pinned, SHA-256 of "shard\0<id>", first 8 bytes big-endian, mod 8
    assert [shard_of(f"img_{i:05d}", 8) for i in range(6)] == [0, 1, 2, 5, 0, 6]


def test_a_shard_outside_the_count_is_refused_before_any_work(tmp_path):
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache")
    for options, option in (
        (["runtime.shards=2", "runtime.shard=2"], "runtime.shard"),
        (["runtime.shards=0"], "runtime.shards"),
    ):
        with pytest.raises(ConfigError) as error:
            run_in_process([*overrides, *options], tmp_path / "run")
        assert error.value.option == option
        assert not (tmp_path / "run").exists()


def test_loader_workers_leave_the_schedulers_signals_to_the_main_process():
    """SLURM signals every process of a job: a loader worker must neither stop on SIGTERM nor run submitit's
    SIGUSR2 handler (inherited by the fork: it would requeue the shard a second time)."""
    from pipeline.run import ignore_scheduler_signals

    signals = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
    saved = {number: signal.getsignal(number) for number in signals}
    try:
        for number in signals:
            signal.signal(number, lambda *_: None)  # as submitit's handlers would be
        ignore_scheduler_signals(0)
        assert [signal.getsignal(number) for number in signals] == [signal.SIG_IGN] * 3
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def test_shards_run_in_turn_in_this_process_merge_into_the_one_process_report(tmp_path):
    """The fast suite's sharded run, in this process (the two tests below start a dozen processes each: make
    test-all): three shards one after another, the last one merges, and the report is the one-process run's."""
    ids = good_dataset(tmp_path / "data", 12)
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache", **{"report.rows_per_part": 2})
    run_in_process(overrides, tmp_path / "single")
    for k in range(3):
        assert not (tmp_path / "run" / "summary.json").exists()
        run_in_process(sharded(overrides, k, 3), tmp_path / "run")
    assert_same_report(tmp_path / "run", tmp_path / "single")
    summary = read_summary(tmp_path / "run")
    assert summary["images_scored_this_invocation"] == len(ids)  # the shards' images, summed
    assert [s["shard"] for s in summary["provenance"]["shards"]] == [0, 1, 2]
    assert sum(s["images"] for s in summary["provenance"]["shards"]) == len(ids)
    assert not (tmp_path / "run" / ".cam-audit.lock").exists()


# The two tests below start shards as processes (two at once, a stop with SIGTERM, the merge command): about
# ten Python processes each, 30-40 s apiece on 2 cores.
SHARD_PROCESSES = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """24 images and their one-process run (the reference): ``(overrides, reference run folder, ids)``."""
    root = tmp_path_factory.mktemp("shards")
    ids = good_dataset(root / "data", 24)
    overrides = base_overrides(
        root / "data", root / "cache", **{"report.rows_per_part": 2, "+model.kwargs.delay_s": 0.05}
    )
    result = run_cli(overrides, root / "single")
    assert result.returncode == 0, result.stderr[-2000:]
    return overrides, root / "single", ids


@SHARD_PROCESSES
@pytest.mark.timeout(600)
def test_shards_run_at_once_into_one_folder_and_merge_into_the_one_process_report(corpus, tmp_path):
    overrides, single, ids = corpus
    run_dir = tmp_path / "run"
    options = [*overrides, "runtime.merge_when_last=false"]
    running = [start_cli_job(sharded(options, k, 3), run_dir) for k in (0, 1)]  # two array tasks at once
    for process in running:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    for k in (0, 1):
        assert list((run_dir / "parts" / f"shard-{k:03d}").glob("samples-r000-*.parquet"))
        assert (run_dir / f"cam-audit-shard-{k:03d}.log").is_file()  # one job log per shard
    assert not (run_dir / "samples.parquet").exists()

    refused = merge_cli(run_dir)  # shard 2 has not run
    assert refused.returncode == ExitCode.CONFIG, refused.stderr[-2000:]
    assert "1 of 3 shards are not complete: shard 2 (not started)" in refused.stderr
    assert not (run_dir / "summary.json").exists() and not (run_dir / "cam-audit-merge.log").exists()

    locks = acquire_locks(run_dir, Shard(2, 3))  # shard 2 running (as another process would hold it)
    try:
        again = run_cli(sharded(options, 2, 3), run_dir)  # the same shard twice at once: a scheduler's retry
        assert again.returncode == ExitCode.CONFIG and "shard 2 of 3 of" in again.stderr and "in use" in again.stderr
        busy = merge_cli(run_dir)
        assert (
            busy.returncode == ExitCode.CONFIG and "in use by another run (the shards of a sharded run" in busy.stderr
        )
    finally:
        for lock in reversed(locks):
            lock.release()

    last = run_cli(sharded(options, 2, 3), run_dir)
    assert last.returncode == 0, last.stderr[-2000:]
    assert "shard 2 of 3" in last.stdout and "3 of 3 shards complete" in last.stdout
    assert not (run_dir / "summary.json").exists()  # runtime.merge_when_last=false: only cam-audit merge writes it
    other = merge_cli(run_dir, "scores.tolerance=3")  # an option that changes the rows: not the shards' set-up
    assert other.returncode == ExitCode.CONFIG and "scores.tolerance" in other.stderr, other.stderr[-2000:]
    assert not (run_dir / "summary.json").exists() and not (run_dir / "cam-audit-merge.log").exists()
    merged = merge_cli(run_dir, "runtime.batch_size=2")  # how the merge runs (its sanity check): accepted
    assert merged.returncode == 0, merged.stderr[-2000:]
    assert "Audit of 24 images" in merged.stdout
    assert "merging 3 shards" in (run_dir / "cam-audit-merge.log").read_text()
    assert_same_report(run_dir, single)
    summary = read_summary(run_dir)
    assert summary["images_scored_this_invocation"] == 24  # the shards' images, summed
    assert [s["shard"] for s in summary["provenance"]["shards"]] == [0, 1, 2]
    assert sum(s["images"] for s in summary["provenance"]["shards"]) == 24
    assert summary["sanity_check"]["images"] > 0  # run once, by the merge
    assert not (run_dir / ".cam-audit.lock").exists()


@SHARD_PROCESSES
@pytest.mark.timeout(600)
def test_a_shard_stopped_mid_run_continues_when_started_again_and_the_last_shard_merges(corpus, tmp_path):
    overrides, single, ids = corpus
    run_dir = tmp_path / "run"
    first = run_cli(sharded(overrides, 1, 2), run_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "1 of 2 shards complete" in first.stdout and not (run_dir / "summary.json").exists()

    process = start_cli_job(sharded(overrides, 0, 2), run_dir)
    own = run_dir / "parts" / "shard-000"
    try:
        deadline = time.monotonic() + 120
        while not list(own.glob("samples-*.parquet")):
            assert process.poll() is None and time.monotonic() < deadline, "the shard ended before it was stopped"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGTERM)  # SLURM's stop before the kill (preemption, time limit)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
    assert process.returncode == ExitCode.TERMINATED, err[-2000:]
    assert "runtime.shards=2 runtime.shard=0" in err  # the command that continues it names its shard
    kept = pd.concat([pd.read_parquet(p) for p in own.glob("samples-*.parquet")])["id"].tolist()
    share = [i for i in ids if shard_of(i, 2) == 0]
    assert 0 < len(kept) < len(share) and set(kept) <= set(share)

    refused = merge_cli(run_dir)
    assert refused.returncode == ExitCode.CONFIG
    assert "shard 0 (stopped: run it again, it continues)" in refused.stderr
    with pytest.raises(ConfigError) as other:  # a shard with another configuration: refused, naming the option
        run_in_process([*sharded(overrides, 0, 2), "scores.tolerance=3"], run_dir)
    assert other.value.option == "runtime.shard" and "scores.tolerance" in str(other.value)
    with pytest.raises(ConfigError) as unsharded:  # a one-process run into the shards' folder
        run_in_process([*overrides, "resume=true"], run_dir)
    assert "runtime.shards" in str(unsharded.value)

    requeued = run_cli(sharded(overrides, 0, 2), run_dir)  # the same command line: a requeue, no resume=true
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    assert f"shard 0 of 2: {len(share) - len(kept)} images" in requeued.stdout  # only what the stop left
    assert "Audit of 24 images" in requeued.stdout  # the last shard to finish merged
    assert_same_report(run_dir, single)
    assert read_summary(run_dir)["images_scored_this_invocation"] == len(ids) - len(kept)  # none audited twice
    log = (run_dir / "cam-audit-shard-000.log").read_text()
    assert "terminated (SIGTERM)" in log and "merging 2 shards of" in log

    finished = run_cli(sharded(overrides, 1, 2), run_dir)  # a shard of a merged run is refused, as any run
    assert finished.returncode == ExitCode.CONFIG and "already holds a finished (merged) run" in finished.stderr
    assert json.loads((run_dir / "parts" / "shard-001" / "complete.json").read_text())["images"] == len(ids) - len(
        share
    )
