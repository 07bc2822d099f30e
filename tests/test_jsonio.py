"""pipeline.jsonio: every JSON the pipeline writes is strict (no bare NaN or Infinity), holds plain values and
is written atomically."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import atomic
from pipeline.errors import is_disk_full
from pipeline.jsonio import dumps_strict, json_safe, write_json_atomic


def strict_load(text: str):
    """``json.loads`` that refuses ``NaN`` / ``Infinity`` as strict parsers (JavaScript, jq, Go) do."""

    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null_at_any_depth():
    payload = {"a": float("nan"), "b": [1.0, -float("inf"), {"c": np.float32("nan")}], "d": (np.inf, 2.5)}
    assert json_safe(payload) == {"a": None, "b": [1.0, None, {"c": None}], "d": [None, 2.5]}


def test_scalars_of_numpy_and_pandas_become_python_values():
    out = json_safe({"i": np.int64(3), "f": np.float64(0.5), "b": np.bool_(True), "na": pd.NA, "nat": pd.NaT})
    assert out == {"i": 3, "f": 0.5, "b": True, "na": None, "nat": None}
    assert [type(out[key]) for key in ("i", "f", "b")] == [int, float, bool]


def test_what_json_cannot_hold_becomes_text():
    out = json_safe({"path": Path("/runs/a"), "array": np.array([1, 2]), "text": "NaN", "none": None})
    assert out == {"path": "/runs/a", "array": "[1 2]", "text": "NaN", "none": None}


def test_keys_json_takes_stay_and_others_become_text():
    out = json_safe({"a": 1, 2: 2, np.int64(3): 3, ("x", 1): 4})
    assert out == {"a": 1, 2: 2, 3: 3, "('x', 1)": 4}
    assert json.loads(dumps_strict(out)) == {"a": 1, "2": 2, "3": 3, "('x', 1)": 4}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), np.float16("nan")])
def test_dumps_strict_never_writes_a_bare_constant(value):
    assert strict_load(dumps_strict({"x": [value]})) == {"x": [None]}


def test_write_json_atomic_writes_strict_json_with_the_layout_asked_for(tmp_path):
    path = tmp_path / "s.json"
    write_json_atomic(path, {"b": float("nan"), "a": 1}, indent=1, sort_keys=True)
    assert path.read_text() == '{\n "a": 1,\n "b": null\n}'
    assert strict_load(path.read_text()) == {"a": 1, "b": None}


def test_write_json_atomic_leaves_the_old_file_on_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    path.write_text("old")

    def full_disk(target):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(atomic, "fsync_file", full_disk)
    with pytest.raises(OSError) as error:
        write_json_atomic(path, {"a": 1})
    assert is_disk_full(error.value)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["s.json"]
