"""No silent random weights (issue 17.5): a torchvision or timm model without ``model.weights`` or
``model.checkpoint`` is refused at start unless ``model.allow_random_weights=true``, and a run that allows
it says so in summary.json and in the printed summary."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.model.from_config import build_model
from tests.helpers_corpus import CONFIG_LINE, base_overrides, good_dataset, read_summary, run_cli_here, run_in_process
from tests.model.test_models import model_cfg

TORCHVISION = {
    "model": "torchvision",
    "model.name": "resnet18",
    "model.num_classes": 3,
    "model._target_": None,
    "+model.kwargs.num_classes": None,
}


def test_torchvision_without_weights_is_refused_naming_the_options(tmp_path):
    with pytest.raises(ConfigError) as error:
        build_model(model_cfg(), tmp_path)
    assert error.value.option == "model.weights"
    assert "model.checkpoint=PATH" in error.value.reason and "model.allow_random_weights=true" in error.value.reason


def test_timm_without_a_checkpoint_is_refused_naming_model_checkpoint(tmp_path):
    pytest.importorskip("timm")
    with pytest.raises(ConfigError) as error:
        build_model(model_cfg(name="timm:resnet18", num_classes=3), tmp_path)
    assert error.value.option == "model.checkpoint" and "model.allow_random_weights=true" in error.value.reason


def test_random_weights_on_purpose_are_recorded_and_loaded_weights_are_not(tmp_path):
    import torchvision

    built = build_model(model_cfg(num_classes=3, allow_random_weights=True), tmp_path)
    assert built.info["random_weights"] is True
    path = tmp_path / "ckpt.pt"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), path)
    assert build_model(model_cfg(checkpoint=str(path)), tmp_path).info["random_weights"] is False
    custom = model_cfg(name="custom", _target_="tests.model.test_models.SmallNet")
    assert build_model(custom, tmp_path).info["random_weights"] is None  # its constructor decides: unknown
    with pytest.raises(ConfigError) as error:
        build_model(model_cfg(allow_random_weights="yes"), tmp_path)
    assert error.value.option == "model.allow_random_weights"


def test_an_unknown_name_is_reported_before_the_missing_weights(tmp_path):
    with pytest.raises(ConfigError) as error:
        build_model(model_cfg(name="resnet_does_not_exist"), tmp_path)
    assert error.value.option == "model.name"


def test_cli_refuses_random_weights_with_exit_2_and_one_line(tmp_path):
    good_dataset(tmp_path / "data", 4)
    result = run_cli_here(base_overrides(tmp_path / "data", tmp_path / "cache", **TORCHVISION), tmp_path / "run")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("cam-audit:")]
    assert len(lines) == 1 and CONFIG_LINE.match(lines[0]), result.stderr[-2000:]
    assert lines[0].startswith("cam-audit: configuration error: model.weights: ") and "model.checkpoint" in lines[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "samples.parquet").exists()


def test_an_audit_of_random_weights_says_so_in_the_summary(tmp_path, capsys):
    good_dataset(tmp_path / "data", 4)
    overrides = base_overrides(
        tmp_path / "data",
        tmp_path / "cache",
        **TORCHVISION,
        **{"model.allow_random_weights": "true", "data.preprocess.size": 64, "data.preprocess.resize_size": 72},
    )
    run_in_process(overrides, tmp_path / "run")
    printed = capsys.readouterr().out
    assert read_summary(tmp_path / "run")["model"]["random_weights"] is True
    assert "random weights" in printed and "model.allow_random_weights=true" in printed
