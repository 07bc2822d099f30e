"""The shards of a run launched by Hydra (issue 22.2): a multirun over ``runtime.shard`` into one shared folder,
with Hydra's own launcher (one process after the other), with hydra-submitit-launcher's local executor (one
process per shard, as SLURM array tasks), and the SLURM launcher's configuration turned into an ``sbatch``
array script without submitting it (no SLURM here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import ExitCode
from tests.helpers_corpus import CONF, MAIN, base_overrides, good_dataset, read_summary


def multirun(overrides: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m pipeline -m ...`` from the project root, output captured."""
    command = [sys.executable, "-m", "pipeline", "-m", *overrides]
    return subprocess.run(command, cwd=MAIN, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def tiny(tmp_path):
    """12 images and the options of a tiny run on them."""
    ids = good_dataset(tmp_path / "data", 12)
    return base_overrides(tmp_path / "data", tmp_path / "cache", **{"report.rows_per_part": 2}), ids


def assert_merged(run_dir: Path, ids: list[str]) -> None:
    """One report in ``run_dir``, every image once, from two shards' parts."""
    samples = pd.read_parquet(run_dir / "samples.parquet")["id"].tolist()
    assert samples == sorted(ids)
    assert read_summary(run_dir)["images"] == len(ids)
    assert [s["shard"] for s in read_summary(run_dir)["provenance"]["shards"]] == [0, 1]
    for k in (0, 1):
        assert list((run_dir / "parts" / f"shard-{k:03d}").glob("samples-*.parquet"))


@pytest.mark.timeout(300)
def test_a_multirun_over_the_shards_shares_one_folder_and_the_last_shard_merges(tiny, tmp_path):
    overrides, ids = tiny
    run_dir = tmp_path / "run"
    shards = ["runtime.shards=2", "runtime.shard=range(2)", f"hydra.sweep.dir={run_dir}"]
    refused = multirun([*overrides, *shards])  # hydra.sweep.subdir left at the job's number: a folder each
    assert refused.returncode == ExitCode.CONFIG, refused.stderr[-2000:]
    assert "hydra.sweep.subdir: the shards of a run must share one folder" in refused.stderr
    assert not (run_dir / "parts").exists() and not (run_dir / "0" / "parts").exists()

    result = multirun([*overrides, *shards, "hydra.sweep.subdir=."])  # Hydra's launcher: one shard after the other
    assert result.returncode == 0, result.stderr[-2000:]
    assert "shard 0 of 2" in result.stdout and "Audit of 12 images" in result.stdout
    assert_merged(run_dir, ids)


@pytest.mark.parametrize(
    "tasks",
    # real processes, one per shard (and task): 18 s alone on 2 cores; 2 tasks per shard: 45 s (four processes);
    # Hydra's own launcher (above) keeps a multirun over the shards in the fast suite
    [pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)],
)
@pytest.mark.timeout(600)
def test_submitit_local_runs_the_shards_as_processes_into_one_folder(tiny, tmp_path, tasks):
    """One process per shard; with ``tasks_per_node=2``, as SLURM would, each shard is two tasks, which become its
    two torch.distributed ranks through submitit (``runtime.ranks_from=submitit``), no torchrun."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    overrides, ids = tiny
    run_dir = tmp_path / "run"
    launcher = ["hydra/launcher=shards_local", f"hydra.sweep.dir={run_dir}", "hydra.sweep.subdir=."]
    launcher += [f"hydra.launcher.tasks_per_node={tasks}", "runtime.ranks_from=submitit"]
    result = multirun([*overrides, "runtime.shards=2", "runtime.shard=range(2)", *launcher], timeout=580)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    assert_merged(run_dir, ids)
    logs = sorted((run_dir / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2 * tasks  # two jobs of `tasks` tasks, each its own process
    assert sum(f"rank 1/{tasks}" in path.read_text() for path in logs) == (2 if tasks > 1 else 0)
    for k in (0, 1):
        assert (run_dir / f"cam-audit-shard-{k:03d}.log").is_file()
        mark = json.loads((run_dir / "parts" / f"shard-{k:03d}" / "complete.json").read_text())
        assert mark["ranks"] == tasks
        written = {path.name.split("-")[1] for path in (run_dir / "parts" / f"shard-{k:03d}").glob("samples-*")}
        assert written == {f"r{rank:03d}" for rank in range(tasks)}  # each rank its own parts in its shard's folder


class Submitted(Exception):
    """What the launcher would have handed to sbatch (raised instead of submitting it)."""


def test_the_slurm_launcher_config_becomes_an_sbatch_array_of_the_shards(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    import cloudpickle  # submitit's, for its job pickles
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.utils import instantiate
    from submitit.slurm.slurm import SlurmExecutor

    from pipeline.settings import register_schemas

    register_schemas()  # conf/*/ name /schema/<group>
    fake_bin = tmp_path / "bin"  # submitit refuses to start without srun on the PATH: a stand-in never run
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")

    def submit(executor, command):
        raise Submitted(executor._make_submission_file_text(command, "uid"))

    monkeypatch.setattr(SlurmExecutor, "_submit_command", submit)
    run_dir = tmp_path / "run"
    options = [
        "hydra/launcher=shards_slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=90",
        f"hydra.sweep.dir={run_dir}",
        "hydra.sweep.subdir=.",
        "runtime.shards=8",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=options, return_hydra_config=True)
        launcher = instantiate(cfg.hydra.launcher)
        assert type(launcher).__name__ == "SlurmLauncher"
        launcher.config = cfg  # what Hydra's setup() gives it; launch() reads only this and its parameters
        with pytest.raises(Submitted) as submitted:
            launcher.launch([["runtime.shards=8", f"runtime.shard={k}"] for k in range(8)], initial_job_idx=0)
    script = submitted.value.args[0]
    for line in (
        "#SBATCH --array=0-7%8",  # one array task per shard, at most array_parallelism (64) at once
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --signal=USR2@120",  # signal_delay_s: submitit requeues the shard before the time limit
        "#SBATCH --time=90",
        f"#SBATCH --output={run_dir}/.submitit/%A_%a/%A_%a_0_log.out",
    ):
        assert line in script.splitlines(), (line, script)
    jobs = [cloudpickle.loads(path.read_bytes()) for path in sorted((run_dir / ".submitit").glob("*.pkl"))]
    assert sorted(tuple(job.args[0]) for job in jobs) == [("runtime.shards=8", f"runtime.shard={k}") for k in range(8)]
    assert all(job.args[1] == "hydra.sweep.dir" for job in jobs)  # every job's folder: the shared sweep folder


def test_a_failed_job_of_the_launcher_ends_the_multirun_with_its_own_status():
    """submitit hands the launching process a job's failure as its exception (a traceback, exit 1 before): the
    command exits with the status of the job's last cam-audit line, in one line."""
    utils = pytest.importorskip("submitit.core.utils")
    from pipeline.hydra_app import failed_launcher_job

    head = "Job 1129 (task: 0) with path /run/.submitit/1129/1129_0_result.pkl\nhas not produced any output"
    for said, status in (
        ("cam-audit: configuration error: runtime.shard: 2 is not a shard of runtime.shards=2", ExitCode.CONFIG),
        ("cam-audit: stopped: 9 of 10 samples failed", ExitCode.TOO_MANY_FAILURES),
        ("cam-audit: stopped: the disk of /run is full", ExitCode.DISK_FULL),
        ("cam-audit: terminated (SIGTERM); continue with ...", ExitCode.TERMINATED),
        ("ZeroDivisionError: division by zero", ExitCode.INTERNAL),  # a crash: its traceback is in the job's log
    ):
        error = utils.UncompletedJobError(f"{head} (state: FINISHED)\nError stream produced:\n----\n{said}\n")
        line, code = failed_launcher_job(error)
        assert code == status and line.endswith(said) and "Job 1129 (task: 0)" in line and "\n" not in line
    assert failed_launcher_job(ValueError("not the launcher's")) is None
