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
    hot_spot_test,
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


def null_frame(rng, n=300, classes="abcdefgh", off_peak_rate=0.05):
    """Rows of an audit in which the predicted class says nothing about the maps: every map peaks off the
    object with the same chance, excess energies from one distribution."""
    return pd.DataFrame(
        {
            "id": [f"i{k}" for k in range(n)],
            "pred_name": rng.choice(list(classes), n),
            "label_name": rng.choice(list(classes), n),
            "pred_excess_energy": rng.beta(2, 3, n) * 1.3 - 0.3,
            "pred_pointing_hit": pd.array(rng.random(n) >= off_peak_rate, dtype="boolean"),
        }
    )


def peak_off_object(frame, rows, share, rng):
    """Make ``share`` of ``rows`` (bool mask) peak off the object (``pred_pointing_hit`` False)."""
    index = frame.index[rows]
    chosen = rng.choice(index, int(round(share * len(index))), replace=False)
    frame.loc[chosen, "pred_pointing_hit"] = False


@pytest.mark.parametrize("off_peak_rate", [0.05, 0.3])
def test_false_alarm_rate_is_at_most_alpha_under_the_null(off_peak_rate):
    """100 audits in which the predicted class says nothing about whether the maps peak off the object:
    flagged in at most alpha + 2.5 standard errors of them (min_effect 0, so the test alone decides).
    1,000 such audits at alpha 0.01 (4,000 shuffles) gave 0.4 % (rate 0.05) and 0.7 % (rate 0.3), see docs/findings.md."""
    rng = np.random.default_rng(3)
    settings = ShortcutSettings(alpha=0.05, min_effect=0.0, permutations=2000)
    alarms = [
        bool(find_shortcuts(null_frame(rng, off_peak_rate=off_peak_rate), settings)["flagged"]) for _ in range(100)
    ]
    assert np.mean(alarms) <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / 100)


def test_a_planted_class_is_flagged_alone_and_min_effect_removes_small_differences():
    rng = np.random.default_rng(4)
    frame = null_frame(rng, n=800)
    peak_off_object(frame, frame["pred_name"] == "c", 0.4, rng)
    peak_off_object(frame, frame["pred_name"] == "f", 0.25, rng)  # significant, but under min_effect
    out = find_shortcuts(frame, ShortcutSettings())
    assert out["flagged"] == ["c"] and out["p_value_method"] == "permutation" and out["tested"] == 8
    top = out["classes"][0]
    assert top["pred_name"] == "c" and top["effect"] == pytest.approx(0.4 - 0.05, abs=0.08)
    assert top["off_object_peak_share"] - top["others_off_object_peak_share"] == pytest.approx(top["effect"])
    relaxed = find_shortcuts(frame, ShortcutSettings(min_effect=0.0))
    assert set(relaxed["flagged"]) == {"c", "f"}


def test_a_class_whose_maps_spill_around_its_objects_is_not_flagged_one_that_peaks_off_them_is():
    """Issue 10: the built-in generator without the marker gave ``triangle`` maps that spread around its
    objects (excess energy 0.12 against 0.45) but still peak on them. Crafted here: class ``s`` has much
    lower excess energies, all of its maps peak on the object (no consistent off-object cue); class ``m``
    has ordinary excess energies, but 40 % of its maps peak off the object, at one place (a cue)."""
    rng = np.random.default_rng(6)
    frame = null_frame(rng, n=800, classes="abcdefms", off_peak_rate=0.02)
    spill = frame["pred_name"] == "s"
    frame.loc[spill, "pred_excess_energy"] -= 0.33
    frame.loc[spill, "pred_pointing_hit"] = True
    cue = frame["pred_name"] == "m"
    peak_off_object(frame, cue, 0.4, rng)
    grids = np.zeros((len(frame), 16, 16))
    grids[:, 4:12, 4:12] = 0.5 / 64  # energy spread around the middle of the input
    grids[~frame["pred_pointing_hit"].to_numpy(dtype=bool), 13, 2] = 0.6  # the cue, bottom left
    frame["pred_off_box_grid"] = list(grids.reshape(len(frame), -1))

    out = find_shortcuts(frame, ShortcutSettings())
    assert out["flagged"] == ["m"]
    spot = out["classes"][0]["hot_spot"]
    assert spot["cells"][0] <= 13 < spot["cells"][2] and spot["cells"][1] <= 2 < spot["cells"][3]
    entry = next(e for e in out["classes"] if e["pred_name"] == "s")
    assert not entry["flagged"] and entry["off_object_peak_share"] == 0.0
    assert entry["others_mean_excess_energy"] - entry["mean_excess_energy"] > 0.3
    # the excess-energy comparison (the rule before the fix) would have flagged s, and not m
    labels, groups = np.unique(frame["pred_name"], return_inverse=True)
    effect, p = permutation_test(frame["pred_excess_energy"].to_numpy(), groups, len(labels), 2000, rng)
    old_flags = labels[(holm(p) <= 0.01) & (effect >= 0.15)]
    assert list(old_flags) == ["s"]


def test_many_classes_use_the_normal_approximation():
    rng = np.random.default_rng(5)
    frame = null_frame(rng, n=3000, classes=[f"k{i}" for i in range(60)])
    peak_off_object(frame, frame["pred_name"] == "k7", 0.6, rng)
    out = find_shortcuts(frame, ShortcutSettings(permutations=1000))
    assert out["p_value_method"].startswith("normal") and out["flagged"] == ["k7"]


def test_rows_without_a_pointing_result_are_not_tested():
    rng = np.random.default_rng(7)
    frame = null_frame(rng, n=200)
    frame["pred_pointing_hit"] = pd.array([None] * len(frame), dtype="boolean")  # no box, or empty maps
    out = find_shortcuts(frame, ShortcutSettings())
    assert out["tested"] == 0 and out["flagged"] == []
    assert find_shortcuts(frame.drop(columns="pred_pointing_hit"), ShortcutSettings())["tested"] == 0


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
            "pred_pointing_hit": [False] * 30 + [True] * 30,
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


def _blob_grids(n: int, fixed: tuple[int, int] | None, seed: int = 0, size: int = 16) -> np.ndarray:
    """``[n, size, size]`` off-box grids: diffuse energy plus a 2 x 2 blob (a marker) at ``fixed`` (row, col)
    on every image, or at a random place per image when ``fixed`` is None."""
    rng = np.random.default_rng(seed)
    grids = rng.uniform(0.0, 0.004, size=(n, size, size))
    for g in grids:
        row, col = fixed if fixed is not None else tuple(rng.integers(0, size - 2, size=2))
        g[row : row + 2, col : col + 2] += 0.05
    return grids


def test_hot_spot_test_tells_a_moving_marker_from_a_fixed_watermark():
    moving = _blob_grids(60, None)
    _, null_share, p = hot_spot_test(moving, 499, np.random.default_rng(1))
    assert p > 0.05, p  # the largest window holds a bit more than uniform, but no more than chance gives
    fixed = _blob_grids(60, (1, 13))
    share, null_share, p = hot_spot_test(fixed, 499, np.random.default_rng(1))
    assert p <= 0.01 and share > 2 * null_share


def test_hot_spot_test_false_alarm_rate():
    """With no common location the test fires at most about alpha of the time (100 classes, alpha 0.1)."""
    fired = [hot_spot_test(_blob_grids(20, None, seed=s), 99, np.random.default_rng(s))[2] <= 0.1 for s in range(100)]
    assert np.mean(fired) <= 0.18, np.mean(fired)


@pytest.mark.parametrize("fixed", [None, (12, 1)])
def test_flagged_class_hot_spot_verdict(tmp_path, fixed):
    """A planted watermark in one corner: significant, within one cell of the watermark; a marker that
    moves from image to image: not significant, and the verdict says there is no fixed location."""
    grids = _blob_grids(40, fixed, seed=3)
    other = _blob_grids(40, None, seed=4) * 0.2
    frame = pd.DataFrame(
        {
            "id": [f"i{k}" for k in range(80)],
            "pred_name": ["a"] * 40 + ["b"] * 40,
            "label_name": ["a", "b"] * 40,
            "pred_excess_energy": [0.0] * 40 + [0.6] * 40,
            "pred_pointing_hit": [False] * 40 + [True] * 40,
            "pred_off_box_grid": [g.ravel() for g in np.concatenate([grids, other])],
        }
    )
    out = find_shortcuts(frame, ShortcutSettings(min_images=5, permutations=999, hot_spot_shifts=499))
    assert out["flagged"] == ["a"]
    spot = out["classes"][0]["hot_spot"]
    if fixed is None:
        assert spot["significant"] is False and spot["p_value"] > 0.01
        assert spot["verdict"].startswith("no fixed location")
    else:
        assert spot["significant"] is True and spot["p_value"] <= 0.01
        centre = ((fixed[1] + 1) / 16, (fixed[0] + 1) / 16)  # the 2 x 2 watermark's centre
        assert abs(spot["x"] - centre[0]) <= 1 / 16 and abs(spot["y"] - centre[1]) <= 1 / 16
        assert spot["verdict"].startswith("fixed location")
    backdrop = np.full((64, 64, 3), 200, np.uint8)
    write_hot_spot_pictures(out, tmp_path / "shortcuts", {"a": backdrop})
    import cv2

    picture = cv2.imread(str(tmp_path / spot["picture"]))
    assert picture.shape == (320 + 24, 320 + 70, 3)
    assert picture[300, 20].mean() > 120  # the light backdrop shows where there is little off-box energy
