"""The command line as a nightly job sees it: runs never touch each other, one exit-code table, logs.

One finished run (through ``python -m pipeline``, JSON log format) is the fixture; every other start is
pointed at it or at a new folder and must leave no trace, or exit with the documented status (those starts
call the entry point in this process, ``run_cli_here``: the same lines and status without an interpreter start).
"""

from __future__ import annotations

import hashlib
import json
import sys

import pytest

from pipeline import cli
from pipeline.errors import ExitCode
from tests.helpers_corpus import CONFIG_LINE, MAIN, base_overrides, good_dataset, run_cli, run_cli_here


def snapshot(folder) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) -> SHA-256 of its bytes; folders as ``<dir>``."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>")
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    good_dataset(tmp / "data", 8)
    overrides = base_overrides(
        tmp / "data", tmp / "cache", **{"runtime.log_format": "json", "runtime.log_every_batches": 1}
    )
    result = run_cli(overrides, tmp / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, overrides, result


def test_accepted_run_writes_hydra_record_and_a_json_job_log(finished):
    tmp, _, result = finished
    run = tmp / "run"
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert "runtime.log_format=json" in (run / ".hydra" / "overrides.yaml").read_text()
    for lines in ((run / "cam-audit.log").read_text().splitlines(), result.stderr.splitlines()):
        events = [json.loads(line) for line in lines]  # every line is one JSON object
        names = [e["event"] for e in events]
        assert (
            names[:2] == ["start", "configured"] and names[-1] == "summary" and names.count("progress") == 2
        )  # 8 images, batch 4
        assert all(e["time"].endswith("Z") for e in events)
        summary = events[-1]
        assert summary["images"] == 8 and 0 <= summary["accuracy"] <= 1
        assert sum(summary["triage"].values()) == 8 and isinstance(summary["flagged_classes"], list)
    assert "\r" not in result.stderr  # no progress bar when stderr is not a terminal
    assert result.stdout == ""  # json mode: the summary is the last event, not printed text


def test_refused_start_leaves_the_finished_run_byte_for_byte(finished):
    tmp, overrides, _ = finished
    before = snapshot(tmp / "run")
    text = [o for o in overrides if not o.startswith("runtime.log_format")]
    result = run_cli_here(text + ["cam.method=layercam"], tmp / "run")  # a valid start into a finished run
    assert result.returncode == ExitCode.CONFIG, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and "already holds a run" in result.stderr, result.stderr
    # a bad option, json: the refusal is the last event
    result = run_cli_here(overrides + ["cam.method=nope"], tmp / "run")
    assert (
        result.returncode == ExitCode.CONFIG
        and json.loads(result.stderr.splitlines()[-1])["exit_code"] == ExitCode.CONFIG
    )
    assert snapshot(tmp / "run") == before


def test_failed_start_creates_no_folder(finished):
    tmp, overrides, _ = finished
    target = tmp / "new" / "night"
    result = run_cli_here(
        [o for o in overrides if not o.startswith("runtime.log_format")] + ["cam.method=nope"], target
    )
    assert result.returncode == ExitCode.CONFIG
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "cam.method" in result.stderr
    assert not (tmp / "new").exists()
    (tmp / "empty").mkdir()  # a folder that existed before the start stays, even empty
    assert run_cli_here(overrides + ["cam.method=nope"], tmp / "empty").returncode == ExitCode.CONFIG
    assert (tmp / "empty").is_dir()


@pytest.mark.parametrize(
    "override, option",
    [
        ("scores.tolerence=3", "scores.tolerence"),
        ("scores.tolerance=abc", "scores.tolerance"),
        ("cam.top_k=x", "cam.top_k"),
    ],
)
def test_schema_errors_name_the_option_first_and_exit_2(tmp_path, override, option):
    """An unknown key or a wrong type in a fixed-key group (pipeline/settings.py) fails while Hydra composes:
    ``cam-audit: configuration error: <option>: ...``, exit 2, no folder."""
    result = run_cli_here([override], tmp_path / "run")
    assert result.returncode == ExitCode.CONFIG, result.stderr
    lines = result.stderr.strip().splitlines()
    match = CONFIG_LINE.match(lines[0]) if len(lines) == 1 else None
    assert match and match["option"] == option, lines
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.nmae=x", "model.nmae"),
        ("cam=gradcam++", "cam: no option 'gradcam++' (available: cam, gradcam, gradcampp,"),
        ("data.metadata_missing=maybe", "data.metadata_missing: 'maybe' is not warn or fail"),
    ],
)
def test_hydra_own_errors_are_one_line_and_exit_2(tmp_path, override, words):
    result = run_cli_here([override], tmp_path / "run")
    assert result.returncode == ExitCode.CONFIG, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cam-audit: configuration error:") and words in lines[0], lines
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_an_unexpected_error_exits_4_not_1(monkeypatch, tmp_path, capsys):
    """1 is compare's gate: a crash must not look like a regression."""
    import pipeline.run

    def crash(cfg, run_dir, on_accepted=None):
        on_accepted()
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(pipeline.run, "run_audit", crash)
    monkeypatch.setattr(sys, "argv", ["cam-audit", f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == ExitCode.INTERNAL
    assert "ZeroDivisionError: boom" in capsys.readouterr().err
    assert (
        "ZeroDivisionError: boom" in (tmp_path / "run" / "cam-audit.log").read_text()
    )  # accepted: the log has the traceback


def test_exit_code_table_is_in_the_docs():
    doc = (MAIN / "docs" / "usage.md").read_text()
    for name, code in vars(ExitCode).items():
        if not name.startswith("_"):
            assert f"| {code} |" in doc, name
