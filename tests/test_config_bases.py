"""The data and model groups state what their options share once (``conf/base/<group>.yaml``), and moving
the shared keys there changed no composed value.

``tests/composed_data_model.json`` holds ``cfg.data`` and ``cfg.model`` for every option of the two groups as
they composed before the base files existed (each option a full copy of the shared keys), unresolved
(``???`` and ``${...}`` as written). A run's configuration, and so its resume fingerprint
(``pipeline/run_folder.py``), must stay what it was: the same keys, the same values.
"""

import ast
import importlib
import json
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from pipeline.settings import SCHEMAS
from tests.helpers_corpus import CONF, MAIN

PINNED = json.loads((Path(__file__).with_name("composed_data_model.json")).read_text())


@pytest.mark.parametrize("group,option", [(g, o) for g, options in PINNED.items() for o in options])
def test_composed_option_is_the_pinned_one(compose_config, group, option):
    assert OmegaConf.to_container(compose_config([f"{group}={option}"])[group], resolve=False) == PINNED[group][option]


# ---- no copies: an option file names its group's base and restates none of its values ----------------------

BASES = sorted(path.stem for path in (CONF / "base").glob("*.yaml"))


def _own(group: str, option: str) -> DictConfig:
    """The option's file without its defaults list: what it adds to (or changes in) the base."""
    own = OmegaConf.load(CONF / group / f"{option}.yaml")
    own.pop("defaults", None)
    return own


def _leaves(node, prefix: str = "") -> dict[str, object]:
    """``dotted.key -> value`` for every leaf of a plain dict (a list or ``{}`` is one value)."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    out: dict[str, object] = {}
    for key, value in node.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


@pytest.mark.parametrize("group,option", [(g, p.stem) for g in BASES for p in sorted((CONF / g).glob("*.yaml"))])
def test_an_option_names_its_base_and_restates_none_of_its_values(group, option):
    """``- /base/<group>@_here_`` then ``_self_``; every key the option shares with the base has another value
    there (a copy of the base's value would be a second place to change), and none is ``???`` over a base
    value: OmegaConf keeps the value that ``???`` is merged over, so the option would silently not be required."""
    assert OmegaConf.load(CONF / group / f"{option}.yaml").defaults == [f"/base/{group}@_here_", "_self_"]
    base = OmegaConf.load(CONF / "base" / f"{group}.yaml")
    base.pop("defaults", None)
    base_leaves = _leaves(OmegaConf.to_container(base, resolve=False))
    for key, value in _leaves(OmegaConf.to_container(_own(group, option), resolve=False)).items():
        if key in base_leaves:
            assert value != base_leaves[key], f"conf/{group}/{option}.yaml repeats {key}: {value!r} of the base"
            assert value != "???", f"conf/{group}/{option}.yaml: {key}: ??? cannot override the base's value"


# ---- defaults stated once --------------------------------------------------------------------------------


@pytest.mark.parametrize("group,option", [(g, p.stem) for g in SCHEMAS for p in sorted((CONF / g).glob("*.yaml"))])
def test_every_option_of_a_typed_group_agrees_with_its_schema_defaults(compose_config, group, option):
    """The dataclass defaults (pipeline/settings.py: a settings object made in code, a key an older run's
    record lacks) and the YAML state the same values: each option composes to the schema's defaults with
    only the option file's own keys changed (``cam.method``), so neither can drift from the other."""
    expected = OmegaConf.merge(OmegaConf.structured(SCHEMAS[group]), _own(group, option))
    composed = compose_config([f"{group}={option}"])[group]
    assert OmegaConf.to_container(composed, resolve=True) == OmegaConf.to_container(expected, resolve=True)


# Where the code reads a data or model option with a fallback for a configuration that lacks it
# (``<receiver>.get("<key>", <fallback>)``), the fallback is the YAML's value: the receivers and the part of
# the configuration each one holds.
RECEIVERS = {"cfg.data": "data", "data_cfg": "data", "cfg.model": "model", "model_cfg": "model"}
PREPROCESS_READER = ("pipeline/data/dataset.py", "options")  # resolve_preprocess(cfg.data.preprocess, ...)
# Fallbacks that deliberately differ from the YAML, and why.
FALLBACK_EXCEPTIONS = {
    # A configuration without the key (a run recorded before data.max_boxes existed, rebuilt by
    # `cam-audit merge` from its record) keeps what it ran with: no cap.
    "data.max_boxes": None,
}


def _code_fallbacks() -> list[tuple[str, str, object]]:
    """``(file:line, dotted option, fallback)`` for every such read in pipeline/."""
    found = []
    for path in sorted((MAIN / "pipeline").rglob("*.py")):
        relative = path.relative_to(MAIN).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and len(node.args) == 2
                and isinstance(node.args[0], ast.Constant)
            ):
                continue
            receiver = ast.unparse(node.func.value)
            prefix = RECEIVERS.get(receiver)
            if (relative, receiver) == PREPROCESS_READER:
                prefix = "data.preprocess"
            if prefix:  # imported only here: pipeline/__main__.py would start the CLI
                module = importlib.import_module(relative[: -len(".py")].replace("/", "."))
                fallback = eval(ast.unparse(node.args[1]), vars(module))  # a literal or a module constant
                found.append((f"{relative}:{node.lineno}", f"{prefix}.{node.args[0].value}", fallback))
    return found


def test_code_fallbacks_of_data_and_model_options_are_the_yaml_values():
    """The base file states an option's default; an option only some formats or sources have (``box_units``,
    ``allow_random_weights``) has the same value in each file that has it."""
    fallbacks = _code_fallbacks()
    assert {option for _, option, _ in fallbacks} >= {"data.preprocess.max_pixels", "data.decode", "model.layout"}
    for where, option, fallback in fallbacks:
        group, key = option.split(".", 1)
        if option in FALLBACK_EXCEPTIONS:
            assert fallback == FALLBACK_EXCEPTIONS[option], where
            continue
        base = OmegaConf.load(CONF / "base" / f"{group}.yaml")
        stated = OmegaConf.select(base, key, default="<absent>")
        if stated == "<absent>":
            in_files = {
                OmegaConf.select(_own(group, p.stem), key, default="<absent>") for p in (CONF / group).glob("*.yaml")
            }
            stated_values = in_files - {"<absent>"}
            assert len(stated_values) == 1, f"{where}: {option} is in no file, or differs between them: {stated_values}"
            (stated,) = stated_values
        assert fallback == stated, f"{where}: falls back to {fallback!r} for {option}; the YAML says {stated!r}"
