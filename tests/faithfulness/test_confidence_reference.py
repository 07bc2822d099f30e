"""Average drop and increase in confidence equal TorchCAM's ``ClassificationMetric`` on the same maps (1e-5).

TorchCAM multiplies the normalised input by the map (upsampled to the input) and scores the softmax
probability of the class, as the product does; it adds 1e-7 to the denominator (the product does not),
which moves the drop by less than 1e-7 / Y relative: far below 1e-5 for these probabilities.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from tests.faithfulness.helpers import GivenMaps, product_columns, tiny_batch

metrics = pytest.importorskip("torchcam.metrics")


def torchcam_summary(model, inputs, maps, class_idx=None) -> dict:
    metric = metrics.ClassificationMetric(GivenMaps(model, maps), partial(torch.softmax, dim=-1))
    with torch.no_grad():
        metric.update(inputs, class_idx=class_idx)
    return metric.summary()


@pytest.mark.parametrize("seed", [0, 3])
def test_average_drop_and_increase_equal_torchcam(seed):
    model, inputs, labels, made = tiny_batch(12, seed)
    columns = product_columns(model, inputs, made, sample=False)
    for k, name in enumerate(("pred", "true")):
        reference = torchcam_summary(
            model, inputs, made.maps.normalised[:, k], None if name == "pred" else labels.tolist()
        )
        drop = columns[f"{name}_confidence_drop"].numpy()
        increase = columns[f"{name}_confidence_increase"].numpy()
        assert np.isfinite(drop).all()
        assert drop.mean() == pytest.approx(reference["avg_drop"], abs=1e-5)
        assert increase.mean() == pytest.approx(reference["conf_increase"], abs=1e-5)
    # the predictions that are right share one map: the true-class values are the predicted-class values
    right = (made.targets[:, 0] == made.targets[:, 1]).numpy()
    assert right.any() and not right.all()
    np.testing.assert_array_equal(
        columns["true_masked_prob"].numpy()[right], columns["pred_masked_prob"].numpy()[right]
    )


def test_a_map_that_keeps_the_whole_input_loses_nothing():
    model, inputs, _, made = tiny_batch(6)
    ones = torch.ones_like(made.maps.normalised)
    columns = product_columns(model, inputs, made, maps=ones, sample=False)
    np.testing.assert_allclose(columns["pred_confidence_drop"].numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(columns["pred_masked_prob"].numpy(), made.probs.max(dim=1).values.numpy(), atol=1e-6)
