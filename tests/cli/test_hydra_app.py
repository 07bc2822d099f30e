"""The Hydra glue (pipeline/hydra_app.py): the command line read with Hydra's own parsers, and the stop tables
from an error's type to its line and exit status."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from hydra.errors import OverrideParseException
from omegaconf.errors import MissingMandatoryValue

from pipeline.errors import ConfigError, ExitCode, Terminated, TooManyFailures
from pipeline.hydra_app import (
    COMPOSE_STOPS,
    MERGE_STOPS,
    RUN_STOPS,
    StopContext,
    end_with,
    read_command_line,
    stop_for,
)
from tests.helpers_corpus import run_cli

RUN = StopContext("cam-audit", Path("/runs/night"), "hydra.run.dir=/runs/night resume=true")


def missing_value(key: str) -> MissingMandatoryValue:
    error = MissingMandatoryValue("Missing mandatory value")
    error.full_key = key
    return error


@pytest.mark.parametrize(
    "error, line, code",
    [
        (
            missing_value("data.images"),
            "cam-audit: configuration error: data.images: is required (the config has ??? here); "
            "pass data.images=<value>",
            ExitCode.CONFIG,
        ),
        (
            ConfigError("cam.top_k", "5 is more\nthan 3 classes"),
            "cam-audit: configuration error: cam.top_k: 5 is more than 3 classes",
            ExitCode.CONFIG,
        ),
        (
            TooManyFailures("9 of 10 samples failed"),
            "cam-audit: stopped: 9 of 10 samples failed",
            ExitCode.TOO_MANY_FAILURES,
        ),
        (
            OSError(errno.ENOSPC, "No space left on device"),
            "cam-audit: stopped: the disk of /runs/night is full ([Errno 28] No space left on device); the parts "
            "written so far are complete: free space, then run again with hydra.run.dir=/runs/night resume=true",
            ExitCode.DISK_FULL,
        ),
        (
            Terminated(),
            "cam-audit: terminated (SIGTERM); continue with hydra.run.dir=/runs/night resume=true",
            ExitCode.TERMINATED,
        ),
        (
            KeyboardInterrupt(),
            "cam-audit: interrupted; continue with hydra.run.dir=/runs/night resume=true",
            ExitCode.INTERRUPTED,
        ),
    ],
)
def test_each_row_of_the_run_table_gives_its_line_and_status(error, line, code):
    assert stop_for(error, RUN_STOPS, RUN) == (line, code)


def test_a_bug_or_an_exit_is_no_row_of_the_run_table():
    assert stop_for(ZeroDivisionError("boom"), RUN_STOPS, RUN) is None
    assert stop_for(OSError(errno.EACCES, "Permission denied"), RUN_STOPS, RUN) is None  # not a full disk: a bug
    assert stop_for(SystemExit(0), RUN_STOPS, RUN) is None


def test_after_sigterm_an_error_of_the_stop_itself_is_the_termination():
    after = StopContext("cam-audit", RUN.run_dir, RUN.again, sigterm_arrived=True)
    assert stop_for(RuntimeError("DataLoader worker exited unexpectedly"), RUN_STOPS, after)[1] == ExitCode.TERMINATED
    assert stop_for(TooManyFailures("9 of 10"), RUN_STOPS, after)[1] == ExitCode.TOO_MANY_FAILURES  # an earlier row


def test_the_composition_and_merge_tables():
    parse_error = OverrideParseException("data.limit=[1", "no viable alternative at input '[1'\nSee https://hydra.cc")
    assert stop_for(parse_error, COMPOSE_STOPS, StopContext()) == (
        "cam-audit: configuration error: no viable alternative at input '[1' See https://hydra.cc",
        ExitCode.CONFIG,
    )
    merge = StopContext("cam-audit merge", Path("/runs/sharded"), "cam-audit merge /runs/sharded")
    assert stop_for(ConfigError("run", "shard 2 is running"), MERGE_STOPS, merge) == (
        "cam-audit merge: cannot merge: run: shard 2 is running",
        ExitCode.CONFIG,
    )
    assert stop_for(Terminated(), MERGE_STOPS, merge) == (
        "cam-audit merge: terminated (SIGTERM); merge again: cam-audit merge /runs/sharded",
        ExitCode.TERMINATED,
    )


def test_end_with_exits_with_the_row_status_and_a_bug_with_5(caplog):
    with pytest.raises(SystemExit) as stopped:
        end_with(TooManyFailures("9 of 10 samples failed"), RUN_STOPS, RUN)
    assert stopped.value.code == ExitCode.TOO_MANY_FAILURES
    with pytest.raises(SystemExit) as stopped:
        end_with(ZeroDivisionError("boom"), RUN_STOPS, RUN)
    assert stopped.value.code == ExitCode.INTERNAL and "ZeroDivisionError: boom" in caplog.text
    with pytest.raises(SystemExit) as stopped:
        end_with(SystemExit(7), RUN_STOPS, RUN)
    assert stopped.value.code == 7


def test_the_command_line_is_read_with_hydras_parsers():
    command = read_command_line(["-m", "+runtime.log_format=json", "data.limit=[1", "hydra.run.dir=/runs/cam=a,b"])
    assert command.argv == ["-m", "+runtime.log_format=json", "data.limit=[1", "hydra.run.dir='/runs/cam=a,b'"]
    assert command.log_format == "json" and command.run_dir == "/runs/cam=a,b" and not command.help
    assert [override.key_or_group for override in command.overrides] == ["runtime.log_format", "hydra.run.dir"]


@pytest.mark.parametrize(
    "argv, log_format, run_dir",
    [
        ([], "text", "outputs"),
        (["runtime.log_format=xml", "hydra.run.dir=outputs/${now:%H}"], "text", "outputs/${now:%H}"),
        (["runtime.log_format=json", "runtime.log_format=text"], "text", "outputs"),  # the last one counts, as in Hydra
        (["~runtime.log_format", "hydra.run.dir='/a b'"], "text", "/a b"),
        (["--cfg", "job", "runtime.log_format=json"], "json", "outputs"),
    ],
)
def test_the_log_format_and_run_folder_as_hydra_reads_them(argv, log_format, run_dir):
    command = read_command_line(argv)
    assert (command.log_format, command.run_dir) == (log_format, run_dir)


def test_help_is_hydras_flag():
    assert read_command_line(["--help"]).help and read_command_line(["-h", "cam=layercam"]).help


def test_a_refused_log_format_leaves_no_folder(tmp_path):
    result = run_cli(["runtime.log_format=xml"], tmp_path / "new" / "run")
    assert result.returncode == ExitCode.CONFIG
    assert (
        result.stderr.strip()
        == "cam-audit: configuration error: runtime.log_format: unknown format 'xml'; use text or json"
    )
    assert not (tmp_path / "new").exists()
