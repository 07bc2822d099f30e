"""Determinism: the same inputs and configuration give the same tables, metadata and summary."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq

from tests.helpers_corpus import add_sample, base_overrides, good_dataset, run_in_process


def test_two_runs_give_identical_tables(tmp_path):
    root = tmp_path / "data"
    good_dataset(root, 10)
    add_sample(root, "zz_bad", b"not an image", boxes=[(1, 1, 5, 5)], size=(24, 24))
    overrides = base_overrides(root, tmp_path / "cache", **{"runtime.num_workers": 2, "runtime.batch_size": 3})
    summaries = [run_in_process(overrides, tmp_path / f"run{i}") for i in (1, 2)]
    for table in ("samples", "errors", "classes"):
        first, second = (pd.read_parquet(tmp_path / f"run{i}" / f"{table}.parquet") for i in (1, 2))
        assert len(first), table
        pd.testing.assert_frame_equal(first, second, check_exact=True)
    assert pq.read_schema(tmp_path / "run1" / "samples.parquet").metadata == pq.read_schema(tmp_path / "run2" / "samples.parquet").metadata
    timing = {"run_dir", "seconds", "images_per_second"}
    first, second = ({k: v for k, v in s.items() if k not in timing} for s in summaries)
    assert _nan_safe(first) == _nan_safe(second)


def _nan_safe(value):
    """NaN != NaN: replace it by a marker so summaries compare with ``==``."""
    if isinstance(value, dict):
        return {k: _nan_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_safe(v) for v in value]
    if isinstance(value, float) and value != value:
        return "nan"
    return value
