"""A small model and a few images with their maps, shared by the reference tests: the same maps are given to
the product's functions and to the reference (TorchCAM, a transcription of RISE, Quantus)."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import torch

from pipeline.faithfulness.causal import rise_blur_kernel
from pipeline.faithfulness.columns import FaithfulnessPlan, faithfulness_columns
from pipeline.maps.engine import CamEngine, upsample_and_normalise
from pipeline.maps.methods import get_method
from tests.helpers_tiny_model import TinyNet

SIZE = 32  # TinyNet maps at 8 x 8, upsampled to 32 x 32 (1024 pixels: 16 steps of 64)


def tiny_batch(images: int = 8, seed: int = 0):
    """``(model, images [N, 3, 32, 32], labels [N], maps)``: TinyNet (5 classes, seeded), random inputs,
    and the Grad-CAM maps of the predicted and the true class (``UpsampledMaps``, targets ``[N, 2]``,
    softmax ``[N, 5]``)."""
    model = TinyNet(num_classes=5, seed=seed).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randn(images, 3, SIZE, SIZE, generator=generator)
    labels = torch.randint(0, 5, (images,), generator=generator)
    with CamEngine(model, model.features, get_method("gradcam")) as engine:
        output, targets = engine.forward_then(inputs, lambda logits: torch.stack([logits.argmax(dim=1), labels], dim=1))
    maps = upsample_and_normalise(output.signed_maps, (SIZE, SIZE))
    return model, inputs, labels, SimpleNamespace(maps=maps, targets=targets, probs=output.logits.softmax(dim=1))


def product_columns(model, inputs, made, maps=None, confidence=True, sample=True, steps=16):
    """:func:`faithfulness_columns` with every image in the sample (``maps``: ``[N, 2, H, W]`` instead of the
    Grad-CAM maps)."""
    records = [SimpleNamespace(sample_id=str(i), problem=None) for i in range(inputs.shape[0])]
    plan = FaithfulnessPlan(
        confidence, frozenset(r.sample_id for r in records) if sample else frozenset(), steps, rise_blur_kernel()
    )
    plan.bind(records, inputs.device)
    chosen = made.maps.normalised if maps is None else maps
    empty = torch.zeros(chosen.shape[:2], dtype=torch.bool, device=chosen.device)

    def predict(x):
        with torch.no_grad():
            return model(x)

    return faithfulness_columns(
        plan, predict, inputs, chosen, empty, made.targets, made.probs, torch.arange(inputs.shape[0])
    )


class GivenMaps:
    """A TorchCAM CAM extractor that returns the maps it was given (at the input's resolution, so TorchCAM's
    resize is the identity): both sides see the same maps."""

    def __init__(self, model, maps: torch.Tensor):
        self.model, self.maps = model, maps

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    def _hooks_off(self):
        return contextlib.nullcontext()
