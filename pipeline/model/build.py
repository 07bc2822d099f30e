"""Building the model to audit: the built-in default, torchvision or timm by name, or any ``_target_``.

Nothing is downloaded: a checkpoint is a local file loaded with ``torch.load(weights_only=True)``, and a
request for published weights (``model.weights=DEFAULT``) is honoured only when the file is already in
torch's local hub cache.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class BuiltModel:
    """A model ready for the audit, with what the data side needs to know about it."""

    module: nn.Module
    # The model's own class list, ``(keys, names)`` in output order, from its metadata (a checkpoint's
    # ``classes``, torchvision weights' categories, timm's ImageNet info): used when ``data.classes`` is null.
    classes: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    classes_bind: bool = False  # the checkpoint itself names them: a data class list must be the same
    mean: tuple[float, float, float] | None = None  # normalisation the weights expect, when known
    std: tuple[float, float, float] | None = None
    input_size: int | None = None
    info: dict = field(default_factory=dict)
    # What the weights' metadata says about preprocessing (keys ``size``, ``resize_size``, ``interpolation``),
    # used where the data config says ``auto``; ``preprocess_source`` names where it came from.
    preprocess: dict = field(default_factory=dict)
    preprocess_source: str | None = None

    @property
    def class_keys(self) -> list[str] | None:
        """The output order a checkpoint was trained on, when it names its classes (else None)."""
        return list(self.classes[0]) if self.classes_bind and self.classes else None


def load_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a checkpoint safely: a bare state dict, or one nested under ``state_dict`` / ``model``.

    ``module.`` prefixes (DataParallel / DDP) are stripped. Returns the state dict and the rest of the
    checkpoint (e.g. ``classes``, ``mean``, ``std``) for metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.checkpoint={str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refuses any pickled Python object that is not a tensor or plain container: a
        # checkpoint from an untrusted source can run code when unpickled, so we never retry without it.
        # The useful line names the refused global ("... unsupported GLOBAL os.makedirs ..."); torch's first
        # line only suggests weights_only=False, which is exactly what must not be done with such a file.
        lines = [line.strip() for line in str(error).split("WeightsUnpickler error:")[-1].splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line.upper()), lines[0] if lines else type(error).__name__)
        raise ValueError(
            f"model.checkpoint={str(path)!r} was refused: it holds Python objects, not only tensors ({reason})"
        ) from None
    extra: dict = {}
    state = checkpoint
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model"):
            if key in checkpoint and isinstance(checkpoint[key], dict):
                state = checkpoint[key]
                extra = {k: v for k, v in checkpoint.items() if k != key}
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"model.checkpoint={str(path)!r} holds no state dict of tensors")
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    return state, extra


def infer_num_classes(state: dict[str, torch.Tensor]) -> int | None:
    """The output width of the last 2-D weight in a state dict (the classifier), if any."""
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(matrices[-1].shape[0]) if matrices else None


def torchvision_weights(name: str, weights: str):
    """The torchvision weights enum member ``weights`` (``DEFAULT`` or a member name) of model ``name``."""
    import torchvision

    weights_enum = torchvision.models.get_model_weights(name)
    try:
        return weights_enum.DEFAULT if weights == "DEFAULT" else weights_enum[weights]
    except KeyError:
        raise ValueError(f"model.weights={weights} is not one of {[w.name for w in weights_enum]} for {name}") from None


def torchvision_preprocess(weights) -> tuple[dict, tuple, tuple]:
    """Preprocessing a torchvision weights enum member was evaluated with: ``(preprocess, mean, std)``.

    Read from ``weights.transforms()`` (an ``ImageClassification``: resize the shorter side to
    ``resize_size``, centre crop ``crop_size``, antialiased); nothing is downloaded.
    """
    transform = weights.transforms()
    preprocess = {
        "size": int(transform.crop_size[0]),
        "resize_size": int(transform.resize_size[0]),
        "interpolation": str(transform.interpolation.value),
    }
    return preprocess, tuple(float(v) for v in transform.mean), tuple(float(v) for v in transform.std)


def imagenet_1k_wnids() -> tuple[str, ...] | None:
    """The 1,000 ILSVRC-2012 WordNet ids in the standard output order, from timm's dataset info when timm
    is installed (ILSVRC XML annotations name classes by WordNet id); None without timm."""
    try:
        from timm.data import ImageNetInfo
    except ImportError:
        return None
    info = ImageNetInfo("imagenet-1k")
    return tuple(info.index_to_label_name(i) for i in range(info.num_classes()))


def torchvision_classes(weights) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``(keys, names)`` of a torchvision weights enum member: its ``categories`` as names; for the
    ImageNet-1k categories the keys are the WordNet ids (when timm is installed to supply them)."""
    names = tuple(weights.meta.get("categories") or ())
    if not names:
        return None
    wnids = imagenet_1k_wnids() if len(names) == 1000 else None
    return (wnids or names), names


def timm_classes(module: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``(keys, names)`` of a timm model whose head is an ImageNet subset timm knows (WordNet ids and the
    first word group of each description), when the head's width matches; else None."""
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset
    except ImportError:
        return None
    subset = infer_imagenet_subset(module)
    if not subset:
        return None
    info = ImageNetInfo(subset)
    if getattr(module, "num_classes", info.num_classes()) != info.num_classes():
        return None
    keys = tuple(info.index_to_label_name(i) for i in range(info.num_classes()))
    return keys, tuple(info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes()))


def checkpoint_classes(extra: dict) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``(keys, names)`` a checkpoint states: ``classes`` (list of str) and optionally ``class_names``."""
    keys = extra.get("classes")
    if not isinstance(keys, (list, tuple)) or not keys or not all(isinstance(k, str) for k in keys):
        return None
    names = extra.get("class_names")
    if not isinstance(names, (list, tuple)) or len(names) != len(keys) or not all(isinstance(n, str) for n in names):
        names = keys
    return tuple(keys), tuple(names)


def timm_preprocess(pretrained_cfg: dict) -> dict:
    """Preprocessing from a timm ``pretrained_cfg``: ``input_size``, ``interpolation`` and, for its centre
    crop, ``resize_size = floor(size / crop_pct)`` as timm's own evaluation transform computes it."""
    out: dict = {}
    if pretrained_cfg.get("input_size"):
        out["size"] = int(pretrained_cfg["input_size"][-1])
    if pretrained_cfg.get("interpolation"):
        out["interpolation"] = str(pretrained_cfg["interpolation"])
    if "size" in out and pretrained_cfg.get("crop_pct"):
        out["resize_size"] = int(math.floor(out["size"] / float(pretrained_cfg["crop_pct"])))
    return out


def checkpoint_preprocess(extra: dict) -> dict:
    """Preprocessing a checkpoint states next to its tensors (``input_size``/``size``, ``resize_size``,
    ``interpolation``), as this project's own checkpoints do."""
    out: dict = {}
    size = extra.get("input_size", extra.get("size"))
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        out["size"] = int(size)
    if isinstance(extra.get("resize_size"), (int, float)) and not isinstance(extra.get("resize_size"), bool):
        out["resize_size"] = int(extra["resize_size"])
    if isinstance(extra.get("interpolation"), str):
        out["interpolation"] = extra["interpolation"]
    return out


def build_torchvision(name: str, num_classes: int | None, weights: str | None) -> nn.Module:
    """A torchvision classification model by name, with weights only from the local cache."""
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError as error:
        raise ValueError(f"model.name={name!r} is not a torchvision classification model") from error
    if weights:
        chosen = torchvision_weights(name, weights)
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(chosen.url)
        if not cached.is_file():
            raise ValueError(
                f"model.weights={weights} needs {cached.name}, which is not in the local cache "
                f"({cached.parent}); this tool never downloads: copy the file there or use model.checkpoint"
            )
        model = builder(weights=None, num_classes=len(chosen.meta["categories"]))
        model.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
        return model
    return builder(weights=None, **({"num_classes": num_classes} if num_classes else {}))


def build_timm(name: str, num_classes: int | None) -> nn.Module:
    """A timm model by name (optional dependency), without pretrained weights."""
    try:
        import timm
    except ImportError as error:
        raise ValueError(f"model.name=timm:{name} needs timm: pip install 'cam-audit[timm]'") from error
    try:
        kwargs: dict[str, Any] = {"num_classes": num_classes} if num_classes else {}
        return timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as error:
        raise ValueError(f"model.name=timm:{name} is not a timm model: {error}") from error


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], by_position: bool = False) -> None:
    """Load a state dict strictly; ``by_position`` pairs tensors in order (same shapes, other names)."""
    if by_position:
        own = model.state_dict()
        if len(own) != len(state):
            raise ValueError(f"checkpoint has {len(state)} tensors, the model {len(own)}: cannot load by position")
        mapped = {}
        for (name, target), (source_name, tensor) in zip(own.items(), state.items()):
            if target.shape != tensor.shape:
                raise ValueError(
                    f"checkpoint tensor {source_name} {tuple(tensor.shape)} does not fit {name} {tuple(target.shape)}"
                )
            mapped[name] = tensor
        state = mapped
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
