"""Comparing two audits (``python -m pipeline.compare``): the numbers follow from the two runs' rows."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.compare import main as compare_main
from pipeline.reports.compare import compare_runs
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 12 images audited by two differently seeded models, by another method, and in part."""
    tmp = tmp_path_factory.mktemp("compare")
    good_dataset(tmp / "data", 12)
    variants = {"night1": {}, "night2": {"+model.kwargs.seed": 1}, "layercam": {"cam.method": "layercam"}, "part": {"data.limit": 8}}
    for name, extra in variants.items():
        run_in_process(base_overrides(tmp / "data", tmp / "cache", **extra), tmp / name)
    return tmp


def test_changes_follow_from_the_two_runs(runs):
    result = compare_runs(runs / "night1", runs / "night2")
    before = pd.read_parquet(runs / "night1" / "samples.parquet").set_index("id").sort_index()
    after = pd.read_parquet(runs / "night2" / "samples.parquet").set_index("id").sort_index()
    assert result["definitions"] == [] and result["overall"]["images_compared"] == 12
    assert result["overall"]["broke"] == int((before["correct"] & ~after["correct"]).sum())
    assert result["overall"]["fixed"] == int((~before["correct"] & after["correct"]).sum())
    assert (before["pred"] != after["pred"]).any()  # the two seeds do disagree: the test compares something
    assert result["overall"]["delta"]["accuracy"] == pytest.approx(after["correct"].mean() - before["correct"].mean())
    samples = result["samples"].set_index("id")
    assert samples["true_energy_in_box_delta"].to_numpy() == pytest.approx(
        (after["true_energy_in_box"] - before["true_energy_in_box"]).to_numpy(), nan_ok=True)
    classes = result["classes"].set_index("label")
    for label, group in before.groupby("label"):
        assert classes.loc[label, "accuracy_baseline"] == pytest.approx(group["correct"].mean())
        assert classes.loc[label, "accuracy_current"] == pytest.approx(after.loc[group.index, "correct"].mean())


def test_a_definition_change_is_reported_first(runs):
    result = compare_runs(runs / "night1", runs / "layercam")
    assert {"choice": "cam_method", "baseline": "gradcam", "current": "layercam"} in result["definitions"]
    assert result["overall"]["broke"] == result["overall"]["fixed"] == 0  # same model: same predictions


def test_images_in_one_run_only_are_counted_not_compared(runs):
    result = compare_runs(runs / "night1", runs / "part")
    assert result["overall"]["images_compared"] == 8 and result["overall"]["only_in_baseline"] == 4
    assert result["overall"]["only_in_current"] == 0


def test_cli_writes_the_comparison_and_gates_on_accuracy(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert compare_main([str(runs / "night1"), str(runs / "night2"), "--out", str(out), "--max-accuracy-drop", "1.0"]) == 0
    written = json.loads((out / "compare.json").read_text())
    assert written["overall"]["images_compared"] == 12
    assert len(pd.read_parquet(out / "samples_diff.parquet")) == 12
    assert "images broke" in capsys.readouterr().out
    # any change at all counts as a drop larger than -1: the gate trips
    assert compare_main([str(runs / "night1"), str(runs / "night2"), "--out", str(out), "--max-accuracy-drop", "-1"]) == 1
    assert compare_main([str(tmp_path), str(runs / "night2")]) == 2  # not a finished run
