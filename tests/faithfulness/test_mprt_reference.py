"""The cascading randomisation's correlations equal Quantus's ``MPRT`` (``layer_order="top_down"``, the same
seed), given the same maps and the same stages: Quantus randomises every module with ``reset_parameters()``
from the output down, one per stage, so the product is given those modules as its stages here.

The maps are the product's own (Grad-CAM of the predicted class, upsampled, before the ReLU); Quantus gets
them through its ``explain_func``. ``abs=False`` compares the signed maps (the product's ``spearman``),
``abs=True`` their absolute values (``spearman_abs``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.faithfulness.randomisation import Stage, randomisation_stages
from pipeline.faithfulness.sanity import sanity_check
from pipeline.maps.engine import CamEngine, upsample_and_normalise
from pipeline.maps.methods import get_method
from tests.helpers_tiny_model import TinyNet

quantus = pytest.importorskip("quantus")
SEED = 42


def explain(model, inputs, targets, **kwargs) -> np.ndarray:
    """Quantus's ``explain_func``: the product's signed Grad-CAM maps at the input's resolution."""
    inputs = torch.as_tensor(inputs, dtype=torch.float32)
    with CamEngine(model, model.features, get_method("gradcam")) as engine:
        output = engine(inputs, torch.as_tensor(targets, dtype=torch.long)[:, None])
    return upsample_and_normalise(output.signed_maps, tuple(inputs.shape[-2:])).raw.numpy()


def quantus_stages(model) -> list[Stage]:
    """Quantus's stages: each module with ``reset_parameters()``, in reverse ``named_modules`` order."""
    names = [name for name, module in model.named_modules() if hasattr(module, "reset_parameters")]
    return [Stage(name, [name]) for name in names[::-1]]


@pytest.fixture(scope="module")
def setting():
    model = TinyNet(num_classes=5, seed=7).eval()
    inputs = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        predicted = model(inputs).argmax(dim=1)
    engine = CamEngine(model, model.features, get_method("gradcam"))
    engine.close()  # only its method, class score and layout are used
    ours = sanity_check(model, "features", engine, inputs, 10, 2, 0.5, 0.5, SEED, 4, stages=quantus_stages(model))
    return model, inputs, predicted, ours


@pytest.mark.parametrize("absolute", [False, True])
def test_per_stage_spearman_equals_quantus_mprt(setting, absolute):
    model, inputs, predicted, ours = setting
    metric = quantus.MPRT(
        layer_order="top_down",
        seed=SEED,
        abs=absolute,
        normalise=True,
        return_average_correlation=False,
        return_last_correlation=False,
        disable_warnings=True,
        display_progressbar=False,
    )
    scores = metric(
        model=model,
        x_batch=inputs.numpy(),
        y_batch=predicted.numpy(),
        a_batch=None,
        explain_func=explain,
        device="cpu",
        batch_size=10,
    )
    layers = [name for name in scores if name != "original"]
    assert layers == [stage["name"] for stage in ours["stages"]] == ["fc", "features.2", "features.0"]
    for stage in ours["stages"]:
        expected = float(np.mean(scores[stage["name"]]))
        assert stage["spearman_abs" if absolute else "spearman"] == pytest.approx(expected, abs=1e-6), stage["name"]
    # the model given to the check is left as it was
    with torch.no_grad():
        assert torch.equal(model(inputs).argmax(dim=1), predicted)


def test_the_stages_are_the_blocks_from_the_output_down():
    model = TinyNet(num_classes=5)
    stages = randomisation_stages(model, torch.zeros(1, 3, 32, 32), limit=10)
    assert [s.name for s in stages] == ["fc", "features.2", "features.0"]
    assert randomisation_stages(model, torch.zeros(1, 3, 32, 32), limit=2)[-1].modules == ["features.2"]
