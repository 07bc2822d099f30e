"""Issue 23, case 5: enumerated and typed options of the ``data`` group were used without a check, so a typo
changed the numbers or failed every sample: ``boxes_refer_to=display`` was taken as ``stored``,
``fill=300`` failed every sample, ``fill=abc`` exited 5 ("a bug"), ``check_annotated_size=no`` and
``allow_outside_root=no`` read as true. Each is now refused before any work (``pipeline/options.py``):
exit 2, one line naming the option and what it may be, and no run folder left behind.

Every value is checked in-process (the ConfigError, before any part); through the CLI (exit 2, the one line,
the run folder removed) the three values of the issue always, through the entry point in this process
(``run_cli_here``: no interpreter start, ~4 s of imports each), the others in the slow set as processes, three
at a time, like ``tests/run/test_config_errors.py``.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.data.records import BOX_UNITS
from pipeline.demo.synthetic import SPLITS
from pipeline.errors import ConfigError
from pipeline.options import SYNTHETIC_SPLITS, check_options
from tests.helpers_corpus import (
    CONFIG_LINE,
    TINY_MODEL,
    base_overrides,
    compose,
    good_dataset,
    run_cli,
    run_cli_here,
    run_in_process,
)

# override -> (option named, words the message must hold: the allowed values or range)
BAD_VALUES = {
    "data.preprocess.boxes_refer_to=display": ("data.preprocess.boxes_refer_to", "stored, displayed"),
    "data.preprocess.fill=300": ("data.preprocess.fill", "0..255"),
    "data.preprocess.fill=abc": ("data.preprocess.fill", "0..255"),
    "data.preprocess.fill=-1": ("data.preprocess.fill", "0..255"),
    "data.preprocess.check_annotated_size=no": ("data.preprocess.check_annotated_size", "true or false"),
    "data.allow_outside_root=no": ("data.allow_outside_root", "true or false"),
    "data.decode=nvjpeg": ("data.decode", "auto, cpu, gpu"),
    "data.preprocess.mode=crop": ("data.preprocess.mode", "resize_crop, resize, letterbox"),
    "data.preprocess.size=4": ("data.preprocess.size", ">= 8"),
    "data.preprocess.resize_size=big": ("data.preprocess.resize_size", "auto, null or a whole number"),
    "data.preprocess.interpolation=cubic": ("data.preprocess.interpolation", "bilinear, bicubic"),
    "data.box_units=norm": ("data.box_units", "pixels, normalized"),
    "data.synthetic.split=val": ("data.synthetic.split", "audit"),
    "data.synthetic.seed=-1": ("data.synthetic.seed", ">= 0"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("data_rules")
    good_dataset(tmp / "data", 2)
    (tmp / "data" / "m.csv").write_text("path,label\nimages/img_00000.jpg,cat\n")
    return tmp


def _overrides(world, override: str) -> list[str]:
    key = override.split("=", 1)[0]
    if key.startswith("data.synthetic."):  # the built-in dataset: never generated, the rule refuses first
        return [
            "data=synthetic",
            "model=custom",
            f"model._target_={TINY_MODEL}",
            "+model.kwargs.num_classes=3",
            "runtime.device=cpu",
            f"cache_dir={world / 'cache'}",
            override,
        ]
    manifest = world / "data" / "m.csv" if key == "data.box_units" else None
    return base_overrides(world / "data", world / "cache", manifest=manifest) + [override]


CLI_ALWAYS = [
    "data.preprocess.boxes_refer_to=display",
    "data.preprocess.fill=abc",
    "data.preprocess.check_annotated_size=no",
]


def _cli_results(world, overrides: list[str]) -> dict[str, subprocess.CompletedProcess]:
    def start(override):
        return override, run_cli(_overrides(world, override), _run_dir(world, override), timeout=240)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(start, overrides))


def _run_dir(world, override: str):
    return world / "runs" / f"run_{list(BAD_VALUES).index(override)}"


@pytest.fixture(scope="module")
def cli_results(world) -> dict[str, subprocess.CompletedProcess]:
    return {override: run_cli_here(_overrides(world, override), _run_dir(world, override)) for override in CLI_ALWAYS}


@pytest.fixture(scope="module")
def slow_cli_results(world) -> dict[str, subprocess.CompletedProcess]:
    return _cli_results(world, [o for o in BAD_VALUES if o not in CLI_ALWAYS])


def _assert_refused(world, result: subprocess.CompletedProcess, override: str) -> None:
    """Exit 2, one ``cam-audit: configuration error: <option>: ...`` line with the allowed values, no run folder."""
    option, words = BAD_VALUES[override]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    ours = [line for line in result.stderr.splitlines() if line.startswith("cam-audit:")]
    assert len(ours) == 1 and "Traceback" not in result.stderr, result.stderr
    match = CONFIG_LINE.match(ours[0])
    assert match and match["option"] == option and words in ours[0], ours[0]
    assert not _run_dir(world, override).exists()  # the folder the start made is gone again


@pytest.mark.parametrize("override", list(BAD_VALUES))
def test_case5_bad_data_option_is_a_config_error_before_any_part(world, override, tmp_path):
    option, words = BAD_VALUES[override]
    with pytest.raises(ConfigError) as error:
        run_in_process(_overrides(world, override), tmp_path / "run")
    assert error.value.option == option and words in str(error.value), str(error.value)
    assert not (tmp_path / "run" / "parts").exists()


@pytest.mark.parametrize("override", CLI_ALWAYS)
def test_case5_cli_exits_2_naming_the_option_and_leaves_no_run_folder(world, cli_results, override):
    _assert_refused(world, cli_results[override], override)


@pytest.mark.slow
@pytest.mark.parametrize("override", [o for o in BAD_VALUES if o not in CLI_ALWAYS])
def test_case5_cli_every_bad_data_option(world, slow_cli_results, override):
    _assert_refused(world, slow_cli_results[override], override)


@pytest.mark.parametrize("data", ["synthetic", "imagenet_val", "coco", "manifest"])
def test_the_shipped_data_configs_pass_the_rules(data):
    check_options(compose([f"data={data}"]))


def test_the_rules_enumerations_are_the_readers():
    assert set(SYNTHETIC_SPLITS) == set(SPLITS) and BOX_UNITS == ("pixels", "normalized")
