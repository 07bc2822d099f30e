"""Every enumerated option is checked before the run is accepted (issue 21.2): a bad value is one
ConfigError naming the option, raised before anything is built or written, so no run folder is left."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.options import RULES
from tests.helpers_corpus import base_overrides, good_dataset, run_cli_here, run_in_process

# Every option whose rule is a list of allowed values (or a device name), with a value none allows.
BAD_VALUES = {
    "cam.method": "gradcam++",
    "cam.class_score": "probability",
    "scores.space": "stored",
    "report.overlays": "some",
    "report.probabilities_dtype": "float64",
    "runtime.device": "gpu",
    "runtime.precision": "fp8",
    "runtime.channels_last": "maybe",
    "runtime.log_format": "xml",
    "runtime.ranks_from": "slurm",
    "data.decode": "nvjpeg",
    "data.metadata_missing": "ignore",
    "data.preprocess.mode": "crop",
    "data.preprocess.interpolation": "lanczos",
    "data.preprocess.boxes_refer_to": "display",
}


def test_the_table_covers_every_enumerated_rule():
    """A new enumerated option gets a bad value here (its rule's requirement lists the choices)."""
    enumerated = {r.option for r in RULES if r.requirement.startswith("one of") or r.option == "runtime.device"}
    assert enumerated - {"data.box_units", "data.synthetic.split"} <= set(BAD_VALUES)


@pytest.mark.parametrize("option,value", sorted(BAD_VALUES.items()))
def test_a_bad_enumerated_value_is_refused_before_anything_is_written(tmp_path, option, value):
    good_dataset(tmp_path / "data", 2)
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache", **{option: value})
    with pytest.raises(ConfigError) as refused:
        run_in_process(overrides, tmp_path / "run")
    assert refused.value.option == option and repr(value) in refused.value.reason
    assert not (tmp_path / "run").exists()  # refused before the folder was made, the model built or trained


def test_report_overlays_typo_through_the_command_line_leaves_no_trace(tmp_path):
    """It was refused only after the run was accepted and the model built, leaving .hydra/, the job log and
    parts/fingerprint.json behind."""
    good_dataset(tmp_path / "data", 2)
    result = run_cli_here(
        base_overrides(tmp_path / "data", tmp_path / "cache", **{"report.overlays": "some"}), tmp_path / "run"
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("cam-audit: configuration error: report.overlays:")
    assert not (tmp_path / "run").exists()
