"""The shortcut finder's statistics: Holm, permutation p-values, false-alarm rate, hot spot, collapse."""

import itertools

import numpy as np
import pandas as pd
import pytest

from pipeline.reports.shortcuts import (
    ShortcutSettings,
    collapse_warning,
    find_shortcuts,
    holm,
    hot_spot,
    normal_permutation_pvalues,
    permutation_test,
    write_hot_spot_pictures,
)


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, 0.005])), [0.03, 0.06, 0.06, 0.02])
    assert holm(np.array([0.5, 0.6])).max() == 1.0


def test_permutation_p_value_matches_exhaustive_enumeration():
    values = np.array([0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.65])
    groups = np.array([0, 1, 0, 1, 1, 1, 0, 1])  # group 0 = {0.1, 0.3, 0.4}: low
    effect, p = permutation_test(values, groups, 2, 20000, np.random.default_rng(0))
    observed = values[groups == 1].mean() - values[groups == 0].mean()
    assert effect[0] == pytest.approx(observed)
    exhaustive = [
        values[list(set(range(8)) - set(c))].mean() - values[list(c)].mean() >= observed - 1e-12
        for c in itertools.combinations(range(8), 3)
    ]
    assert p[0] == pytest.approx(np.mean(exhaustive), abs=0.01)  # 3 / 56


def test_normal_approximation_agrees_with_the_shuffles():
    rng = np.random.default_rng(1)
    values = rng.normal(0.4, 0.2, 600)
    groups = rng.integers(0, 4, 600)
    values[groups == 2] -= 0.04
    _, p = permutation_test(values, groups, 4, 20000, np.random.default_rng(2))
    approx = normal_permutation_pvalues(values, groups, 4)
    np.testing.assert_allclose(approx, p, atol=0.02)


def null_frame(rng, n=300, classes="abcdefgh"):
    return pd.DataFrame(
        {
            "id": [f"i{k}" for k in range(n)],
            "pred_name": rng.choice(list(classes), n),
            "label_name": rng.choice(list(classes), n),
            "pred_excess_energy": rng.beta(2, 3, n) * 1.3 - 0.3,
        }
    )


def test_false_alarm_rate_is_at_most_alpha_under_the_null():
    """100 audits in which the predicted class says nothing about the maps: flagged in at most
    alpha + 2.5 standard errors of them (min_effect 0, so the test alone decides)."""
    rng = np.random.default_rng(3)
    settings = ShortcutSettings(alpha=0.05, min_effect=0.0, permutations=2000)
    alarms = [bool(find_shortcuts(null_frame(rng), settings)["flagged"]) for _ in range(100)]
    assert np.mean(alarms) <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / 100)


def test_a_planted_class_is_flagged_alone_and_min_effect_removes_small_differences():
    rng = np.random.default_rng(4)
    frame = null_frame(rng, n=800)
    frame.loc[frame["pred_name"] == "c", "pred_excess_energy"] -= 0.3
    frame.loc[frame["pred_name"] == "f", "pred_excess_energy"] -= 0.08
    out = find_shortcuts(frame, ShortcutSettings())
    assert out["flagged"] == ["c"] and out["p_value_method"] == "permutation" and out["tested"] == 8
    assert out["classes"][0]["pred_name"] == "c" and out["classes"][0]["effect"] == pytest.approx(0.3, abs=0.08)
    relaxed = find_shortcuts(frame, ShortcutSettings(min_effect=0.0))
    assert "c" in relaxed["flagged"]


def test_many_classes_use_the_normal_approximation():
    rng = np.random.default_rng(5)
    frame = null_frame(rng, n=3000, classes=[f"k{i}" for i in range(60)])
    frame.loc[frame["pred_name"] == "k7", "pred_excess_energy"] -= 0.5
    out = find_shortcuts(frame, ShortcutSettings(permutations=1000))
    assert out["p_value_method"].startswith("normal") and out["flagged"] == ["k7"]


def test_hot_spot_location_share_and_picture(tmp_path):
    grids = np.zeros((5, 16, 16))
    grids[:, 12:15, 1:4] = 0.05  # off-box energy in the lower-left corner
    grids[:, 0, 8] = 0.01
    spot = hot_spot(grids)
    assert spot["cells"] == [12, 1, 15, 4]
    assert spot["x"] == pytest.approx(2.5 / 16) and spot["y"] == pytest.approx(13.5 / 16)
    assert spot["share"] == pytest.approx(0.45 / 0.46) and spot["uniform_share"] == pytest.approx(9 / 256)
    frame = pd.DataFrame(
        {
            "id": [f"i{k}" for k in range(60)],
            "pred_name": ["a"] * 30 + ["b"] * 30,
            "label_name": ["a", "b"] * 30,
            "pred_excess_energy": [0.0] * 30 + [0.6] * 30,
            "pred_off_box_grid": [g.ravel() for g in np.concatenate([grids] * 12)],
        }
    )
    out = find_shortcuts(frame, ShortcutSettings(min_images=5, permutations=2000))
    assert out["flagged"] == ["a"]
    spot = out["classes"][0]["hot_spot"]
    assert spot["images_peaking_there"] == 1.0 and len(spot["examples"]) == 4
    write_hot_spot_pictures(out, tmp_path / "shortcuts")
    assert spot["picture"].startswith("shortcuts/a") and (tmp_path / spot["picture"]).stat().st_size > 100
    assert "share_map" not in spot


def test_collapse_warning():
    settings = ShortcutSettings()
    frame = pd.DataFrame({"pred_name": ["a"] * 9 + ["b"], "label_name": list("abcdeabcde")})
    warning = collapse_warning(frame, settings)
    assert warning["pred_name"] == "a" and warning["share"] == pytest.approx(0.9) and "collapsed" in warning["message"]
    balanced = pd.DataFrame({"pred_name": ["a"] * 6 + ["b"] * 4, "label_name": ["a"] * 6 + ["b"] * 4})
    assert collapse_warning(balanced, settings) is None  # a common class predicted as often as it occurs
