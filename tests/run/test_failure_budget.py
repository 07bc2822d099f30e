"""``runtime.max_error_fraction``: a run whose samples mostly fail stops, keeping the error rows it wrote.
(The CLI's exit code 3 for it is checked in ``test_config_errors.py``, with the other CLI runs started
together.)"""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.errors import TooManyFailures
from tests.helpers_corpus import base_overrides, failing_dataset, run_in_process


def test_too_many_failures_stops_in_process_and_keeps_the_error_rows(tmp_path):
    failing_dataset(tmp_path / "data")
    overrides = base_overrides(
        tmp_path / "data",
        tmp_path / "cache",
        **{"runtime.min_samples_for_error_check": 4, "runtime.max_error_fraction": 0.25},
    )
    with pytest.raises(TooManyFailures, match=r"4 of 4 samples failed, more than runtime.max_error_fraction=0.25"):
        run_in_process(overrides, tmp_path / "run")
    assert not (tmp_path / "run" / "samples.parquet").exists()
    errors = pd.concat(pd.read_parquet(p) for p in (tmp_path / "run" / "parts").glob("errors-*.parquet"))
    assert sorted(errors["id"]) == [f"a_bad_{i}" for i in range(4)]
