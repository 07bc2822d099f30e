"""A wrong model never looks like a result (issue 11, case 6).

NaN weights (a diverged checkpoint) made every logit and map NaN, yet the summary reported an accuracy
(NaN argmax -> class 0, "correct" for every class-0 image) and a pointing game of 0 % (a NaN map
counted as a miss, ``*_empty`` False), exit 0. Now such an image's prediction and scores are null, it is
counted (``non_finite_output``, ``non_finite_images``) and left out of every dataset number; above
``runtime.max_error_fraction`` the run stops (exit 3). A zero ``model.std`` is refused before any work.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from pipeline.errors import ConfigError, TooManyFailures
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process
from tests.helpers_tiny_model import TinyNet


class HalfNanNet(TinyNet):
    """TinyNet whose features are NaN for images with a dark top-left pixel: NaN logits and maps for those only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        poison = (x[:, 0, 0, 0] < 0)[:, None, None, None]
        # added as a constant: the gradients of the other images stay finite (NaN * 0 would not)
        features = features + torch.where(poison, float("nan"), 0.0).to(features.dtype).detach()
        return self.fc(self.pool(features).flatten(1))


class NanMapNet(TinyNet):
    """Finite logits, NaN maps: the head reads NaN-free features, the CAM layer's output holds a NaN."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.poison = nn.Identity()  # the CAM layer (model.target_layer=poison)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        mark = torch.zeros_like(features)
        mark[:, :, 0, 0] = float("nan")
        seen = self.poison(features + mark)
        return self.fc(self.pool(torch.nan_to_num(seen, nan=0.0)).flatten(1))


def _nan_checkpoint(path: Path) -> Path:
    state = TinyNet().state_dict()
    state["features.0.weight"] = torch.full_like(state["features.0.weight"], float("nan"))
    torch.save(state, path)
    return path


def test_nan_weights_give_null_predictions_and_stop_the_run(tmp_path):
    good_dataset(tmp_path / "data", 12)
    overrides = base_overrides(
        tmp_path / "data",
        tmp_path / "cache",
        **{"model.checkpoint": _nan_checkpoint(tmp_path / "nan.pt"), "runtime.min_samples_for_error_check": 8},
    )
    with pytest.raises(TooManyFailures, match="non-finite logits or maps") as error:  # was: exit 0, accuracy 33 %
        run_in_process(overrides, tmp_path / "run")
    assert "8 gave non-finite" in str(error.value)
    parts = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "run" / "parts").glob("samples-*.parquet"))])
    assert len(parts) == 8 and parts["non_finite_output"].all()
    for column in (
        "pred",
        "pred_name",
        "confidence",
        "correct",
        "true_empty",
        "true_pointing_hit",
        "true_energy_in_box",
        "pred_map_max",
    ):
        assert parts[column].isna().all(), column  # null: no prediction, no "miss", no empty-map flag
    assert parts["n_boxes"].eq(1).all()  # what describes the input stays


def test_nan_weights_below_the_share_are_counted_and_left_out_of_the_numbers(tmp_path):
    ids = good_dataset(tmp_path / "data", 6)
    overrides = base_overrides(
        tmp_path / "data",
        tmp_path / "cache",
        **{
            "model.checkpoint": _nan_checkpoint(tmp_path / "nan.pt"),
            "runtime.max_error_fraction": 1.0,
            "report.overlays": "all",
            "scores.maxboxacc.enabled": "true",
            "scores.maxboxacc.thresholds": 10,
        },
    )
    summary = run_in_process(overrides, tmp_path / "run")
    assert summary["images"] == 6 and summary["non_finite_images"] == 6
    assert summary["accuracy"] != summary["accuracy"]  # NaN in memory, null in the file: nothing was measured
    assert summary["true_class_maps"] == {} and summary["maxboxacc_v2"] is None  # no finite image: no dataset number
    table = pq.read_table(tmp_path / "run" / "samples.parquet")
    assert table.column("pred").null_count == 6 and table.column("correct").null_count == 6
    assert table.column("true_maxboxacc_best_iou").null_count == 6
    assert sorted(table.column("id").to_pylist()) == ids
    assert not list((tmp_path / "run" / "overlays").glob("*.jpg"))  # nothing to draw


def test_only_the_non_finite_images_are_nulled(tmp_path):
    good_dataset(tmp_path / "data", 12)
    reference = run_in_process(base_overrides(tmp_path / "data", tmp_path / "cache"), tmp_path / "ref")
    summary = run_in_process(
        base_overrides(
            tmp_path / "data",
            tmp_path / "cache",
            **{
                "model._target_": "tests.run.test_non_finite_outputs.HalfNanNet",
                "runtime.max_error_fraction": 1.0,
                "model.mean": "[0.5,0.5,0.5]",
                "model.std": "[0.2,0.2,0.2]",
            },
        ),
        tmp_path / "run",
    )
    frame = pd.read_parquet(tmp_path / "run" / "samples.parquet").set_index("id")
    flagged = frame["non_finite_output"]
    assert 0 < flagged.sum() < len(frame) and summary["non_finite_images"] == flagged.sum()
    assert frame.loc[flagged, "pred"].isna().all() and frame.loc[~flagged, "pred"].notna().all()
    assert frame.loc[~flagged, "true_empty"].notna().all()
    kept = frame.loc[~flagged]
    assert summary["accuracy"] == pytest.approx(kept["correct"].astype(bool).mean())
    assert reference["non_finite_images"] == 0


def test_nan_maps_with_finite_logits_are_not_misses(tmp_path):
    good_dataset(tmp_path / "data", 6)
    summary = run_in_process(
        base_overrides(
            tmp_path / "data",
            tmp_path / "cache",
            **{
                "model._target_": "tests.run.test_non_finite_outputs.NanMapNet",
                "model.target_layer": "poison",
                "runtime.max_error_fraction": 1.0,
            },
        ),
        tmp_path / "run",
    )
    frame = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    assert frame["non_finite_output"].all() and summary["non_finite_images"] == 6
    assert frame["true_pointing_hit"].isna().all() and frame["true_empty"].isna().all()  # was: 0.0 (a miss) and False


def test_a_zero_std_is_a_configuration_error(tmp_path):
    good_dataset(tmp_path / "data", 2)
    with pytest.raises(ConfigError) as error:  # was: every input inf/NaN, a 33 % "accuracy", exit 0
        run_in_process(
            base_overrides(tmp_path / "data", tmp_path / "cache", **{"model.std": "[0,0,0]"}), tmp_path / "run"
        )
    assert error.value.option == "model.std"
