"""The sanity check on the built-in default model: its own maps pass, maps known to be unfaithful fail.

Planted failures (each for a reason the check is built to see):
- maps independent of the weights and of the class: the activations summed over channels at the model's
  parameter-free input layer (``features.0``, a local contrast normalisation): an edge detector of the
  input, Adebayo et al.'s example of a map that looks plausible and explains nothing;
- maps made with a random head instead of the model's: CAM whose class weights come from a fixed random
  matrix (a wiring bug that gives maps of some head, not of the audited one): randomising the model's
  head does not change them;
- maps that ignore the class: the activations summed over channels at the default layer;
- Grad-CAM at the first convolution block's output (``features.3``): its |map| follows the input's
  structure whatever the trunk's weights (measured: mean Spearman of |map| 0.575 after the head and the
  last block, threshold 0.5; 0.396 at the default layer).
A real method fails too: LayerCAM (and Grad-CAM++) weigh the channels by ReLU'd gradients; under the
default model's global-average-pool + linear head that is a positive mix of the same activations whatever
the class or the head (measured on 64 images: class Spearman 0.79, 0.91 after randomising the head).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pipeline.model.layers as layers
import pipeline.setup as run_module
from pipeline.faithfulness.sanity import run_sanity_check
from pipeline.maps import methods
from pipeline.setup import prepare
from tests.helpers_corpus import DEFAULT_CACHE, compose

# the built-in default model: a fresh clone generates its data and trains it first (minutes on 2 cores): make test-all
pytestmark = [pytest.mark.timeout(1800), pytest.mark.slow]


def activation_sum(acts, grads, class_weights):
    """A planted "method": the activations summed over channels, the same for every target class."""
    return acts.sum(dim=1, keepdim=True).expand(-1, grads.shape[1], -1, -1)


def sanity_of(tmp_path: Path, overrides: list[str]) -> dict:
    cfg = compose(
        ["data.limit=200", "runtime.num_workers=0", "runtime.progress=false", f"cache_dir={DEFAULT_CACHE}", *overrides]
    )
    return run_sanity_check(prepare(cfg, tmp_path / "prepare"), None)


@pytest.fixture
def planted_method(monkeypatch):
    """``cam=gradcam`` makes the planted maps in this test (the option rules know the real method names only)."""
    monkeypatch.setitem(
        methods.METHODS,
        "gradcam",
        methods.CamMethod("gradcam", activation_sum, needs_gradients=True, needs_head_weights=False),
    )


def test_the_default_model_at_its_default_layer_passes(tmp_path):
    check = sanity_of(tmp_path, [])
    assert check["passed"] is True, check
    weights = check["maps_depend_on_weights"]
    assert weights["head"]["stage"] == "classifier" and weights["after_stages"] == ["classifier", "features.16"]
    assert abs(weights["head"]["spearman"]) < 0.2 and weights["trunk"]["spearman_abs"] < 0.45
    assert check["maps_depend_on_class"]["value"] < 0
    assert check["images"] == 64 and len(check["stages"]) == 3 and check["seconds"] > 0


def test_an_edge_detector_of_the_input_fails_both(tmp_path, planted_method):
    check = sanity_of(tmp_path, ["model.target_layer=features.0", "sanity.sample=16"])
    assert check["passed"] is False
    assert check["maps_depend_on_weights"]["passed"] is False and check["maps_depend_on_class"]["passed"] is False
    for stage in check["stages"]:  # nothing below features.0 has weights: the maps never change
        assert stage["spearman"] == pytest.approx(1.0) and stage["ssim"] == pytest.approx(1.0)


def test_maps_of_a_random_head_fail_on_the_weights(tmp_path, monkeypatch):
    fixed = torch.randn(8, 72, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(layers, "find_linear_head", lambda model, channels: fixed)
    monkeypatch.setattr(run_module, "find_linear_head", lambda model, channels: fixed)
    check = sanity_of(tmp_path, ["cam=cam", "sanity.sample=16"])
    weights = check["maps_depend_on_weights"]
    assert weights["passed"] is False and weights["head"]["spearman"] == pytest.approx(1.0)
    assert check["maps_depend_on_class"]["passed"] is True  # the random head's rows still differ by class


def test_maps_that_ignore_the_class_fail_on_the_class(tmp_path, planted_method):
    check = sanity_of(tmp_path, ["sanity.sample=16"])
    assert check["maps_depend_on_class"]["passed"] is False
    assert check["class_sensitivity"]["spearman"] == pytest.approx(1.0)
    assert check["passed"] is False


def test_gradcam_at_the_input_side_convolution_fails_on_the_weights(tmp_path):
    check = sanity_of(tmp_path, ["model.target_layer=features.3"])
    assert check["maps_depend_on_weights"]["trunk"]["spearman_abs"] > 0.5
    assert check["passed"] is False


def test_layercam_on_a_gap_head_fails_on_the_class(tmp_path):
    check = sanity_of(tmp_path, ["cam=layercam", "sanity.sample=16"])
    assert check["maps_depend_on_class"]["passed"] is False  # 0.74 on these 16 images, 0.79 on 64
    assert check["passed"] is False
