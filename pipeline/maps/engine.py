"""The shared engine: one forward pass, gradients of the target classes w.r.t. the target layer only.

How the backward pass stays in the head: the parameters are frozen, and a forward hook on the target
layer replaces its output by a fresh leaf that requires grad (``out.detach().requires_grad_()``). Autograd
then records only the operations *after* the target layer, so ``torch.autograd.grad(score, leaf)`` walks
the head and nothing else: no parameter gradients, no backward through the trunk. The hook returns a
clone of the leaf so that an in-place op after the layer (``ReLU(inplace=True)``) cannot touch the
activations we keep.

Map arithmetic is float32 even when the forward runs under autocast (bf16/fp16 activations are cast).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.maps.methods import CamMethod
from pipeline.model.layout import FeatureLayout


@dataclass
class CamOutput:
    """What one batch yields.

    Attributes:
        logits: ``[B, num_classes]`` float32.
        signed_maps: ``[B, K, h, w]`` float32, the method's map before the final ReLU, one per target.
    """

    logits: Tensor
    signed_maps: Tensor


class CamEngine:
    """Computes CAMs for several target classes per image from one forward pass.

    It registers a forward hook on ``target_layer``; :meth:`close` (or leaving a ``with CamEngine(...) as
    engine:`` block) removes it, so the model can be used without the engine afterwards, or by another
    engine. Parameters stay frozen (``requires_grad=False``) after closing.

    Args:
        model: the classifier, in eval mode; its parameters are frozen here.
        target_layer: the module whose output the maps are made of, ``[B, C, h, w]`` after ``layout``.
        method: a :class:`~pipeline.maps.methods.CamMethod`.
        class_score: ``"logit"`` (Grad-CAM paper) or ``"softmax"`` (probability).
        head_weight: ``[num_classes, C]`` linear head weights, for CAM.
        autocast_dtype: ``None`` for float32, or ``torch.bfloat16`` / ``torch.float16``.
        layout: how the target layer's output becomes ``[B, C, h, w]`` (:mod:`pipeline.model.layout`).
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module,
        method: CamMethod,
        class_score: str = "logit",
        head_weight: Tensor | None = None,
        autocast_dtype: torch.dtype | None = None,
        layout: FeatureLayout = FeatureLayout(),
    ):
        if class_score not in ("logit", "softmax"):
            raise ValueError(f"cam.class_score must be 'logit' or 'softmax', got {class_score!r}")
        self.model = model.eval().requires_grad_(False)
        self.method = method
        self.class_score = class_score
        self.head_weight = head_weight
        self.autocast_dtype = autocast_dtype
        self.layout = layout
        self._leaf: Tensor | None = None
        self._hook: torch.utils.hooks.RemovableHandle | None = target_layer.register_forward_hook(self._capture)

    def close(self) -> None:
        """Remove the forward hook from the target layer (a second call does nothing)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def __enter__(self) -> CamEngine:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _capture(self, module: nn.Module, inputs, output: Tensor) -> Tensor:
        if not self.layout.accepts(output):
            raise RuntimeError(
                f"the target layer's output does not fit the {self.layout.kind} layout: {type(output).__name__} "
                f"{tuple(output.shape) if isinstance(output, Tensor) else ''}"
            )
        self._leaf = output.detach().requires_grad_(self.method.needs_gradients)
        return self._leaf.clone()  # in-place ops after the layer must not reach the kept activations

    def __call__(self, images: Tensor, targets: Tensor) -> CamOutput:
        """Maps for ``targets`` ``[B, K]`` (class indices per image; a target may be chosen after the
        forward via :meth:`forward_then`)."""
        return self.forward_then(images, lambda logits: targets)[0]

    def forward_then(self, images: Tensor, choose_targets) -> tuple[CamOutput, Tensor]:
        """Run the forward pass, let ``choose_targets(logits) -> [B, K]`` pick the classes (e.g. the
        prediction), then make their maps. Returns the output and the targets."""
        if self._hook is None:
            raise RuntimeError("this CamEngine is closed (its hook was removed); make a new one")
        device_type = images.device.type
        with (
            torch.enable_grad(),
            torch.autocast(
                device_type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None
            ),
        ):
            logits = self.model(images)
        logits = logits.float()
        targets = choose_targets(logits.detach())
        leaf = self._leaf
        if leaf is None:
            raise RuntimeError("the target layer did not run in the model's forward pass")
        acts = self.layout.to_map(leaf).float()
        grads: Tensor | None
        class_weights: Tensor | None
        if self.method.needs_gradients:
            scores = logits.softmax(dim=1) if self.class_score == "softmax" else logits
            per_target = []
            for k in range(targets.shape[1]):  # K is a handful of targets, not images
                selected = scores.gather(1, targets[:, k : k + 1]).sum()
                (grad,) = torch.autograd.grad(selected, leaf, retain_graph=k + 1 < targets.shape[1])
                per_target.append(self.layout.to_map(grad).float())
            grads = torch.stack(per_target, dim=1)  # [B, K, C, h, w]
            class_weights = None
        else:
            assert self.head_weight is not None, f"{self.method.name} needs the head's linear weights"
            grads = None
            class_weights = self.head_weight.float()[targets]  # [B, K, C]
        with torch.autocast(device_type, enabled=False):
            signed = self.method.function(acts, grads, class_weights)
        self._leaf = None
        return CamOutput(logits.detach(), signed.detach()), targets


@dataclass
class UpsampledMaps:
    """Maps at network-input resolution, ``[B, K, H, W]`` float32.

    Attributes:
        normalised: the positive (or negative) map after ReLU, min-max normalised per map to [0, 1];
            an empty map (constant) is all zero here.
        raw: the signed map upsampled, not clipped, not normalised (relevance mass accuracy uses it).
        empty: ``[B, K]`` bool, the map after ReLU was constant.
        raw_max: ``[B, K]`` the maximum of the map after ReLU before normalisation (tells an empty map
            from a weak one), at input resolution.
        signed_low_res: the signed map at the layer's resolution, kept by the run for ``cam.save_maps``.
    """

    normalised: Tensor
    raw: Tensor
    empty: Tensor
    raw_max: Tensor
    signed_low_res: Tensor | None = None  # [B, K, h, w] the method's signed map before any post-processing


def upsample_and_normalise(signed_maps: Tensor, size: tuple[int, int], negative: bool = False) -> UpsampledMaps:
    """ReLU at the map's own resolution (it is part of the map's definition, ``M = ReLU(sum_k w_k A_k)``),
    bilinear upsampling (``align_corners=False``) to ``size = (H, W)``, then per-map min-max.

    ``negative=True`` gives the counterfactual map ``ReLU(-x)``. ``raw`` is the signed map upsampled
    without clipping (sign flipped for the negative map), for relevance mass accuracy.
    """
    signed_maps = (-signed_maps if negative else signed_maps).float()
    k_maps = signed_maps.shape[1]
    # one interpolation for both the clipped and the signed maps
    both = F.interpolate(
        torch.cat([signed_maps.clamp(min=0), signed_maps], dim=1), size=size, mode="bilinear", align_corners=False
    )
    clipped, raw = both[:, :k_maps], both[:, k_maps:]
    # The map's own scale is its maximum: bilinear weights sum to one only up to rounding, so a constant
    # non-zero map may wobble in its last bits.
    normalised, empty, high = min_max_normalise(clipped, scale=None)
    return UpsampledMaps(normalised, raw, empty, high)


# A map is empty (constant: no peak, no shape) when its spread is at most this fraction of its scale.
EMPTY_SPREAD = 1e-6


def min_max_normalise(maps: Tensor, scale: float | None, domain: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Per-map min-max normalisation to [0, 1] and the empty-map rule, shared by both scoring spaces.

    ``maps`` ``[B, K, H, W]`` (non-negative, after ReLU). With ``domain`` ``[B, H, W]`` bool only its pixels
    count and the maps are 0 outside it. A map is **empty** when ``max - min`` over its pixels is not
    above ``EMPTY_SPREAD * scale``: ``scale=None`` takes the map's own ``|max|`` (raw maps of any size),
    a number is the known scale of maps already normalised (1.0). A NaN spread counts as empty. An empty
    map normalises to all zero.

    Returns ``(normalised [B, K, H, W], empty [B, K] bool, max [B, K])`` (``max`` over the domain, before
    normalising).
    """
    if domain is None:
        low = maps.amin(dim=(-2, -1), keepdim=True)
        high = maps.amax(dim=(-2, -1), keepdim=True)
        keep = None
    else:
        keep = domain[:, None]
        low = maps.masked_fill(~keep, float("inf")).amin(dim=(-2, -1), keepdim=True)
        high = maps.masked_fill(~keep, float("-inf")).amax(dim=(-2, -1), keepdim=True)
    spread = high - low
    empty = ~(spread > EMPTY_SPREAD * (high.abs() if scale is None else scale))
    keep = ~empty if keep is None else keep & ~empty
    normalised = torch.where(
        keep, (maps - low) / torch.where(empty, torch.ones_like(spread), spread), torch.zeros_like(maps)
    )
    return normalised, empty[..., 0, 0], high[..., 0, 0]
