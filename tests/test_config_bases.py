"""The data and model groups state what their options share once (``conf/base/<group>.yaml``), and moving
the shared keys there changed no composed value.

``tests/composed_data_model.json`` holds ``cfg.data`` and ``cfg.model`` for every option of the two groups as
they composed before the base files existed (each option a full copy of the shared keys), unresolved
(``???`` and ``${...}`` as written). A run's configuration, and so its resume fingerprint
(``pipeline/run_folder.py``), must stay what it was: the same keys, the same values.
"""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

PINNED = json.loads((Path(__file__).with_name("composed_data_model.json")).read_text())


@pytest.mark.parametrize("group,option", [(g, o) for g, options in PINNED.items() for o in options])
def test_composed_option_is_the_pinned_one(compose_config, group, option):
    assert OmegaConf.to_container(compose_config([f"{group}={option}"])[group], resolve=False) == PINNED[group][option]
