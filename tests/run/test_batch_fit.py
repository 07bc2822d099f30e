"""runtime.batch_size=auto: an out-of-memory error halves the images per forward, says so, and loses no row.

The error is simulated (the CPU has no device memory to run out of): the audit's ``audit_batch`` raises
``torch.OutOfMemoryError`` for pieces larger than 3 images. The run must go on with 32 -> 16 -> 8 -> 4 -> 2,
log it, and write every image exactly once with the scores an unsplit run gives.
"""

from __future__ import annotations

import logging

import pandas as pd
import pytest
import torch

import pipeline.compute as run_module
from pipeline.errors import ConfigError
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process


def test_auto_halves_on_out_of_memory_and_keeps_every_row(tmp_path, monkeypatch, caplog):
    ids = good_dataset(tmp_path / "data", 12, side=16)
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache", **{"runtime.num_workers": 0})
    run_in_process(overrides + ["runtime.batch_size=12"], tmp_path / "whole")
    real = run_module.audit_batch
    sizes: list[int] = []

    def small_memory(setup, batch, labels):
        sizes.append(len(batch))
        if len(batch) > 3:
            raise run_module.OUT_OF_MEMORY("CUDA out of memory (simulated)")
        return real(setup, batch, labels)

    monkeypatch.setattr(run_module, "audit_batch", small_memory)
    with caplog.at_level(logging.WARNING, logger="pipeline.run"):
        run_in_process(overrides + ["runtime.batch_size=auto"], tmp_path / "auto")
    # the loader's batch of 12 (auto starts at 32 on the CPU) -> 16 -> 8 -> 4 -> 2, then pieces of 2
    assert sizes == [12, 12, 8, 4, 2, 2, 2, 2, 2, 2]
    for size in (16, 8, 4, 2):
        assert f"going on with {size} images per forward" in caplog.text
    whole = pd.read_parquet(tmp_path / "whole" / "samples.parquet").set_index("id").sort_index()
    auto = pd.read_parquet(tmp_path / "auto" / "samples.parquet").set_index("id").sort_index()
    assert sorted(auto.index) == sorted(ids)
    pd.testing.assert_frame_equal(
        auto.drop(columns=["path"], errors="ignore"), whole.drop(columns=["path"], errors="ignore")
    )


def test_a_fixed_batch_size_does_not_hide_out_of_memory(tmp_path, monkeypatch):
    good_dataset(tmp_path / "data", 4, side=16)

    def no_memory(*args):
        raise run_module.OUT_OF_MEMORY("CUDA out of memory (simulated)")

    monkeypatch.setattr(run_module, "audit_batch", no_memory)
    with pytest.raises(run_module.OUT_OF_MEMORY):
        run_in_process(
            base_overrides(
                tmp_path / "data", tmp_path / "cache", **{"runtime.num_workers": 0, "runtime.batch_size": 4}
            ),
            tmp_path / "run",
        )


@pytest.mark.parametrize("value", ["0", "many", "-3"])
def test_bad_batch_size_is_a_config_error(tmp_path, value):
    good_dataset(tmp_path / "data", 2, side=16)
    with pytest.raises(ConfigError) as error:
        run_in_process(
            base_overrides(tmp_path / "data", tmp_path / "cache", **{"runtime.batch_size": value}), tmp_path / "run"
        )
    assert error.value.option == "runtime.batch_size"


def test_auto_starts_at_the_device_size():
    assert run_module.BatchFit.from_option("auto", torch.device("cpu")) == run_module.BatchFit(32, True)
    assert run_module.BatchFit.from_option(16, torch.device("cpu")) == run_module.BatchFit(16, False)
