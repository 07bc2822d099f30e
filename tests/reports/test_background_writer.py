"""Parquet parts and overlays written off the critical path: order, back-pressure, failures, resume.

The worker is tested alone (jobs in order, a bounded queue that blocks, a failure that stops it and is
raised in the caller), then inside a run: a Parquet writer that fails mid-run stops the run with an error
naming the writer, an overlay writer likewise, and resuming either run gives every image exactly once;
a run killed with SIGKILL while both writers have work queued resumes to every image exactly once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import pipeline.reports.parts as parts_module
import pipeline.sink as run_module
from pipeline.reports.background import BackgroundWorker, BackgroundWriteError
from tests.helpers_corpus import (
    base_overrides,
    good_dataset,
    kill_when_parts_written,
    run_in_process,
)


def test_jobs_run_in_submission_order():
    seen: list[int] = []
    worker = BackgroundWorker("test", max_pending=2)
    for i in range(20):
        worker.submit(seen.append, i)
    worker.close()
    assert seen == list(range(20))


def test_a_full_queue_makes_submit_wait():
    release = threading.Event()
    worker = BackgroundWorker("test", max_pending=1)
    worker.submit(release.wait)  # the thread takes it and blocks
    time.sleep(0.05)
    worker.submit(lambda: None)  # fills the one free place
    returned = threading.Event()
    thread = threading.Thread(target=lambda: (worker.submit(lambda: None), returned.set()))
    thread.start()
    assert not returned.wait(0.3), "submit returned although the queue was full"
    release.set()
    assert returned.wait(5)
    thread.join()
    worker.close()


def test_a_failed_job_stops_the_worker_and_is_raised_by_the_next_submit():
    ran: list[str] = []

    def fail() -> None:
        raise OSError(28, "No space left on device")

    worker = BackgroundWorker("parquet", max_pending=4)
    worker.submit(fail)
    with pytest.raises(BackgroundWriteError):
        worker.drain()  # waits for the failing job, then raises
    with pytest.raises(
        BackgroundWriteError, match=r"background parquet writer failed: OSError.*No space left"
    ) as error:
        worker.submit(ran.append, "later")
    assert isinstance(error.value.error, OSError) and error.value.worker == "parquet"
    with pytest.raises(BackgroundWriteError):
        worker.close()
    assert ran == []


def test_a_failure_met_through_another_worker_keeps_its_worker_and_original_error():
    """The parquet thread submits to the overlay thread: a full disk met there must reach the main loop as
    the overlay writer's ``OSError`` (exit 4, resumable), not as a wrapped error (it was exit 5)."""
    overlays = BackgroundWorker("overlays", max_pending=4)
    overlays.submit(_raise_disk_full)
    with pytest.raises(BackgroundWriteError):
        overlays.drain()
    parquet = BackgroundWorker("parquet", max_pending=4)
    parquet.submit(overlays.submit, print)  # raises the overlay writer's error on the parquet thread
    with pytest.raises(BackgroundWriteError, match=r"^the background overlays writer failed: OSError") as error:
        parquet.close()
    assert isinstance(error.value.error, OSError) and error.value.worker == "overlays"
    overlays.close(check=False)


def _raise_disk_full() -> None:
    raise OSError(28, "No space left on device")


def test_jobs_queued_after_a_failure_are_dropped():
    ran: list[int] = []
    gate = threading.Event()

    def fail_after_gate() -> None:
        gate.wait()
        raise RuntimeError("boom")

    worker = BackgroundWorker("overlays", max_pending=4)
    worker.submit(fail_after_gate)
    worker.submit(ran.append, 1)  # queued before the failure is known
    gate.set()
    with pytest.raises(BackgroundWriteError, match="overlays writer failed: RuntimeError: boom"):
        worker.close()
    assert ran == []


def _ids(run_dir: Path) -> list[str]:
    return pd.read_parquet(run_dir / "samples.parquet")["id"].tolist()


def test_a_parquet_writer_crash_stops_the_run_and_resume_gives_every_image_once(tmp_path, monkeypatch):
    ids = good_dataset(tmp_path / "data", 40, side=16)
    overrides = base_overrides(
        tmp_path / "data",
        tmp_path / "cache",
        **{"report.rows_per_part": 8, "runtime.batch_size": 4, "runtime.num_workers": 0},
    )
    real_write = parts_module.write_table_atomic
    calls = {"n": 0}

    def write_then_fail(table, path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(5, "Input/output error")
        real_write(table, path)

    monkeypatch.setattr(parts_module, "write_table_atomic", write_then_fail)
    with pytest.raises(
        BackgroundWriteError, match=r"parquet writer failed: OSError.*Input/output error.*resume=true"
    ) as error:
        run_in_process(overrides, tmp_path / "run")
    assert error.value.worker == "parquet"
    written = [
        i
        for p in sorted((tmp_path / "run" / "parts").glob("samples-*.parquet"))
        for i in pq.read_table(p)["id"].to_pylist()
    ]
    assert len(written) == 16  # the two parts before the failure, nothing after it
    monkeypatch.setattr(parts_module, "write_table_atomic", real_write)
    summary = run_in_process(overrides + ["resume=true"], tmp_path / "run")
    assert sorted(_ids(tmp_path / "run")) == sorted(ids)
    assert summary["images_scored_this_invocation"] == 40 - 16


def test_an_overlay_writer_crash_stops_the_run(tmp_path, monkeypatch):
    good_dataset(tmp_path / "data", 24, side=16)
    overrides = base_overrides(
        tmp_path / "data",
        tmp_path / "cache",
        **{"runtime.batch_size": 4, "runtime.num_workers": 0, "report.overlays": "all"},
    )

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(run_module, "save_overlays", broken)
    with pytest.raises(BackgroundWriteError, match="overlays writer failed: RuntimeError: drawing failed") as error:
        run_in_process(overrides, tmp_path / "run")
    assert error.value.worker == "overlays"
    assert not (tmp_path / "run" / "samples.parquet").exists()


@pytest.mark.slow  # a real process killed mid-run: 25 s on 2 cores
def test_sigkill_while_the_writers_have_work_queued_then_resume_gives_every_image_once(tmp_path):
    root, run_dir = tmp_path / "data", tmp_path / "run"
    ids = good_dataset(root, 96, side=16)
    # Overlays of every image keep the overlay thread busy; small parts keep the parquet thread busy.
    overrides = base_overrides(
        root,
        tmp_path / "cache",
        **{
            "report.rows_per_part": 4,
            "runtime.batch_size": 4,
            "runtime.num_workers": 1,
            "report.overlays": "all",
            "runtime.writer_queue": 2,
            "+model.kwargs.delay_s": 0.02,
        },
    )
    kill_when_parts_written(overrides, run_dir, parts=3)
    parts_dir = run_dir / "parts"
    before = [i for p in sorted(parts_dir.glob("samples-*.parquet")) for i in pq.read_table(p)["id"].to_pylist()]
    assert 0 < len(before) < len(ids) and len(set(before)) == len(before)
    summary = run_in_process(overrides + ["resume=true"], run_dir)
    assert sorted(_ids(run_dir)) == sorted(ids)  # none missing, none twice
    assert summary["images_scored_this_invocation"] == len(ids) - len(before)
