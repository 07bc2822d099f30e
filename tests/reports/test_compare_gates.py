"""compare's per-class gates correct for many classes with Holm's step-down procedure (issue 20.1).

Holm's adjusted p-values are checked against the procedure as Holm (1979) states it (reject while
``p_(i) < alpha / (m - i + 1)``) and a worked example; the gate against a family where Holm rejects a class
that Bonferroni's ``alpha / m`` would not.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from pipeline.compare.gates import evaluate_gates
from pipeline.compare.paired_stats import holm_adjusted
from pipeline.compare.significance import add_holm


def holm_rejects(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's procedure as stated: sort ascending, reject while p_(i) < alpha / (m - i + 1), then stop."""
    order = np.argsort(p, kind="stable")
    rejected = np.zeros(len(p), dtype=bool)
    for rank, index in enumerate(order):
        if not p[index] < alpha / (len(p) - rank):
            break
        rejected[index] = True
    return rejected


def test_holm_adjusted_worked_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4 * 0.005, 3 * 0.01, 2 * 0.03, max(0.06, 1 * 0.04)
    adjusted = holm_adjusted(np.array([0.01, 0.04, 0.03, 0.005]))
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])


@pytest.mark.parametrize("seed", range(20))
def test_holm_adjusted_rejects_exactly_what_the_procedure_rejects(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 0.05, rng.integers(0, 6)), rng.uniform(0, 1, rng.integers(1, 12))])
    p = rng.permutation(np.round(p, 3))  # rounding makes ties
    adjusted = holm_adjusted(p)
    for alpha in (0.01, 0.05, 0.1):
        assert ((adjusted < alpha) == holm_rejects(p, alpha)).all()
    assert (adjusted >= p).all() and (adjusted <= 1).all()


def test_holm_leaves_undefined_p_out_of_the_family():
    adjusted = holm_adjusted(np.array([0.02, np.nan, 0.03]))
    assert np.isnan(adjusted[1]) and adjusted[[0, 2]] == pytest.approx([0.04, 0.04])  # m = 2, not 3
    assert np.isnan(holm_adjusted(np.array([np.nan]))).all()


def _per_class(p: list[float], counts: list[int], drop: float = 0.3) -> pd.DataFrame:
    names = [f"c{i}" for i in range(len(p))]
    frame = pd.DataFrame(
        {"label": range(len(p)), "label_name": names, "count": counts, "accuracy_delta": -drop, "accuracy_p": p}
    )
    return add_holm(frame, ["accuracy"], min_class_images=10)


def test_a_class_gate_uses_holm_not_bonferroni():
    # two classes with p 0.02 and 0.03: Bonferroni (0.025 each) rejects only the first; Holm both
    per_class = _per_class([0.02, 0.03], [40, 40])
    gates = evaluate_gates({}, per_class, {}, {"accuracy": 0.1}, alpha=0.05, min_class_images=10)
    tripped = [g["scope"] for g in gates if g["tripped"] and g["scope"].startswith("class ")]
    assert tripped == ["class c0", "class c1"]
    assert [g["p_holm"] for g in gates if g["scope"].startswith("class ")] == pytest.approx([0.04, 0.04])
    summary = [g for g in gates if g["scope"] == "per class"][0]
    assert summary["tripped"] and summary["classes_tested"] == 2 and summary["classes_tripped"] == 2
    assert summary["correction"] == "holm"


def test_small_classes_are_neither_gated_nor_counted_in_the_family():
    # the 3-image class has the smallest p; left out, the family is the two large classes only
    per_class = _per_class([0.02, 0.03, 1e-9], [40, 40, 3])
    assert np.isnan(per_class["accuracy_p_holm"].iloc[2])
    assert per_class["accuracy_p_holm"].iloc[:2].tolist() == pytest.approx([0.04, 0.04])
    gates = evaluate_gates({}, per_class, {}, {"accuracy": 0.1}, alpha=0.05, min_class_images=10)
    assert "class c2" not in [g["scope"] for g in gates]


@pytest.mark.parametrize("drop, p", list(itertools.product([0.05, 0.3], [0.001, 0.2])))
def test_a_class_gate_needs_both_the_drop_and_significance(drop, p):
    per_class = _per_class([p, 0.9], [40, 40], drop=drop)
    gates = evaluate_gates({}, per_class, {}, {"accuracy": 0.1}, alpha=0.05, min_class_images=10)
    assert [g for g in gates if g["scope"] == "per class"][0]["tripped"] == (drop > 0.1 and p < 0.05 / 2)
