"""The ``model`` config group -> a :class:`~pipeline.model.build.BuiltModel`.

``model.name`` is a torchvision architecture, ``timm:<arch>``, a label for a ``_target_`` module, or a name of
:data:`NAMED_BUILDERS`: a model built, with the weights it manages itself, by a function outside this package
(the built-in default, ``pipeline/demo/sources.py``), named by its dotted path and imported on first use.
"""

from __future__ import annotations

import logging
import pkgutil
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.model.build import (
    BuiltModel,
    build_timm,
    build_torchvision,
    checkpoint_classes,
    checkpoint_preprocess,
    infer_num_classes,
    load_state_dict,
    load_weights_into,
    timm_classes,
    timm_preprocess,
    torchvision_classes,
    torchvision_preprocess,
    torchvision_weights,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
logger = logging.getLogger("pipeline.model")
# model.name -> "package.module:function" of its builder, ``(cache_dir, data_cfg) -> BuiltModel``: the model
# and its own trained weights (model.checkpoint is not read for it).
NAMED_BUILDERS: dict[str, str] = {"default": "pipeline.demo.sources:build_default_model"}


def build_model(model_cfg, cache_dir: Path, data_cfg=None) -> BuiltModel:
    """Build the model named by ``model_cfg`` (see ``conf/model/*.yaml``).

    Raises:
        ConfigError: naming the option when the model cannot be built or its weights cannot be loaded.
    """
    name = str(model_cfg.name)
    state: dict | None = None
    extra: dict = {}
    if model_cfg.get("checkpoint") and name not in NAMED_BUILDERS:
        try:  # read once: the torchvision branch also sizes its head from it
            state, extra = load_state_dict(model_cfg.checkpoint)
        except (ValueError, FileNotFoundError) as error:
            raise ConfigError("model.checkpoint", str(error).splitlines()[0]) from error
    try:
        built = _build_architecture(model_cfg, name, cache_dir, data_cfg, state)
    except ConfigError:
        raise
    except (ValueError, KeyError, ImportError, FileNotFoundError) as error:
        raise ConfigError("model.name", str(error)) from error
    random_weights = _random_weights(model_cfg, name)  # after the name is known to be a model
    if state is not None:
        _load_checkpoint(built, model_cfg, state, extra)
    if model_cfg.get("mean"):
        built.mean = tuple(model_cfg.mean)
    if model_cfg.get("std"):
        built.std = tuple(model_cfg.std)
    built.mean = built.mean or IMAGENET_MEAN
    built.std = built.std or IMAGENET_STD
    built.info["name"] = name
    built.info["random_weights"] = random_weights
    return built


def _build_architecture(model_cfg, name: str, cache_dir: Path, data_cfg, state) -> BuiltModel:
    """The module and what its source says about it: a ``_target_``, a named builder, ``timm:<arch>``
    or a torchvision architecture (sized from the checkpoint's ``state`` when ``num_classes`` is not set)."""
    if model_cfg.get("_target_"):
        import hydra.utils

        return BuiltModel(hydra.utils.instantiate({"_target_": model_cfg._target_, **(model_cfg.get("kwargs") or {})}))
    if name in NAMED_BUILDERS:
        return pkgutil.resolve_name(NAMED_BUILDERS[name])(cache_dir, data_cfg)
    if name.startswith("timm:"):
        module = build_timm(name[len("timm:") :], model_cfg.get("num_classes") or None)
        cfg = getattr(module, "pretrained_cfg", {}) or {}
        return BuiltModel(
            module,
            mean=tuple(cfg["mean"]) if "mean" in cfg else None,
            std=tuple(cfg["std"]) if "std" in cfg else None,
            preprocess=timm_preprocess(cfg),
            preprocess_source=f"timm pretrained_cfg of {name[len('timm:') :]}",
            classes=timm_classes(module),
        )
    state_classes = infer_num_classes(state) if state is not None else None
    module = build_torchvision(name, model_cfg.get("num_classes") or state_classes, model_cfg.get("weights"))
    built = BuiltModel(module)
    if model_cfg.get("weights"):
        chosen = torchvision_weights(name, str(model_cfg.weights))
        built.preprocess, built.mean, built.std = torchvision_preprocess(chosen)
        built.classes = torchvision_classes(chosen)
        built.preprocess_source = f"torchvision weights {name} {chosen.name}"
    return built


def _load_checkpoint(built: BuiltModel, model_cfg, state: dict, extra: dict) -> None:
    """Load ``state`` into the module; what the checkpoint states about its classes, preprocessing and
    normalisation describes these very weights, so it wins over the architecture's."""
    try:
        load_weights_into(built.module, state, by_position=bool(model_cfg.get("load_by_position")))
    except (ValueError, RuntimeError) as error:
        raise ConfigError("model.checkpoint", str(error).splitlines()[0]) from error
    built.info["checkpoint"] = str(model_cfg.checkpoint)
    stated_classes, stated_preprocess = checkpoint_classes(extra), checkpoint_preprocess(extra)
    if stated_classes:
        built.classes, built.classes_bind = stated_classes, True
    # Its preprocessing replaces the architecture's as a whole: a size from one and a crop ratio from the
    # other would describe neither.
    if stated_preprocess:
        built.preprocess = stated_preprocess
        built.preprocess_source = f"checkpoint {model_cfg.checkpoint}"
    if "mean" in extra and "std" in extra:
        built.mean, built.std = tuple(extra["mean"]), tuple(extra["std"])


def _random_weights(model_cfg, name: str) -> bool | None:
    """Whether the model will audit random weights: True for a torchvision or timm model built without
    ``model.weights`` or ``model.checkpoint``, False when weights are loaded (or a named builder's own),
    None for a ``_target_`` module without a checkpoint (its constructor decides).

    Raises:
        ConfigError: a torchvision or timm model without weights unless ``model.allow_random_weights=true``
            (an audit of random weights says nothing about a trained model, and it looks like one).
    """
    allowed = model_cfg.get("allow_random_weights", False)
    if not isinstance(allowed, bool):
        raise ConfigError("model.allow_random_weights", f"{allowed!r} is not true or false")
    if model_cfg.get("checkpoint") or name in NAMED_BUILDERS and not model_cfg.get("_target_"):
        return False
    if model_cfg.get("_target_"):
        return None
    if name.startswith("timm:"):
        option, fix = "model.checkpoint", "model.checkpoint=PATH (a local state dict)"
    elif model_cfg.get("weights"):
        return False
    else:
        option = "model.weights"
        fix = "model.checkpoint=PATH (a local state dict) or model.weights=DEFAULT (from torch's hub cache)"
    if not allowed:
        raise ConfigError(
            option,
            f"model.name={name} has no weights, so its maps would be a random network's: give {fix}, "
            "or model.allow_random_weights=true to audit random weights on purpose",
        )
    logger.warning(
        "model.allow_random_weights=true: %s has random weights; its maps and scores describe no trained model", name
    )
    return True
