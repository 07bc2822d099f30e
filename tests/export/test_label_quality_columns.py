"""samples.parquet carries hardness and mistakenness (issue 24.2), consistent with the row's prediction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.reports.schema import descriptions
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process


def test_a_run_writes_hardness_and_mistakenness(tmp_path):
    good_dataset(tmp_path / "data", 12)
    run_in_process(base_overrides(tmp_path / "data", tmp_path / "cache"), tmp_path / "run")
    table = pq.read_table(tmp_path / "run" / "samples.parquet")
    described = descriptions(table.schema)
    assert "entropy of the softmax" in described["hardness"] and "m = +1" in described["mistakenness"]
    frame = table.to_pandas()
    hardness, mistakenness = frame["hardness"].to_numpy(np.float64), frame["mistakenness"].to_numpy(np.float64)
    correct = frame["correct"].astype(bool).to_numpy()
    assert len(frame) == 12 and np.isfinite(hardness).all()
    # Shannon entropy lies between the min-entropy -ln(max p) and ln(C) (3 classes)
    assert (hardness >= -np.log(frame["confidence"].to_numpy(np.float64)) - 1e-5).all()
    assert (hardness <= np.log(3) + 1e-5).all()
    m = np.where(correct, -1.0, 1.0)
    np.testing.assert_allclose(mistakenness, (m * np.exp(-hardness) + 1) / 2, atol=1e-6)
    assert pd.api.types.is_float_dtype(frame["hardness"]) and table.schema.field("mistakenness").type == "float"
