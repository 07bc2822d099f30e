"""``summary.json`` is strict JSON: an undefined number is ``null``, never a bare ``NaN`` (issue 11, case 18)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.jsonio import json_safe, write_json_atomic
from tests.helpers_corpus import add_sample, base_overrides, noise_image, run_in_process, write_classes


def _strict_load(text: str):
    """``json.loads`` that refuses ``NaN``/``Infinity`` as a strict parser (JavaScript, jq, Go) does."""

    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null_at_any_depth(tmp_path):
    payload = {
        "a": float("nan"),
        "b": [1.0, float("inf"), {"c": np.float32("nan")}],
        "d": np.float64(2.5),
        "e": (np.nan,),
        "f": "NaN",
        "g": None,
        "h": 3,
    }
    assert json_safe(payload) == {
        "a": None,
        "b": [1.0, None, {"c": None}],
        "d": 2.5,
        "e": [None],
        "f": "NaN",
        "g": None,
        "h": 3,
    }
    write_json_atomic(tmp_path / "x.json", payload)
    assert _strict_load((tmp_path / "x.json").read_text())["b"][1] is None


def test_summary_of_a_run_without_any_box_in_the_input_is_strict_json(tmp_path):
    root = tmp_path / "data"
    for i in range(4):  # each box lies in the 2-pixel border that the centre crop (40 -> 32) cuts away
        add_sample(root, f"img_{i}", noise_image(24, 24, i), key="n001", boxes=[(1, 1, 2, 2)])
    write_classes(root)
    summary = run_in_process(base_overrides(root, tmp_path / "cache"), tmp_path / "run")
    assert math.isnan(summary["true_class_maps"]["energy_in_box"])  # undefined: no image has a box in the input
    written = _strict_load((tmp_path / "run" / "summary.json").read_text())  # raised on the bare NaN before
    assert written["true_class_maps"]["energy_in_box"] is None
    assert written["images"] == 4 and written["images_without_box_in_input"] == 4


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_write_json_atomic_never_writes_a_bare_constant(tmp_path, value):
    write_json_atomic(tmp_path / "s.json", {"x": value})
    assert (tmp_path / "s.json").read_text().split() == ["{", '"x":', "null", "}"]
