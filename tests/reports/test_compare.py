"""Comparing two audits (``cam-audit compare``): the numbers follow from the two runs' rows."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.cli import compare_main
from pipeline.compare import compare_runs
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 12 images audited by two differently seeded models, by another method, and in part."""
    tmp = tmp_path_factory.mktemp("compare")
    good_dataset(tmp / "data", 12)
    variants = {
        "night1": {},
        "night2": {"+model.kwargs.seed": 1},
        "layercam": {"cam.method": "layercam"},
        "part": {"data.limit": 8},
    }
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
        (after["true_energy_in_box"] - before["true_energy_in_box"]).to_numpy(), nan_ok=True
    )
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
    assert (
        compare_main([str(runs / "night1"), str(runs / "night2"), "--out", str(out), "--max-drop", "accuracy=1.0"]) == 0
    )
    written = json.loads((out / "compare.json").read_text())
    assert written["overall"]["images_compared"] == 12
    assert len(pd.read_parquet(out / "samples_diff.parquet")) == 12
    assert "images broke" in capsys.readouterr().out
    assert compare_main([str(tmp_path), str(runs / "night2")]) == 2  # not a finished run


def _fake_run(folder, correct: list[bool], start: int = 0):
    """A finished run's samples.parquet with the given correctness (what compare reads, nothing more)."""
    n = len(correct)
    folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "id": [f"img{start + i:03d}" for i in range(n)],
            "label": [0] * n,
            "label_name": ["cat"] * n,
            "pred": [0 if c else 1 for c in correct],
            "pred_name": ["cat" if c else "dog" for c in correct],
            "correct": correct,
            "true_energy_in_box": [0.5] * n,
            "true_energy_lift": [2.0] * n,
            "true_peak_row": [3.0] * n,
            "true_peak_col": [4.0] * n,
            "true_pointing_hit": [1.0] * n,
            "true_localised_tau015": [1.0] * n,
            "true_relevance_rank_accuracy": [0.5] * n,
            "true_empty": [0.0] * n,
        }
    ).to_parquet(folder / "samples.parquet")
    (folder / "summary.json").write_text("{}")


def test_accuracy_gate_trips_only_beyond_the_allowed_drop(tmp_path):
    _fake_run(tmp_path / "before", [True] * 40)
    _fake_run(tmp_path / "after", [True] * 30 + [False] * 10)  # accuracy 1.0 -> 0.75, 10 broke, 0 fixed: p = 0.002
    args = [str(tmp_path / "before"), str(tmp_path / "after"), "--out", str(tmp_path / "cmp")]
    assert compare_main(args + ["--max-drop", "accuracy=0.3"]) == 0  # significant, but within the allowed drop
    assert compare_main(args + ["--max-drop", "accuracy=0.2"]) == 1
    assert compare_main(args) == 0  # no gate asked for
    assert compare_main(args + ["--max-drop", "acuracy=0.2"]) == 2  # a misspelt metric is a usage error, not a pass
    _fake_run(tmp_path / "elsewhere", [False] * 10, start=100)  # no image in common: not a pass
    assert compare_main([str(tmp_path / "before"), str(tmp_path / "elsewhere"), "--max-drop", "accuracy=0.5"]) == 2


def test_the_diff_tables_describe_every_column_and_hold_each_number_once(runs, tmp_path):
    """Issue 20.3: the compare tables had no column descriptions, and classes_diff held accuracy_baseline beside
    accuracy_baseline_tested (the same number from the per-class tests, unexplained)."""
    import pyarrow.parquet as pq

    from pipeline.reports.schema import descriptions

    out = tmp_path / "cmp"
    assert compare_main([str(runs / "night1"), str(runs / "night2"), "--out", str(out), "--resamples", "200"]) == 0
    for name in ("samples_diff.parquet", "classes_diff.parquet"):
        described = descriptions(pq.read_schema(out / name))
        assert all(len(text) > 10 for text in described.values()), {k: v for k, v in described.items() if len(v) <= 10}
    classes = pd.read_parquet(out / "classes_diff.parquet")
    assert not [c for c in classes.columns if c.endswith("_tested")] and classes.columns.is_unique
    described = descriptions(pq.read_schema(out / "classes_diff.parquet"))
    assert "Holm" in described["accuracy_p_holm"] and "95% paired bootstrap" in described["true_energy_in_box_low"]
    before = pd.read_parquet(runs / "night1" / "samples.parquet").set_index("id")
    after = pd.read_parquet(runs / "night2" / "samples.parquet").set_index("id")
    for _, row in classes.iterrows():  # one accuracy per class, and it is the per-class test's (broke / fixed)
        ids = before.index[before["label"] == row["label"]]
        assert row["accuracy_baseline"] == pytest.approx(before.loc[ids, "correct"].mean())
        assert row["accuracy_current"] == pytest.approx(after.loc[ids, "correct"].mean())
        assert row["accuracy_delta"] == pytest.approx((row["fixed"] - row["broke"]) / row["accuracy_n"])
