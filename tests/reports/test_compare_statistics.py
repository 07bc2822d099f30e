"""compare as a nightly gate: paired statistics that separate a real drop from chance.

McNemar's exact test is checked against scipy.stats.binomtest (the oracle); the bootstrap against a
loop-based reference of the same resamples; the gates on crafted runs with known effects.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from pipeline.cli import compare_main
from pipeline.compare import compare_with_statistics, default_out
from pipeline.compare.paired_stats import class_mean_statistic, mcnemar_exact, mean_statistic, paired_bootstrap


@pytest.mark.parametrize(
    "broke, fixed", [(0, 1), (1, 0), (3, 3), (10, 6), (30, 2), (0, 7), (100, 70), (1100, 1000), (2600, 2500)]
)
def test_mcnemar_exact_is_scipy_binomtest(broke, fixed):
    assert mcnemar_exact(broke, fixed) == pytest.approx(binomtest(broke, broke + fixed, 0.5).pvalue, rel=1e-9)


def test_class_mean_statistic_matches_a_loop():
    rng = np.random.default_rng(1)
    values, labels = rng.random(50), rng.integers(0, 4, 50)
    index = rng.integers(0, 50, size=(7, 50))
    expected = [np.mean([values[i][labels[i] == c].mean() for c in np.unique(labels[i])]) for i in index]
    assert class_mean_statistic(values, labels, index) == pytest.approx(expected)


def test_bootstrap_is_seeded_and_covers_a_known_shift():
    rng = np.random.default_rng(2)
    before = rng.random(500)
    after = before - 0.03 + rng.normal(0, 0.05, 500)
    labels = np.zeros(500, dtype=np.int64)
    first = paired_bootstrap(before, after, labels, mean_statistic, resamples=3000, seed=4)
    assert paired_bootstrap(before, after, labels, mean_statistic, resamples=3000, seed=4) == first
    assert first["low"] < -0.03 < first["high"] < 0 and first["delta"] == pytest.approx((after - before).mean())
    # the interval width follows the paired differences' spread: about 2 * 1.96 * 0.05 / sqrt(500)
    assert first["high"] - first["low"] == pytest.approx(2 * 1.96 * 0.05 / np.sqrt(500), rel=0.15)


def fake_run(folder, correct, energy, labels, hits=None):
    """A finished run's samples.parquet with the given per-image values (what compare reads)."""
    n = len(correct)
    folder.mkdir(parents=True)
    names = np.array(["cat", "dog", "bird", "fish"])
    hits = np.asarray(energy) > 0.5 if hits is None else hits
    pd.DataFrame(
        {
            "id": [f"img{i:05d}" for i in range(n)],
            "label": labels,
            "label_name": names[labels],
            "pred": np.where(correct, labels, (labels + 1) % 4),
            "pred_name": names[np.where(correct, labels, (labels + 1) % 4)],
            "correct": correct,
            "true_energy_in_box": energy,
            "true_energy_lift": np.asarray(energy) * 2,
            "true_peak_row": 3.0,
            "true_peak_col": 4.0,
            "true_pointing_hit": pd.array(hits, dtype="boolean"),
            "true_localised_tau015": pd.array(np.asarray(energy) > 0.4, dtype="boolean"),
            "true_relevance_rank_accuracy": 0.5,
            "true_empty": False,
            "pred_energy_in_box": energy,
        }
    ).to_parquet(folder / "samples.parquet")
    (folder / "summary.json").write_text("{}")


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """1,200 images in 4 classes. 'same': the baseline again. 'noise': accuracy -0.33 points (10 broke, 6 fixed)
    and energy with zero-mean noise. 'drop': 40 broke, 4 fixed, energy -0.05 everywhere. 'class': one class of
    400 images loses 0.2 of energy in box, and a 3-image class 'fish' breaks completely and loses 0.3."""
    tmp = tmp_path_factory.mktemp("crafted")
    rng = np.random.default_rng(0)
    n = 1200
    labels = np.repeat([0, 1, 2], 400)
    labels[-3:] = 3  # fish: 3 images
    correct = rng.random(n) < 0.85
    energy = rng.uniform(0.2, 0.9, n)
    fake_run(tmp / "base", correct, energy, labels)
    fake_run(tmp / "same", correct, energy, labels)

    def change(broke: int, fixed: int) -> np.ndarray:
        out = correct.copy()
        out[np.flatnonzero(correct)[:broke]] = False
        out[np.flatnonzero(~correct)[:fixed]] = True
        return out

    fake_run(tmp / "noise", change(10, 6), np.clip(energy + rng.normal(0, 0.02, n), 0, 1), labels)
    fake_run(tmp / "drop", change(40, 4), energy - 0.05, labels)
    per_class = energy.copy()
    per_class[labels == 1] -= 0.2
    per_class[labels == 3] -= 0.3  # fish: the same large drop on each of its 3 images (a zero-width interval)
    fish = correct.copy()
    fish[-3:] = False
    base_fish = correct.copy()
    base_fish[-3:] = True
    (tmp / "base_fish").mkdir()
    fake_run(tmp / "base_fish" / "run", base_fish, energy, labels)
    fake_run(tmp / "class", fish, per_class, labels)
    return tmp


def gate(tmp, baseline, current, *options):
    return compare_main(
        [
            str(tmp / baseline),
            str(tmp / current),
            "--out",
            str(tmp / f"out-{baseline.replace('/', '-')}-{current}"),
            "--resamples",
            "1000",
            *options,
        ]
    )


def test_a_real_drop_trips_and_chance_does_not(crafted):
    assert gate(crafted, "base", "drop", "--max-drop", "accuracy=0.02") == 1  # 3 points, p < 1e-6
    assert gate(crafted, "base", "drop", "--max-drop", "true_energy_in_box=0.02") == 1
    assert (
        gate(crafted, "base", "drop", "--max-drop", "accuracy=0.05", "--max-drop", "true_energy_in_box=0.06") == 0
    )  # within
    # the case: a 0.33-point drop on 1,200 images against a 0.2-point gate is chance (McNemar p = 0.45)
    assert (
        gate(crafted, "base", "noise", "--max-drop", "accuracy=0.002", "--max-drop", "true_energy_in_box=0.0001") == 0
    )
    written = json.loads((crafted / "out-base-noise" / "compare.json").read_text())
    accuracy = written["tests"]["accuracy"]
    assert (accuracy["broke"], accuracy["fixed"]) == (10, 6) and accuracy["p"] == pytest.approx(
        binomtest(10, 16, 0.5).pvalue
    )
    assert -accuracy["delta"] > 0.002 and not accuracy["significant"]


def test_a_same_model_rerun_never_trips_whatever_the_seed(crafted):
    tight = [
        "--max-drop",
        "accuracy=0",
        "--max-drop",
        "true_energy_in_box=0",
        "--max-drop",
        "true_pointing_game=0",
        "--max-class-drop",
        "true_energy_in_box=0",
        "--max-class-drop",
        "accuracy=0",
    ]
    for seed in range(5):
        assert gate(crafted, "base", "same", *tight, "--seed", str(seed)) == 0


def test_per_class_drops_need_enough_images_and_significance(crafted):
    result = compare_with_statistics(
        crafted / "base_fish" / "run",
        crafted / "class",
        max_class_drops={"accuracy": 0.5, "true_energy_in_box": 0.1},
        resamples=1000,
    )
    tripped = [g for g in result["gates"] if g["tripped"] and g["scope"].startswith("class ")]
    assert [(g["metric"], g["scope"]) for g in tripped] == [("true_energy_in_box", "class dog")]
    fish = result["per_class"].set_index("label_name").loc["fish"]
    assert fish["accuracy_delta"] == -1.0 and fish["count"] == 3  # a complete drop, but 3 images: never gated
    assert (
        fish["true_energy_in_box_delta"] == pytest.approx(-0.3) and fish["true_energy_in_box_p"] < 1e-6
    )  # "significant" alone
    assert gate(crafted, "base_fish/run", "class", "--max-class-drop", "true_energy_in_box=0.1") == 1
    assert gate(crafted, "base_fish/run", "class", "--max-class-drop", "accuracy=0.5") == 0


def test_default_output_folder_is_beside_the_current_run(crafted):
    out = default_out(crafted / "base", crafted / "drop")
    assert out == (crafted / "drop.compare" / "base").absolute()
    assert compare_main([str(crafted / "base"), str(crafted / "same"), "--resamples", "200"]) == 0
    assert (crafted / "same.compare" / "base" / "compare.json").is_file()
    assert sorted(p.name for p in (crafted / "same").iterdir()) == [
        "samples.parquet",
        "summary.json",
    ]  # nothing written into the run
