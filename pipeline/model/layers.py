"""Finding the target layer and the linear head of a model."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.model.layout import FeatureLayout


def probe_model(
    model: nn.Module, input_size: int, device: torch.device | str = "cpu", layout: FeatureLayout = FeatureLayout()
) -> tuple[list[tuple[str, tuple[int, ...]]], torch.Tensor]:
    """One dummy forward: the modules whose output is a spatial map in ``layout`` (``[B, C, h, w]`` with
    ``h, w > 1`` for NCHW), in execution order, each with its map shape ``(C, h, w)``, and the model's output.

    A forward hook fires when a module *finishes*, so a container comes after its children: the last
    entry is the outermost module that produced the last spatial map (e.g. ``layer4`` of a ResNet).
    """
    seen: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(mod, inputs, output, name=name):
            if layout.accepts(output):
                seen.append((name, tuple(layout.to_map(output).shape[1:])))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            output = model(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return seen, output


def feature_map_candidates(
    model: nn.Module, input_size: int, device: torch.device | str = "cpu", layout: FeatureLayout = FeatureLayout()
) -> list[tuple[str, tuple[int, ...]]]:
    """The spatial-map modules of :func:`probe_model`, without the output."""
    return probe_model(model, input_size, device, layout)[0]


def resolve_target_layer(
    model: nn.Module,
    name: str,
    input_size: int,
    device: torch.device | str = "cpu",
    layout: FeatureLayout = FeatureLayout(),
    candidates: list[tuple[str, tuple[int, ...]]] | None = None,
) -> tuple[str, nn.Module, tuple[int, int, int]]:
    """The target layer by dotted name, or ``"auto"``, with its map shape ``(C, h, w)``; ``candidates`` from
    an earlier :func:`probe_model` saves the dummy forward.

    ``auto`` is the last module producing a spatial map (with ``model.num_features`` channels when the model
    states it, as timm models do); for a token model (ViT) the last block's first
    norm (``blocks.11.norm1``), the last place where the patch tokens still reach a class-token head (after
    it only the class token is read; pytorch-grad-cam recommends the same layer).

    Raises:
        ValueError: naming the candidates when ``name`` is not a module or does not output a map.
    """
    if candidates is None:
        candidates = feature_map_candidates(model, input_size, device, layout)
    names = [candidate for candidate, _ in candidates]
    if name == "auto":
        # A model that states its feature width (timm's num_features) has its maps there: an attention
        # tensor [B, heads, tokens, dims] can pass for a map, but not with that channel count.
        width = getattr(model, "num_features", None)
        usable = [n for n, shape in candidates if not isinstance(width, int) or shape[0] == width]
        if not usable:
            shown = ", ".join(names[-12:]) or "none"
            raise ValueError(
                f"auto found no module that outputs a spatial map in the {layout.kind} layout"
                + (f" with the model's {width} feature channels" if isinstance(width, int) else "")
                + f"; name one (and model.layout): candidates (last 12 of {len(names)}): {shown}"
            )
        norms = [n for n in usable if n.endswith("norm1")] if layout.kind == "tokens" else []
        name = (norms or usable)[-1]
    modules = dict(model.named_modules())
    if name not in modules or name not in names:
        shown = ", ".join(names[-12:]) or "none"
        raise ValueError(
            f"{name!r} is not a module with a spatial output ({layout.kind} layout); "
            f"candidates (last 12 of {len(names)}): {shown}"
        )
    shape = dict(candidates)[name]  # a map's shape after the layout: (C, h, w)
    return name, modules[name], (shape[0], shape[1], shape[2])


def find_linear_head(model: nn.Module, channels: int) -> torch.Tensor | None:
    """The weight ``[num_classes, channels]`` of the last ``nn.Linear`` taking ``channels`` inputs.

    CAM is only defined for global-average-pool + linear heads; this returns the weights of such a head
    when the last linear layer's input width equals the target layer's channel count, else None.
    """
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None or last.in_features != channels:
        return None
    return last.weight.detach()
