"""``data.max_boxes`` caps the boxes per image; the extra ones are counted, not silently lost (issue 11, case 13)."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.errors import ConfigError
from tests.helpers_corpus import add_sample, base_overrides, good_dataset, noise_image, run_in_process


def test_boxes_beyond_the_cap_are_counted_in_the_row_and_the_summary(tmp_path):
    root = tmp_path / "data"
    good_dataset(root, 3)
    many = [(1 + i, 1 + i, 12 + i, 12 + i) for i in range(12)]
    add_sample(root, "crowd", noise_image(24, 24, 9), key="n001", boxes=many)
    summary = run_in_process(base_overrides(root, tmp_path / "cache", **{"data.max_boxes": 5}), tmp_path / "run")
    frame = pd.read_parquet(tmp_path / "run" / "samples.parquet").set_index("id")
    assert (
        frame.loc["crowd", "n_boxes_over_cap"] == 7
        and frame.loc["crowd", "n_boxes"] + frame.loc["crowd", "n_boxes_dropped"] == 5
    )
    assert (frame.drop(index="crowd")["n_boxes_over_cap"] == 0).all()
    assert summary["boxes_over_cap"] == 7


def test_a_cap_below_one_is_a_configuration_error(tmp_path):
    good_dataset(tmp_path / "data", 2)
    with pytest.raises(ConfigError) as error:
        run_in_process(base_overrides(tmp_path / "data", tmp_path / "cache", **{"data.max_boxes": 0}), tmp_path / "run")
    assert error.value.option == "data.max_boxes"
