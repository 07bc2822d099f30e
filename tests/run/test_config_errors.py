"""Bad configuration: one line naming the option, exit code 2, before any work (in-process for every
case, through the command line's entry point for the cases whose CLI path differs; the rest in the slow set).

Subprocess start-up (~4 s: torch + torchvision imports) dominates: the fast set calls the entry point in
this process (``run_cli_here``, the same lines and exit status), with the stop for too many failed samples
(exit 3); the slow set starts its CLI cases as processes, concurrently.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
from pathlib import Path

import pytest
import torch

from pipeline.errors import ConfigError, ExitCode
from tests.helpers_corpus import (
    CONFIG_LINE,
    MAIN,
    base_overrides,
    cli_command,
    failing_dataset,
    good_dataset,
    run_cli_here,
    run_in_process,
)
from tests.helpers_tiny_model import TinyNet


class Payload:
    """Unpickling this runs ``os.makedirs(marker)``: proof of execution if a loader ever unpickles it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.fixture(scope="module")
def config_world(tmp_path_factory) -> dict:
    """A good dataset, a file to put a run folder under, and a checkpoint with a code-running payload."""
    tmp = tmp_path_factory.mktemp("config")
    root = tmp / "data"
    good_dataset(root, 4)
    (tmp / "a_file").write_text("not a folder")
    (tmp / "empty" / "images").mkdir(parents=True)
    (tmp / "empty" / "annotations").mkdir()
    (tmp / "dup_classes.txt").write_text("n001 cat\nn001 cat\n")
    (tmp / "other_classes.txt").write_text("cat\ndog\nfox\n")  # names only: the XML labels are WordNet-style ids
    evil = tmp / "evil.pt"
    torch.save({"state_dict": TinyNet().state_dict(), "payload": Payload(str(tmp / "pwned"))}, evil)
    return {"tmp": tmp, "root": root, "evil": evil, "marker": tmp / "pwned"}


def config_case(name: str, world: dict) -> tuple[list[str], Path, str]:
    """``(overrides, run folder, option the error must name)`` for one bad configuration."""
    tmp, root = world["tmp"], world["root"]
    run_dir, cache = tmp / f"run_{name}", tmp / "cache"
    cases = {
        "missing_data_folder": ({"data.images": tmp / "nope"}, "data.images"),
        "missing_annotation_folder": ({"data.annotations": tmp / "nope"}, "data.annotations"),
        "empty_dataset": (
            {"data.images": tmp / "empty" / "images", "data.annotations": tmp / "empty" / "annotations"},
            "data.images",
        ),
        "class_list_repeats_a_class": ({"data.classes": tmp / "dup_classes.txt"}, "data.classes"),
        "wrong_target_layer": ({"model.target_layer": "features.9"}, "model.target_layer"),
        "outputs_do_not_match_classes": ({"num_classes": 5}, "data.classes"),  # TinyNet(5) vs 3 classes
        "unknown_cam_method": ({"cam.method": "gradcam_plus_minus"}, "cam.method"),
        "cuda_without_gpu": ({"runtime.device": "cuda"}, "runtime.device"),
        "run_dir_under_a_file": ({}, "hydra.run.dir"),
        "mandatory_value_missing": ({"data.images": None}, "data.images"),
        "classes_from_model_without_metadata": ({"data.classes": None}, "data.classes"),  # TinyNet names no classes
        "class_list_matches_no_label": ({"data.classes": tmp / "other_classes.txt"}, "data.classes"),
        "checkpoint_with_pickled_object": ({"model.checkpoint": world["evil"]}, "model.checkpoint"),
        "unknown_interpolation": ({"data.preprocess.interpolation": "cubic"}, "data.preprocess.interpolation"),
        "unknown_preprocess_mode": ({"data.preprocess.mode": "crop"}, "data.preprocess.mode"),
        "unknown_score_space": ({"scores.space": "stored"}, "scores.space"),
    }
    extra, option = cases[name]
    if name == "run_dir_under_a_file":
        run_dir = tmp / "a_file" / "run"
    return base_overrides(root, cache, **extra), run_dir, option


CONFIG_CASES = [
    "missing_data_folder",
    "missing_annotation_folder",
    "empty_dataset",
    "class_list_repeats_a_class",
    "wrong_target_layer",
    "outputs_do_not_match_classes",
    "unknown_cam_method",
    "cuda_without_gpu",
    "run_dir_under_a_file",
    "mandatory_value_missing",
    "checkpoint_with_pickled_object",
    "unknown_interpolation",
    "unknown_preprocess_mode",
    "unknown_score_space",
    "classes_from_model_without_metadata",
    "class_list_matches_no_label",
]
# Cases whose CLI path differs from "ConfigError raised in prepare()" (checked in-process for every case):
# always run through the CLI. The rest go through the CLI in the slow set.
CLI_ALWAYS = ["run_dir_under_a_file", "mandatory_value_missing"]


def _skip_if_gpu(name: str) -> None:
    if name == "cuda_without_gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is present: cuda is a valid device here")


def _assert_config_failure(result: subprocess.CompletedProcess, option: str, run_dir: Path) -> None:
    """Exit 2, one ``cam-audit: configuration error: <option>: ...`` line, no traceback, no work done."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    ours = [line for line in result.stderr.splitlines() if line.startswith("cam-audit:")]
    assert len(ours) == 1, result.stderr
    match = CONFIG_LINE.match(ours[0])
    assert match and match["option"] == option, ours[0]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert not (run_dir / "parts").exists() and not (run_dir / "samples.parquet").exists()


def _run_concurrently(
    commands: dict[str, tuple[list[str], Path]], timeout: float = 180
) -> dict[str, subprocess.CompletedProcess]:
    """Start every ``python -m pipeline`` at once (start-up dominates), then collect them."""
    running = {
        name: (
            subprocess.Popen(
                cli_command(overrides, run_dir), cwd=MAIN, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            ),
            overrides,
        )
        for name, (overrides, run_dir) in commands.items()
    }
    results = {}
    for name, (process, _overrides) in running.items():
        out, err = process.communicate(timeout=timeout)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return results


@pytest.fixture(scope="module")
def cli_results(config_world, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """The CLI runs of the fast set, in this process: CLI_ALWAYS and a run stopped for too many failures
    (exit 3)."""
    commands = {name: config_case(name, config_world)[:2] for name in CLI_ALWAYS}
    failing = tmp_path_factory.mktemp("failing")
    failing_dataset(failing / "data")
    commands["too_many_failures"] = (
        base_overrides(
            failing / "data",
            failing / "cache",
            **{"runtime.min_samples_for_error_check": 4, "runtime.max_error_fraction": 0.25},
        ),
        failing / "run",
    )
    return {name: run_cli_here(overrides, run_dir) for name, (overrides, run_dir) in commands.items()}


@pytest.fixture(scope="module")
def slow_cli_results(config_world) -> dict[str, subprocess.CompletedProcess]:
    """Every other config case through the CLI, plus runtime.debug=true and an unknown config group."""
    names = [
        n for n in CONFIG_CASES if n not in CLI_ALWAYS and not (n == "cuda_without_gpu" and torch.cuda.is_available())
    ]
    commands = {name: config_case(name, config_world)[:2] for name in names}
    overrides, run_dir, _ = config_case("missing_data_folder", config_world)
    commands["debug"] = (overrides + ["runtime.debug=true"], run_dir.with_name("run_debug"))
    commands["unknown_group"] = (["cam=nope"], config_world["tmp"] / "run_unknown_group")
    return _run_concurrently(commands)


@pytest.mark.parametrize("name", CONFIG_CASES)
def test_bad_configuration_is_a_config_error_naming_the_option(config_world, name):
    """In-process: prepare() raises ConfigError(option) with a one-line message before writing parts."""
    _skip_if_gpu(name)
    if name == "mandatory_value_missing":
        from omegaconf.errors import MissingMandatoryValue

        overrides, run_dir, option = config_case(name, config_world)
        with pytest.raises(MissingMandatoryValue):  # the CLI turns it into the one-line message
            run_in_process(overrides, run_dir)
        return
    overrides, run_dir, option = config_case(name, config_world)
    with pytest.raises(ConfigError) as error:
        run_in_process(overrides, run_dir)
    assert error.value.option == option and "\n" not in str(error.value), str(error.value)
    assert not (run_dir / "parts").exists()
    if name == "class_list_matches_no_label":  # a run of zero rows would look like success
        assert "4 of 4 samples cannot be audited" in str(error.value) and "'cat'" in str(error.value)
    if name == "checkpoint_with_pickled_object":
        assert "refused" in str(error.value) and "os.makedirs" in str(error.value)
        assert not config_world["marker"].exists()  # never unpickled


@pytest.mark.parametrize("name", CLI_ALWAYS)
def test_cli_prints_one_line_and_exits_2(cli_results, config_world, name):
    _, run_dir, option = config_case(name, config_world)
    _assert_config_failure(cli_results[name], option, run_dir)


@pytest.mark.slow
def test_debug_shows_the_traceback(slow_cli_results):
    result = slow_cli_results["debug"]
    assert result.returncode != 0 and "Traceback" in result.stderr and "ConfigError" in result.stderr


def test_cli_too_many_failures_exits_3(cli_results):
    result = cli_results["too_many_failures"]
    assert result.returncode == 3, result.stderr[-2000:]
    assert re.search(
        r"^cam-audit: stopped: 4 of 4 samples failed, more than runtime.max_error_fraction=0.25", result.stderr, re.M
    )
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in CONFIG_CASES if n not in CLI_ALWAYS])
def test_cli_every_config_case(slow_cli_results, config_world, name):
    _skip_if_gpu(name)
    _, run_dir, option = config_case(name, config_world)
    _assert_config_failure(slow_cli_results[name], option, run_dir)
    if name == "checkpoint_with_pickled_object":
        assert not config_world["marker"].exists()


@pytest.mark.slow
def test_unknown_config_group_is_reported_by_hydra(slow_cli_results, config_world):
    """``cam=nope`` is Hydra's own error (not ours): exit 2, the group and option named, no work."""
    result = slow_cli_results["unknown_group"]
    assert result.returncode == ExitCode.CONFIG and "cam: no option 'nope'" in result.stderr, result.stderr
    assert not (config_world["tmp"] / "run_unknown_group").exists()


def test_checkpoint_payload_is_real(config_world, tmp_path):
    """Guard for the refusal test: the file really runs code when unpickled without weights_only."""
    marker = tmp_path / "ran"
    with open(config_world["evil"], "rb") as handle:
        blob = handle.read()
    assert b"makedirs" in blob
    torch.save({"payload": Payload(str(marker))}, tmp_path / "check.pt")
    torch.load(tmp_path / "check.pt", weights_only=False)  # the unsafe path, on our own harmless payload
    assert marker.is_dir()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "check.pt", weights_only=True)
