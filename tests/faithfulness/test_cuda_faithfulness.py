"""Faithfulness and the sanity check on CUDA (``pytest -m cuda``; skipped without a GPU): the columns of a batch
equal the CPU's (the same maps given to both, float32), and a whole run's summary has both entries."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline.faithfulness.sanity import sanity_check
from pipeline.maps.engine import CamEngine
from pipeline.maps.methods import get_method
from tests.faithfulness.helpers import product_columns, tiny_batch
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CUDA = torch.device("cuda")


def test_batch_columns_on_cuda_equal_the_cpu():
    model, inputs, _, made = tiny_batch(8)
    on_cpu = product_columns(model, inputs, made)
    made.maps = dataclasses.replace(made.maps, normalised=made.maps.normalised.to(CUDA))
    made.targets, made.probs = made.targets.to(CUDA), made.probs.to(CUDA)
    on_cuda = product_columns(model.to(CUDA), inputs.to(CUDA), made)
    for column, values in on_cpu.items():
        torch.testing.assert_close(on_cuda[column].cpu(), values, atol=1e-4, rtol=0, equal_nan=True, msg=column)


def test_sanity_check_on_cuda_equals_the_cpu():
    from tests.helpers_tiny_model import TinyNet

    inputs = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    results = []
    for device in ("cpu", "cuda"):
        model = TinyNet(num_classes=5, seed=1).eval().to(device)
        engine = CamEngine(model, model.features, get_method("gradcam"))
        engine.close()
        results.append(sanity_check(model, "features", engine, inputs.to(device), 3, 2, 0.5, 0.5, 42, 4))
    for cpu, cuda in zip(results[0]["stages"], results[1]["stages"]):
        assert cuda["spearman_abs"] == pytest.approx(cpu["spearman_abs"], abs=1e-3), cpu["name"]


def test_a_run_on_cuda_has_faithfulness_and_a_sanity_check(tmp_path):
    good_dataset(tmp_path / "data", 12)
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache", **{"runtime.device": "cuda", "sanity.sample": 8})
    summary = run_in_process(overrides, tmp_path / "run")
    assert summary["faithfulness"]["deletion_insertion"]["images"] > 0
    assert summary["sanity_check"]["images"] == 8
