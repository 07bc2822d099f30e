"""Texts that said something false (issue 20.6): summary.json's definitions.empty_map said "NaN" where the
tables write null; a manifest path outside the root suggested ``allow_outside_root=True``, which is no option
a user can type (the option is ``data.allow_outside_root=true``)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.data.manifest import read_manifest
from pipeline.data.records import ClassList
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process


def test_summary_says_an_empty_maps_scores_are_null(tmp_path: Path):
    good_dataset(tmp_path / "data", 3)
    run_in_process(base_overrides(tmp_path / "data", tmp_path / "cache"), tmp_path / "run")
    text = json.loads((tmp_path / "run" / "summary.json").read_text())["definitions"]["empty_map"]
    assert "null" in text and "NaN" not in text


def test_a_manifest_path_outside_the_root_names_the_option(tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"")
    path = tmp_path / "data" / "m.jsonl"
    path.write_text(json.dumps({"path": "../secret.jpg", "label": 0}) + "\n")
    [record] = read_manifest(path, ClassList(("n001",), ("cat",)))
    assert "set data.allow_outside_root=true to accept it" in record.problem.message
    assert "allow_outside_root=True" not in record.problem.message


def test_the_reworded_empty_map_text_is_no_definition_change():
    """A reference pinned before the rewording must not show "DEFINITIONS CHANGED" every night after it."""
    import inspect

    from pipeline.compare import definition_differences
    from pipeline.reports.finalize import definition_choices

    new = "constant after ReLU: peak-based scores null (no peak), counted in empty_maps"
    assert new in inspect.getsource(definition_choices)  # the text the runs write now
    old = {"empty_map": "constant after ReLU: peak-based scores NaN", "cam_method": "gradcam"}
    assert definition_differences(old, {**old, "empty_map": new}) == []
    assert definition_differences(old, {**old, "empty_map": "constant: something else"}) != []
