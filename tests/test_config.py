"""Every config group composes, and every option is commented."""

import pytest
from omegaconf import OmegaConf

from tests.helpers_corpus import CONF

GROUPS = {group.name: sorted(p.stem for p in group.glob("*.yaml")) for group in CONF.iterdir() if group.is_dir()}


def test_default_config_composes_with_every_group(compose_config):
    cfg = compose_config([])
    assert set(GROUPS) == {"data", "model", "cam", "scores", "report", "runtime"}
    for group in GROUPS:
        assert group in cfg, group
    assert cfg.data.source == "synthetic" and cfg.model.name == "default" and cfg.cam.method == "gradcam"


@pytest.fixture(scope="module")
def default_cfg(compose_config):
    return compose_config([])


@pytest.mark.parametrize("group,option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_option_of_every_group_composes(compose_config, default_cfg, group, option):
    """Choosing ``group=option`` puts exactly that file's values under ``cfg.<group>`` (nothing in
    config.yaml or another option overrides them) and leaves every other group at its default."""
    cfg = compose_config([f"{group}={option}"])
    from_file = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"), resolve=False)
    assert OmegaConf.to_container(cfg[group], resolve=False) == from_file
    for other in GROUPS:
        if other != group:
            assert OmegaConf.to_container(cfg[other], resolve=False) == OmegaConf.to_container(
                default_cfg[other], resolve=False
            ), other


def test_cam_method_files_name_their_method(compose_config):
    for option in GROUPS["cam"]:
        assert compose_config([f"cam={option}"]).cam.method == option


def test_every_yaml_option_is_commented():
    for path in CONF.rglob("*.yaml"):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or stripped.startswith("- ") or stripped.endswith(":"):
                continue  # comments, list entries and section headers
            previous = lines[number - 2].strip() if number > 1 else ""
            assert "#" in line or previous.startswith("#"), (
                f"{path.relative_to(CONF)}:{number} has no comment: {line!r}"
            )
