"""The CAM family: each method is one small function of the target layer's activations and gradients.

Every method has the same signature::

    method(acts [B, C, h, w], grads [B, K, C, h, w] | None, class_weights [B, K, C] | None) -> [B, K, h, w]

and returns the **signed** map before the final ReLU, ``sum_k w_k A_k`` (or its element-wise form), in
float32. The engine applies ``ReLU(x)`` for the positive map and ``ReLU(-x)`` for the negative
("counterfactual") map, so the sign convention lives in one place. ``K`` is the number of target classes
per image (predicted, true, ...). Formulas and sources: ``docs/definitions.md`` and the README.
Adding a method means adding one function here and one entry in :data:`METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.errors import OptionError


def _weighted_sum(acts: Tensor, weights: Tensor) -> Tensor:
    """``sum_c weights[b, k, c] * acts[b, c]``: ``[B, K, C]`` x ``[B, C, h, w]`` -> ``[B, K, h, w]``."""
    return torch.einsum("bkc,bchw->bkhw", weights, acts)


def _gradients(grads: Tensor | None, method: str) -> Tensor:
    """The gradients a gradient method needs (the engine computes them when ``needs_gradients``)."""
    assert grads is not None, f"{method} needs the gradients of the class score"
    return grads


def cam(acts: Tensor, grads: Tensor | None, class_weights: Tensor | None) -> Tensor:
    """CAM (Zhou et al. 2016, arXiv 1512.04150): ``M = sum_k w_fc[c, k] A_k``; needs a GAP + linear head,
    no gradients."""
    assert class_weights is not None, "CAM needs the head's linear weights"
    return _weighted_sum(acts, class_weights)


def gradcam(acts: Tensor, grads: Tensor | None, class_weights: Tensor | None) -> Tensor:
    """Grad-CAM (Selvaraju et al., arXiv 1610.02391, eq. 1-2): ``a_k = mean_ij g_kij``; ``M = sum_k a_k A_k``."""
    grads = _gradients(grads, "Grad-CAM")
    return _weighted_sum(acts, grads.mean(dim=(-2, -1)))


def gradcampp(acts: Tensor, grads: Tensor | None, class_weights: Tensor | None, eps: float = 0.0) -> Tensor:
    """Grad-CAM++ (Chattopadhay et al., arXiv 1710.11063, eq. 19):
    ``alpha = g^2 / (2 g^2 + sum_ab A_ab g^3)`` (0 where the denominator is 0),
    ``w_k = sum_ij alpha_kij ReLU(g_kij)``. The ``exp(S)`` factor is one constant per map and cancels
    after normalisation.

    ``eps`` is added to the denominator only to reproduce pytorch-grad-cam, which uses 1e-6: with logit
    gradients of order 1e-3 (a 7x7 map under global average pooling) that constant is as large as
    ``2 g^2`` and moves the normalised map by up to 0.03 (measured on EfficientNet-Lite0 in
    tests/maps/test_oracle_gradcam.py). The product follows the paper (``eps = 0``)."""
    grads = _gradients(grads, "Grad-CAM++")
    g2 = grads.pow(2)
    g3 = grads.pow(3)
    act_sum = acts.sum(dim=(-2, -1))[:, None, :, None, None]  # [B, 1, C, 1, 1]
    denominator = 2 * g2 + act_sum * g3 + eps
    alpha = torch.where(
        denominator != 0,
        g2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator)),
        torch.zeros_like(g2),
    )
    weights = (alpha * grads.clamp(min=0)).sum(dim=(-2, -1))
    return _weighted_sum(acts, weights)


def hirescam(acts: Tensor, grads: Tensor | None, class_weights: Tensor | None) -> Tensor:
    """HiResCAM (Draelos & Carin, arXiv 2011.08891): ``M = sum_k g_k * A_k`` element-wise."""
    grads = _gradients(grads, "HiResCAM")
    return (grads * acts[:, None]).sum(dim=2)


def xgradcam(acts: Tensor, grads: Tensor | None, class_weights: Tensor | None, eps: float = 1e-7) -> Tensor:
    """XGrad-CAM (Fu et al. 2020, arXiv 2008.02312): ``w_k = sum_ij g_kij A_kij / (sum_ij A_kij + eps)``."""
    grads = _gradients(grads, "XGrad-CAM")
    numerator = (grads * acts[:, None]).sum(dim=(-2, -1))
    weights = numerator / (acts.sum(dim=(-2, -1))[:, None, :] + eps)
    return _weighted_sum(acts, weights)


def layercam(acts: Tensor, grads: Tensor | None, class_weights: Tensor | None) -> Tensor:
    """LayerCAM (Jiang et al. 2021, IEEE TIP): ``M = sum_k ReLU(g_k) * A_k`` element-wise."""
    grads = _gradients(grads, "LayerCAM")
    return (grads.clamp(min=0) * acts[:, None]).sum(dim=2)


@dataclass(frozen=True)
class CamMethod:
    """A method and what it needs from the engine."""

    name: str
    function: Callable[[Tensor, Tensor | None, Tensor | None], Tensor]
    needs_gradients: bool
    needs_head_weights: bool


METHODS: dict[str, CamMethod] = {
    "cam": CamMethod("cam", cam, needs_gradients=False, needs_head_weights=True),
    "gradcam": CamMethod("gradcam", gradcam, needs_gradients=True, needs_head_weights=False),
    "gradcampp": CamMethod("gradcampp", gradcampp, needs_gradients=True, needs_head_weights=False),
    "hirescam": CamMethod("hirescam", hirescam, needs_gradients=True, needs_head_weights=False),
    "xgradcam": CamMethod("xgradcam", xgradcam, needs_gradients=True, needs_head_weights=False),
    "layercam": CamMethod("layercam", layercam, needs_gradients=True, needs_head_weights=False),
}


def get_method(name: str) -> CamMethod:
    """Look a method up by name; a clear error lists the known ones."""
    if name not in METHODS:
        raise OptionError("method", f"{name!r} is not a known method; choose one of {', '.join(METHODS)}")
    return METHODS[name]
