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
    # provenance names when and where each run was made (times, run folder): the rest must be identical
    metadata = [
        {
            k: v
            for k, v in pq.read_schema(tmp_path / f"run{i}" / "samples.parquet").metadata.items()
            if k != b"cam_audit.provenance"
        }
        for i in (1, 2)
    ]
    assert metadata[0] == metadata[1]
    provenance = [
        {k: v for k, v in s["provenance"].items() if k not in ("started_utc", "finished_utc", "run_dir")}
        for s in summaries
    ]
    assert provenance[0] == provenance[1]
    timing = {"run_dir", "seconds", "images_per_second", "setup_seconds", "total_seconds", "provenance"}
    first, second = ({k: v for k, v in s.items() if k not in timing} for s in summaries)
    for summary in (first, second):  # the sanity check and the strategies state their cost in seconds
        summary["sanity_check"] = {k: v for k, v in summary["sanity_check"].items() if k != "seconds"}
        summary["strategies"] = {k: v for k, v in summary["strategies"].items() if not k.endswith("seconds")}
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
