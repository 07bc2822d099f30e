"""Options checked before work (issue 11, "Options not checked before work"): each bad value is one
ConfigError naming the option, raised before any part is written; through the CLI one line and exit 2.

Before the fix (main at 9d6a92d): ``scores.taus=[]`` audited everything and crashed in finalize,
``cam.top_k=5`` with 3 classes crashed at the first batch, ``model.mean`` of 2 values crashed in
prepare with a torch traceback, ``scores.tolerance=-5`` ran, ``data.limit=-1`` dropped the last sample and
``data.limit=0`` audited everything.
"""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.errors import ConfigError
from pipeline.options import RULES, check_memory_per_worker, check_options
from tests.helpers_corpus import base_overrides, compose, good_dataset, run_cli_here, run_in_process

BAD_OPTIONS = {
    "scores.taus=[]": "scores.taus",
    "scores.taus=[0.2,1.5]": "scores.taus",
    "cam.top_k=5": "cam.top_k",  # the class list has 3 classes
    "scores.tolerance=-5": "scores.tolerance",
    "model.mean=[0.5,0.5]": "model.mean",
    "model.std=[0.2,0.2,0]": "model.std",
    "data.limit=-1": "data.limit",
    "data.limit=0": "data.limit",
    "runtime.batch_size=abc": "runtime.batch_size",
    "scores.iou_threshold=0": "scores.iou_threshold",
    "data.preprocess.max_aspect_ratio=0.5": "data.preprocess.max_aspect_ratio",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("options")
    good_dataset(root / "data", 5)
    return root


@pytest.mark.parametrize("override", list(BAD_OPTIONS))
def test_bad_option_is_a_config_error_before_any_part(world, override, tmp_path):
    run_dir = tmp_path / "run"
    overrides = base_overrides(world / "data", world / "cache") + [override]
    with pytest.raises(ConfigError) as error:
        run_in_process(overrides, run_dir)
    assert error.value.option == BAD_OPTIONS[override], str(error.value)
    assert not (run_dir / "parts").exists()


def test_data_limit_takes_the_first_samples(world, tmp_path):
    run_in_process(base_overrides(world / "data", world / "cache") + ["data.limit=2"], tmp_path / "run")
    assert pd.read_parquet(tmp_path / "run" / "samples.parquet")["id"].tolist() == ["img_00000", "img_00001"]


def test_cli_bad_option_is_one_line_and_exit_2(world, tmp_path):
    result = run_cli_here(base_overrides(world / "data", world / "cache") + ["scores.taus=[]"], tmp_path / "run")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "cam-audit: configuration error: scores.taus: [] is not a list of at least one threshold"
    )


def test_every_rule_names_a_key_of_the_default_or_a_data_group():
    """A rule whose key is misspelt would be skipped silently (absent keys are skipped): each must exist."""
    keys = set()
    for data in ("synthetic", "imagenet_val", "coco", "manifest"):
        for model in ("default", "custom", "torchvision", "timm"):
            cfg = compose([f"data={data}", f"model={model}"])
            keys |= {rule.option for rule in RULES if _has(cfg, rule.option)}
    assert keys == {rule.option for rule in RULES}


def _has(cfg, option: str) -> bool:
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, option, default="<absent>", throw_on_missing=False) != "<absent>"


def test_default_configuration_passes_every_rule():
    check_options(compose([]))


def test_memory_per_worker_is_checked():
    check_memory_per_worker(100, 2, 16, 3200)
    with pytest.raises(ConfigError) as error:
        check_memory_per_worker(100, 3, 16, 3200)
    assert error.value.option == "data.preprocess.max_pixels" and "runtime.num_workers" in str(error.value)
    check_memory_per_worker(10**12, 8, 16, None)  # unknown memory: not checked
