"""The registry drives the lists: every headline number and every gateable metric comes from
``pipeline.scores.registry.SCORES`` (``pipeline.scores.aggregates``), so a new gateable headline score is its
registry entry and its maths, and nothing else has to name it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import compare_main, compare_parser
from pipeline.compare.gates import parse_max_drops
from pipeline.compare.render import headline_lines
from pipeline.compare.significance import STATISTICS, compared_metrics
from pipeline.reports import finalize
from pipeline.reports.headline import headline_line
from pipeline.reports.review_page import _group_context, _headline
from pipeline.scores import aggregates, registry
from pipeline.scores.registry import Aggregate, Score


def _frame(n: int = 12, seed: int = 0) -> pd.DataFrame:
    """Rows with every score column of both maps (the registry's, at tau015)."""
    rng = np.random.default_rng(seed)
    labels, correct = np.arange(n) % 3, rng.random(n) < 0.7
    pred = np.where(correct, labels, (labels + 1) % 3)
    names = np.array(["cat", "dog", "bird"])
    frame = pd.DataFrame(
        {
            "id": [f"img{i:03d}" for i in range(n)],
            "label": labels,
            "label_name": names[labels],
            "pred": pred,
            "pred_name": names[pred],
            "correct": correct,
            "confidence": rng.random(n),
            "group": np.arange(n) % 2 == 0,
        }
    )
    for m in aggregates.MAPS:
        for column, score, _ in registry.score_columns([0.15]):
            values = rng.random(n)
            frame[f"{m}_{column}"] = values > 0.5 if score.dtype == "bool" else values
        frame[f"{m}_empty"] = False
    return frame


def _summary(frame: pd.DataFrame) -> dict:
    return {
        "accuracy": float(frame["correct"].mean()),
        "true_class_maps": finalize.dataset_scores(frame, "true", "tau015"),
        "groups": {"group": finalize.group_table(frame, "group")},
    }


def test_every_headline_and_gate_metric_reaches_every_list():
    frame = _frame()
    summary = _summary(frame)
    printed, page = headline_line(summary), dict(_headline(summary))
    overall = {
        side: {"accuracy": summary["accuracy"], **summary["true_class_maps"]} for side in ("baseline", "current")
    }
    compared = "\n".join(headline_lines(overall))
    headline = aggregates.headline_metrics()
    assert [m.name for m in headline][:2] == ["accuracy", "true_energy_in_box"]
    for metric in headline:
        assert metric.map_name is None or metric.aggregate.name in summary["true_class_maps"]  # summary.json
        assert f"{metric.aggregate.label} " in printed, metric.name
        assert any(metric.aggregate.label in name for name in page), metric.name
        assert f"{metric.aggregate.label}: " in compared, metric.name
    help_text = " ".join(compare_parser().format_help().split())
    for name, metric in aggregates.gate_metrics().items():
        assert metric.aggregate.kind in STATISTICS, name  # a gateable kind has a paired statistic
        assert name in help_text and name in compared_metrics() and parse_max_drops([f"{name}=0.1"]) == {name: 0.1}
    group = summary["groups"]["group"][0]
    assert list(group)[3:] == [name for name, _, _ in aggregates.group_columns()]
    assert len(_group_context(summary)[0]["headers"]) == len(group)


def test_the_metrics_are_the_ones_compare_has_always_gated():
    """compare.json's test names (and --max-drop's) did not change when they came to be derived."""
    assert list(aggregates.gate_metrics()) == [
        "accuracy",
        "true_energy_in_box",
        "true_energy_lift",
        "true_excess_energy",
        "true_pointing_game",
        "true_gt_known_localisation",
        "pred_energy_in_box",
    ]
    assert compared_metrics()["true_gt_known_localisation"][0] == "true_localised_{tau}"
    assert [name for name, _, _ in aggregates.group_columns()] == [
        "pred_energy_in_box",
        "true_energy_in_box",
        "pred_energy_lift",
        "pred_excess_energy",
        "pred_pointing_hit",
    ]


def test_the_nightly_default_gates_name_gateable_metrics():
    """scripts/nightly.sh picks its thresholds (a policy), but only among the registry's gateable metrics."""
    script = (Path(__file__).parents[2] / "scripts" / "nightly.sh").read_text()
    named = re.findall(r"--max(?:-class)?-drop (\w+)=", script)
    assert named and set(named) <= set(aggregates.gate_metrics())


def _half(x, tau=None):
    return registry._energy(x) / 2


def _run(folder, frame: pd.DataFrame) -> None:
    folder.mkdir(parents=True)
    frame.to_parquet(folder / "samples.parquet")
    (folder / "summary.json").write_text("{}")


@pytest.mark.parametrize("better", ["higher", "lower"])
def test_a_new_gateable_headline_entry_flows_through_compare(monkeypatch, tmp_path, capsys, better):
    """One registry entry (with its maths) and compare tests it, gates it (in its direction), prints it and
    names it in --max-drop's help; the summary and the printed headline carry it."""
    extra = Score(
        "spread",
        _half,
        "a made-up score for this test",
        aggregates=(Aggregate("spread_mean", "mean", label="spread", better=better, headline=True, gate="spread"),),
    )
    monkeypatch.setattr(registry, "SCORES", registry.SCORES + (extra,))
    n = 400
    base = _frame(n)
    base["true_spread"] = np.linspace(0.2, 0.8, n)
    worse = base.copy()
    worse["true_spread"] = base["true_spread"] + (0.1 if better == "lower" else -0.1)  # 0.1 worse on every image
    _run(tmp_path / "base", base)
    _run(tmp_path / "worse", worse)
    assert "true_spread" in " ".join(compare_parser().format_help().split())
    summary = _summary(base)
    assert summary["true_class_maps"]["spread_mean"] == pytest.approx(0.5) and "spread 0.500" in headline_line(summary)
    args = [str(tmp_path / "base"), str(tmp_path / "worse"), "--out", str(tmp_path / "cmp"), "--resamples", "200"]
    assert compare_main(args + ["--max-drop", "true_spread=0.05"]) == 1
    capsys.readouterr()
    assert compare_main(args + ["--max-drop", "true_spread=0.2", "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tests"]["true_spread"]["delta"] == pytest.approx(0.1 if better == "lower" else -0.1)
    [gate] = [g for g in result["gates"] if g["metric"] == "true_spread"]
    assert gate["drop"] == pytest.approx(0.1) and not gate["tripped"]
    assert compare_main(args) == 0
    assert "true-class spread: " in capsys.readouterr().out
