"""The failure budget holds whatever the sample count (issue 23, case 5): a run of a small set is checked at
its end, over the whole run. Before: a set whose 24 images all failed to decode finished as "Audit of 0
images ... 24 skipped", exit 0 (the share was checked only from runtime.min_samples_for_error_check on)."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.errors import TooManyFailures
from tests.helpers_corpus import add_sample, base_overrides, good_dataset, run_cli_here, run_in_process, write_classes


def test_a_set_whose_every_image_fails_stops_with_exit_3(tmp_path):
    root = tmp_path / "data"
    for i in range(24):
        add_sample(root, f"bad_{i:02d}", b"not an image", boxes=[(1, 1, 5, 5)], size=(24, 24))
    write_classes(root)
    overrides = base_overrides(root, tmp_path / "cache", **{"runtime.max_error_fraction": 1.0})
    with pytest.raises(TooManyFailures, match=r"none of the 24 samples could be audited \(failed at decode 24\)"):
        run_in_process(overrides, tmp_path / "run")  # even with every failure allowed: a report of nothing
    assert not (tmp_path / "run" / "summary.json").exists()
    result = run_cli_here(overrides, tmp_path / "cli")
    assert result.returncode == 3, result.stderr[-2000:]
    assert "cam-audit: stopped: none of the 24 samples could be audited" in result.stderr
    assert "Audit of 0 images" not in result.stdout


def test_a_small_set_over_the_budget_stops_at_the_end_and_resumes_with_a_larger_one(tmp_path):
    root = tmp_path / "data"
    ids = good_dataset(root, 6)
    for i in range(2):  # 2 of 8 failed: 25 % > 10 %, far below min_samples_for_error_check=50 samples
        add_sample(root, f"zz_bad_{i}", b"not an image", boxes=[(1, 1, 5, 5)], size=(24, 24))
    overrides = base_overrides(root, tmp_path / "cache")
    with pytest.raises(TooManyFailures, match=r"2 of 8 samples failed, more than runtime.max_error_fraction=0.1 of"):
        run_in_process(overrides, tmp_path / "run")
    assert not (tmp_path / "run" / "summary.json").exists()
    summary = run_in_process(overrides + ["resume=true", "runtime.max_error_fraction=0.3"], tmp_path / "run")
    assert summary["images"] == 6 and summary["images_scored_this_invocation"] == 0
    assert sorted(pd.read_parquet(tmp_path / "run" / "samples.parquet")["id"]) == ids


def test_a_small_set_within_the_budget_finishes(tmp_path):
    root = tmp_path / "data"
    good_dataset(root, 10)
    add_sample(root, "zz_bad", b"not an image", boxes=[(1, 1, 5, 5)], size=(24, 24))  # 1 of 11: 9 %
    summary = run_in_process(base_overrides(root, tmp_path / "cache"), tmp_path / "run")
    assert summary["images"] == 10 and summary["errors"] == 1
