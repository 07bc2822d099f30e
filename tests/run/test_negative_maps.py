"""``cam.negative=true``: the counterfactual maps ReLU(-x) are scored in the same pass as the positive ones
(``audit_batch`` loops over both) and get their own ``neg_*`` columns; the positive columns are those of a
run without them."""

import pandas as pd

from tests.helpers_corpus import base_overrides, good_dataset, run_in_process


def test_negative_maps_add_their_columns_and_leave_the_positive_ones(tmp_path):
    good_dataset(tmp_path / "data", 6)
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache", **{"runtime.num_workers": 0})
    run_in_process(overrides, tmp_path / "plain")
    run_in_process(overrides + ["cam.negative=true"], tmp_path / "negative")
    plain = pd.read_parquet(tmp_path / "plain" / "samples.parquet")
    negative = pd.read_parquet(tmp_path / "negative" / "samples.parquet")
    added = [column for column in negative.columns if column not in plain.columns]
    assert added and all(column.startswith("neg_") for column in added), added
    assert "neg_pred_energy_in_box" in added and "neg_true_pointing_hit" in added
    assert negative[list(plain.columns)].equals(plain)
