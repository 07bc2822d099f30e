"""One run per folder, one configuration per report (issue 11, cases 1, 2, 3 and 15).

1. A resume with another configuration was accepted and appended its rows to the old ones; now the
   folder's fingerprint (``parts/fingerprint.json``) is compared and a differing resume refused, naming
   the options. 15. A resume that added columns crashed at the merge and left ``.samples.parquet.tmp-PID``.
2. Two runs into one folder both ran; now the second is refused at start, naming the holder's pid and
   host, and leaves the folder as it was; a lock left by a killed run is taken over.
3. ``runtime.rank=1`` without torchrun exited 0 without a report; now it is a configuration error.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.run_folder import LOCK_NAME, acquire_lock
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time (ns)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def pristine_run(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """A complete 4-image run made once under ``work/``, copied to ``pristine/``: ``(base, ids, overrides)``."""
    base = tmp_path_factory.mktemp("run_folder")
    ids = good_dataset(base / "work" / "data", 4)
    overrides = base_overrides(
        base / "work" / "data", base / "work" / "cache", **{"report.rows_per_part": 2, "runtime.batch_size": 2}
    )
    run_in_process(overrides, base / "work" / "run")
    shutil.copytree(base / "work", base / "pristine")
    return base, ids, overrides


@pytest.fixture
def finished_run(pristine_run) -> tuple[list[str], list[str], Path]:
    """The complete 4-image run as it was made, at the same paths (a resume compares them): ``(ids, overrides,
    run_dir)``; each test may change it, the next one gets it back."""
    base, ids, overrides = pristine_run
    shutil.rmtree(base / "work")
    shutil.copytree(base / "pristine", base / "work")
    return ids, overrides, base / "work" / "run"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        (["cam.method=gradcampp", "data.preprocess.size=24"], ["cam.method", "data.preprocess.size"]),
        (["+model.kwargs.seed=1"], ["model.kwargs.seed", "model.weights_sha256"]),  # other weights
        (["scores.tolerance=3"], ["scores.tolerance"]),
        (["cam.negative=true"], ["cam.negative"]),  # case 15: was a KeyError at the merge and a stray temporary file
    ],
)
def test_resume_with_another_configuration_is_refused_naming_the_options(finished_run, changes, named):
    ids, overrides, run_dir = finished_run
    before = _snapshot(run_dir)
    with pytest.raises(ConfigError) as error:
        run_in_process(overrides + ["resume=true"] + changes, run_dir)
    assert error.value.option == "resume"
    message = str(error.value)
    differing = message.split(" in ", 2)[2].split(":", 1)[0]  # "...differs from the one in DIR in a, b: ..."
    assert differing.split(", ") == named, message
    assert _snapshot(run_dir) == before  # nothing appended, nothing left behind


# A larger data.limit on resume, and a folder without fingerprint.json, were accepted here; both are refused
# since issue 23 (tests/run/test_resume_checks.py).


def _hold(run_dir: Path, ready, release) -> None:
    """Child process: take the folder, say so, wait to be told (or killed)."""
    acquire_lock(run_dir)
    ready.set()
    release.wait(120)


def test_a_second_run_into_a_held_folder_is_refused_and_changes_nothing(finished_run):
    ids, overrides, run_dir = finished_run
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(run_dir, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        before = _snapshot(run_dir)
        for extra in ([], ["resume=true"]):  # refused before the "already holds a run" check, with or without resume
            with pytest.raises(ConfigError) as error:
                run_in_process(overrides + extra, run_dir)
            assert error.value.option == "hydra.run.dir"
            assert f"pid {holder.pid} on host {socket.gethostname()}" in str(
                error.value
            ) and "in use by another run" in str(error.value)
        assert _snapshot(run_dir) == before
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # as a crashed run: its lock file stays, its flock goes
        holder.join(30)
    assert (run_dir / LOCK_NAME).exists()  # stale
    summary = run_in_process(overrides + ["resume=true"], run_dir)  # the stale lock is taken over
    assert summary["images"] == len(ids) and not (run_dir / LOCK_NAME).exists()


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    good_dataset(tmp_path / "data", 2)
    with pytest.raises(ConfigError):
        run_in_process(
            base_overrides(tmp_path / "data", tmp_path / "cache", **{"cam.method": "nope"}), tmp_path / "run"
        )
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    acquire_lock(tmp_path / "run").release()


def test_runtime_rank_without_torchrun_is_a_configuration_error(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    good_dataset(tmp_path / "data", 2)
    with pytest.raises(ConfigError) as error:  # was: exit 0, a "rank 1" line and no report
        run_in_process(base_overrides(tmp_path / "data", tmp_path / "cache", **{"runtime.rank": 1}), tmp_path / "run")
    assert error.value.option == "runtime.rank" and "torchrun" in str(error.value)
    assert not (tmp_path / "run").exists()
