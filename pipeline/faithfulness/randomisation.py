"""Cascading model-parameter randomisation (Adebayo et al. 2018, *Sanity Checks for Saliency Maps*,
NeurIPS, arXiv 1810.03292; Quantus ``MPRT`` with ``layer_order="top_down"``): the stages, and how a stage is
randomised.

**Stages** (:func:`randomisation_stages`): the model's blocks from the output down, one stage each: first the
classifier head (the last block to run: a linear layer, ``fc``, timm's ``classifier`` or ``head``), then the
last block of the trunk, and so on. A module's block is found by following its dotted name down through
the containers (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``) to the first module that is not one:
a ResNet's ``layer4.2`` (a bottleneck), timm's ``blocks.6.0``, the built-in CNN's ``features.16`` (a
convolution). A block whose parameters are all vectors (a norm layer, e.g. the batch norm after a
convolution, or a ViT's final norm) joins the block that ran before it. The order is the order of
execution, found with one forward of one input. The stages do not depend on the target layer: a map made
below the randomised blocks changes only through its gradients.

**Randomising** a module re-initialises it with its own ``reset_parameters()``, as Quantus does, and with
Quantus's seeding: ``torch.manual_seed(seed + 1)`` before each module (so that Quantus, given the same
modules in the same order, draws the same weights). Modules without ``reset_parameters()`` keep their
weights, as in Quantus; the stage lists them (``kept``). A batch norm's reset sets its running statistics
to 0 and 1 and its affine weights to 1 and 0. The global random state is restored afterwards.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass
class Stage:
    """One randomisation stage: ``name`` (``head`` or the block's name) and the dotted names of the modules
    with parameters it re-initialises (``modules``) or cannot (``kept``: no ``reset_parameters()``)."""

    name: str
    modules: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def block_name(model: nn.Module, module_name: str) -> str:
    """The block ``module_name`` belongs to: its dotted name followed down through containers to the first
    module that is not a container (the module itself when none of its parents is)."""
    parts = module_name.split(".")
    for depth in range(1, len(parts) + 1):
        prefix = ".".join(parts[:depth])
        if not isinstance(model.get_submodule(prefix), CONTAINERS):
            return prefix
    return module_name


def execution_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The modules that own parameters, in the order their forward finished on ``example`` (first call
    only; a module that never runs is left out)."""
    finished: list[str] = []
    handles = [
        module.register_forward_hook(lambda *_, name=name: finished.append(name) if name not in finished else None)
        for name, module in model.named_modules()
        if name and _owns_parameters(module)
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return finished


def randomisation_stages(model: nn.Module, example: torch.Tensor, limit: int) -> list[Stage]:
    """The model's blocks from the last one to run down (see the module's docstring), at most ``limit``.
    ``example`` is one input ``[1, 3, S, S]`` on the model's device."""
    modules = dict(model.named_modules())
    blocks: list[Stage] = []
    for name in execution_order(model, example):
        block = block_name(model, name)
        vectors_only = all(p.dim() <= 1 for p in modules[name].parameters(recurse=False))
        if not blocks or not (blocks[-1].name == block or (vectors_only and block == name)):
            blocks.append(Stage(block))
        _add(blocks[-1], name, modules[name])  # same block, or a norm layer joining the block before it
    return blocks[::-1][:limit]


def _add(stage: Stage, name: str, module: nn.Module) -> None:
    (stage.modules if hasattr(module, "reset_parameters") else stage.kept).append(name)


def randomise(model: nn.Module, module_names: list[str], seed: int) -> None:
    """Re-initialise the named modules of ``model`` in place, in reverse order of ``named_modules`` (the
    order Quantus's ``top_down`` walks), each after ``torch.manual_seed(seed + 1)``; the random state of the
    CPU and of the model's CUDA device is restored afterwards."""
    chosen = set(module_names)
    ordered = [(name, module) for name, module in model.named_modules() if name in chosen][::-1]
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        for _, module in ordered:
            torch.manual_seed(seed + 1)
            module.reset_parameters()


def detached_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` without the forward hooks a :class:`~pipeline.maps.engine.CamEngine` left on
    it (a hook copied with the module would still report to the original engine)."""
    from pipeline.maps.engine import CamEngine

    duplicate = copy.deepcopy(model)
    for module in duplicate.modules():
        for key, hook in list(module._forward_hooks.items()):
            if isinstance(getattr(hook, "__self__", None), CamEngine):
                del module._forward_hooks[key]
    return duplicate
