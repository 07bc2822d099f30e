"""Every config group composes, every option is commented, and the fixed-key groups follow their schema."""

from dataclasses import asdict

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from pipeline.errors import ConfigError
from pipeline.settings import SCHEMAS, settings_from_config
from tests.helpers_corpus import CONF

# conf/base/ holds what every option of a group shares (conf/base/<group>.yaml); it is not a group itself.
# conf/hydra/ holds options of Hydra's own groups (hydra/launcher: tests/run/test_shard_launchers.py).
GROUPS = {
    group.name: sorted(p.stem for p in group.glob("*.yaml"))
    for group in CONF.iterdir()
    if group.is_dir() and group.name not in ("base", "hydra")
}
BASES = {path.stem for path in (CONF / "base").glob("*.yaml")}


def file_values(group: str, option: str) -> dict:
    """What ``group=option`` should put under ``cfg.<group>``: the group's base file (if any), then the
    option's own file on top, merged key by key (``preprocess.mode`` of an option replaces that one key)."""
    layers = []
    for path in ([CONF / "base" / f"{group}.yaml"] if group in BASES else []) + [CONF / group / f"{option}.yaml"]:
        layer = OmegaConf.load(path)
        layer.pop("defaults", None)
        layers.append(layer)
    return OmegaConf.to_container(OmegaConf.merge(*layers), resolve=False)


def test_default_config_composes_with_every_group(compose_config):
    cfg = compose_config([])
    assert {"data", "model", "cam", "scores", "report", "runtime"} <= set(GROUPS)
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
    assert OmegaConf.to_container(cfg[group], resolve=False) == file_values(group, option)
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


@pytest.mark.parametrize("group", list(SCHEMAS))
def test_every_file_of_a_fixed_key_group_names_its_schema(group):
    """Each option names the schema, directly or through its group's base file (which names it)."""
    if group in BASES:
        assert OmegaConf.load(CONF / "base" / f"{group}.yaml").defaults == [f"/schema/{group}@_here_", "_self_"]
    expected = [f"/base/{group}@_here_" if group in BASES else f"/schema/{group}@_here_", "_self_"]
    for path in (CONF / group).glob("*.yaml"):
        assert OmegaConf.load(path).defaults == expected, path


def test_method_files_hold_only_what_differs():
    """A cam option file states its method and nothing the base file already says (no copies)."""
    base = file_values("cam", "gradcam").keys() - {"method"}
    for option in GROUPS["cam"]:
        own = OmegaConf.to_container(OmegaConf.load(CONF / "cam" / f"{option}.yaml"), resolve=False)
        own.pop("defaults")
        assert set(own) == {"method"} and not (set(own) & base), option


@pytest.mark.parametrize("group", list(SCHEMAS))
def test_schema_defaults_are_the_default_files_values(default_cfg, group):
    """The dataclass defaults (used when a settings object is made in code) equal what a run composes."""
    assert asdict(SCHEMAS[group]()) == OmegaConf.to_container(default_cfg[group], resolve=True)


def test_settings_are_the_composed_values(compose_config):
    settings = settings_from_config(
        compose_config(["cam=layercam", "scores.taus=[0.2,0.4]", "report.shortcuts.grid=4"])
    )
    assert settings.cam.method == "layercam" and settings.scores.taus == [0.2, 0.4]
    assert settings.report.shortcuts.grid == 4 and settings.report.triage.on_object_min_excess_energy == 0.2
    assert settings.scores.tolerance == 15.0 and isinstance(settings.scores.tolerance, float)


SCHEMA_ERRORS = {
    "scores.tolerence=3": "scores.tolerence",  # unknown key
    "scores.tolerance=abc": "scores.tolerance",  # wrong type
    "cam.topk=2": "cam.topk",
    "cam.top_k=1.5": "cam.top_k",
    "runtime.num_workers=two": "runtime.num_workers",
    "report.shortcuts.seed=x": "report.shortcuts.seed",
    "report.triage.on_object_min_excess=0.3": "report.triage.on_object_min_excess",
}


@pytest.mark.parametrize("override", list(SCHEMA_ERRORS))
def test_schema_refuses_unknown_key_and_wrong_type_while_composing(compose_config, override):
    with pytest.raises(ConfigCompositionException) as error:
        compose_config([override])
    assert error.value.__cause__.full_key == SCHEMA_ERRORS[override]


@pytest.mark.parametrize(
    "override, option", [("+scores.extra=1", "scores.extra"), ("+report.triage.x=2", "report.triage.x")]
)
def test_key_added_with_plus_is_refused_when_the_settings_are_built(compose_config, override, option):
    """Hydra adds a ``+key`` past the schema; building the settings (first step of prepare) refuses it."""
    with pytest.raises(ConfigError) as error:
        settings_from_config(compose_config([override]))
    assert error.value.option == option
