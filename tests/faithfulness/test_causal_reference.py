"""Deletion and insertion equal a direct transcription of RISE's ``CausalMetric`` (eclique/RISE
``evaluation.py``, written out below), and TorchCAM's ``DeletionInsertionMetric``, on the same maps.

The transcription keeps RISE's loop (one image, one step per forward, ``np.flip(np.argsort(...))`` for the
order, ``auc``) and its substrates (``torch.zeros_like`` for deletion, ``gkern(11, 5)`` blur for insertion,
the model wrapped in a softmax); only ``HW`` (224 x 224 in RISE) follows the input. NumPy's argsort leaves
the order of tied pixels open, so the maps given to it have no ties; TorchCAM sorts stably as the product
does, so the tied maps (the zero region of a ReLU'd Grad-CAM map) are checked against it.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn as nn

from pipeline.faithfulness.causal import rise_blur_kernel
from tests.faithfulness.helpers import GivenMaps, product_columns, tiny_batch

ndimage = pytest.importorskip("scipy.ndimage")


# ---- RISE evaluation.py, transcribed (CUDA calls dropped, HW from the input) ----
def gkern(klen, nsig):
    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = ndimage.gaussian_filter(inp, nsig)
    kern = np.zeros((3, 3, klen, klen))
    kern[0, 0] = k
    kern[1, 1] = k
    kern[2, 2] = k
    return torch.from_numpy(kern.astype("float32"))


def auc(arr):
    return (arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)


class CausalMetric:
    def __init__(self, model, mode, step, substrate_fn, hw):
        assert mode in ["del", "ins"]
        self.model, self.mode, self.step, self.substrate_fn, self.hw = model, mode, step, substrate_fn, hw

    def single_run(self, img_tensor, explanation):
        HW = self.hw
        pred = self.model(img_tensor)
        top, c = torch.max(pred, 1)
        c = c.cpu().numpy()[0]
        n_steps = (HW + self.step - 1) // self.step
        if self.mode == "del":
            start = img_tensor.clone()
            finish = self.substrate_fn(img_tensor)
        elif self.mode == "ins":
            start = self.substrate_fn(img_tensor)
            finish = img_tensor.clone()
        scores = np.empty(n_steps + 1)
        salient_order = np.flip(np.argsort(explanation.reshape(-1, HW), axis=1), axis=-1)
        for i in range(n_steps + 1):
            pred = self.model(start)
            scores[i] = pred[0, c]
            if i < n_steps:
                coords = salient_order[:, self.step * i : self.step * (i + 1)]
                start.cpu().numpy().reshape(1, 3, HW)[0, :, coords] = (
                    finish.cpu().numpy().reshape(1, 3, HW)[0, :, coords]
                )
        return scores


# ----


def rise_aucs(model, inputs, maps, steps):
    hw = inputs.shape[-2] * inputs.shape[-1]
    step = (hw + steps - 1) // steps
    wrapped = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    kern = gkern(11, 5)

    def blur(x):
        return nn.functional.conv2d(x, kern, padding=11 // 2)

    deletion = CausalMetric(wrapped, "del", step, torch.zeros_like, hw)
    insertion = CausalMetric(wrapped, "ins", step, blur, hw)
    out = []
    with torch.no_grad():
        for image, explanation in zip(inputs, maps):
            x = image[None].clone()
            out.append(
                (
                    auc(deletion.single_run(x, explanation.numpy())),
                    auc(insertion.single_run(x, explanation.numpy())),
                )
            )
    return np.array(out)


@pytest.mark.parametrize("steps", [16, 10])  # 1024 pixels: 16 steps of 64; 10 steps of 103, the last one short
def test_deletion_and_insertion_equal_the_rise_transcription(steps):
    model, inputs, _, made = tiny_batch(6)
    generator = torch.Generator().manual_seed(5)
    maps = torch.rand(inputs.shape[0], 2, *inputs.shape[-2:], generator=generator)  # no ties
    columns = product_columns(model, inputs, made, maps=maps, confidence=False, steps=steps)
    reference = rise_aucs(model, inputs, maps[:, 0], steps)
    np.testing.assert_allclose(columns["pred_deletion_auc"].numpy(), reference[:, 0], atol=1e-5)
    np.testing.assert_allclose(columns["pred_insertion_auc"].numpy(), reference[:, 1], atol=1e-5)


def test_the_blur_is_rise_gkern():
    np.testing.assert_allclose(rise_blur_kernel(11, 5.0).numpy(), gkern(11, 5)[0, 0].numpy(), atol=1e-7)
    np.testing.assert_allclose(rise_blur_kernel(7, 2.0).numpy(), gkern(7, 2)[1, 1].numpy(), atol=1e-7)


def test_tied_maps_equal_torchcam_deletion_insertion():
    metrics = pytest.importorskip("torchcam.metrics")
    if not hasattr(metrics, "DeletionInsertionMetric"):
        pytest.skip("this TorchCAM has no DeletionInsertionMetric")
    model, inputs, _, made = tiny_batch(8, seed=2)
    # Grad-CAM maps cut at their median (a ReLU'd region of zeros) and quantised: ties everywhere
    maps = made.maps.normalised
    maps = ((maps - maps.flatten(2).median(dim=2).values[..., None, None]).clamp(min=0) * 16).floor()
    assert all(len(m.unique()) <= 17 for m in maps[:, 0])  # 1024 pixels, at most 17 values
    columns = product_columns(model, inputs, made, maps=maps, confidence=False, steps=16)
    kern = torch.from_numpy(gkern(11, 5).numpy())
    for kind, column in (("deletion", "pred_deletion_auc"), ("insertion", "pred_insertion_auc")):
        # TorchCAM's insertion rises from its baseline: the blurred copy; deletion falls to zeros
        baseline = None if kind == "deletion" else (lambda x: nn.functional.conv2d(x, kern, padding=5))
        for i in range(inputs.shape[0]):
            metric = metrics.DeletionInsertionMetric(
                GivenMaps(model, maps[i : i + 1, 0]), partial(torch.softmax, dim=-1), steps=16, baseline=baseline
            )
            with torch.no_grad():
                metric.update(inputs[i : i + 1])
            assert columns[column][i].item() == pytest.approx(metric.summary()[f"{kind}_auc"], abs=1e-5), (kind, i)


def test_a_faithful_order_deletes_faster_than_the_reverse_order():
    """The order matters: the same maps reversed (lowest pixel first) give a higher deletion AUC and a lower
    insertion AUC on average (a check that can fail if the order were ignored or inverted)."""
    model, inputs, _, made = tiny_batch(16, seed=4)
    maps = made.maps.raw + 1e-4 * torch.rand(made.maps.raw.shape, generator=torch.Generator().manual_seed(0))
    forward = product_columns(model, inputs, made, maps=maps, confidence=False)
    backward = product_columns(model, inputs, made, maps=-maps, confidence=False)
    assert forward["pred_deletion_auc"].mean() < backward["pred_deletion_auc"].mean()
    assert forward["pred_insertion_auc"].mean() > backward["pred_insertion_auc"].mean()
