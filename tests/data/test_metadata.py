"""``data.metadata``: a CSV of extra per-sample columns joins the report without replacing its own."""

from __future__ import annotations

import pandas as pd

from tests.data.audit_rows import CapturedWarnings
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process


def test_metadata_columns_that_clash_with_the_report_do_not_replace_it(tmp_path):
    """A metadata CSV with its own ``label`` (a name) and ``width``: the pipeline's columns win, the
    others join; a sample the CSV does not list gets nulls."""
    ids = good_dataset(tmp_path / "data", 4)
    pd.DataFrame(
        {"id": ids[:3], "label": ["cat", "dog", "bird"], "width": [999] * 3, "marker_present": [1, 0, 1]}
    ).to_csv(tmp_path / "meta.csv", index=False)
    run_in_process(
        base_overrides(tmp_path / "data", tmp_path / "cache", **{"data.metadata": tmp_path / "meta.csv"}),
        tmp_path / "run",
    )
    samples = pd.read_parquet(tmp_path / "run" / "samples.parquet").set_index("id")
    assert samples["label"].tolist() == [0, 1, 2, 0] and samples["width"].tolist() == [24] * 4
    assert samples["marker_present"].iloc[:3].tolist() == [1, 0, 1] and pd.isna(samples["marker_present"].iloc[3])


def test_metadata_triage_columns_are_left_out_with_a_warning(tmp_path):
    """Issue 23, case 6: a metadata ``triage`` column was replaced by the report's own (added when the run
    finishes) without a word; ``triage`` and ``triage_reason`` are now left out with a warning naming them,
    like the other metadata columns named like report columns."""
    ids = good_dataset(tmp_path / "data", 3)
    pd.DataFrame({"id": ids, "triage": ["MINE"] * 3, "triage_reason": ["MINE"] * 3, "camera": ["a", "b", "a"]}).to_csv(
        tmp_path / "meta.csv", index=False
    )
    with CapturedWarnings("pipeline.data.sources") as warnings:
        run_in_process(
            base_overrides(tmp_path / "data", tmp_path / "cache", **{"data.metadata": tmp_path / "meta.csv"}),
            tmp_path / "run",
        )
    samples = pd.read_parquet(tmp_path / "run" / "samples.parquet").set_index("id")
    assert "MINE" not in set(samples["triage"].astype(str))
    assert "triage_reason" not in samples.columns or "MINE" not in set(samples["triage_reason"].astype(str))
    assert samples["camera"].tolist() == ["a", "b", "a"]  # the other columns join as before
    warned = [message for message in warnings.messages if "left out" in message]
    assert len(warned) == 1 and "'triage'" in warned[0] and "'triage_reason'" in warned[0], warnings.messages
