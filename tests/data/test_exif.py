"""EXIF orientation: boxes follow the frame the annotations refer to (``data.preprocess.boxes_refer_to``),
and an annotation in the other frame is reported, not silently misplaced."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps

from pipeline.data.dataset import AuditDataset, PreprocessSpec
from pipeline.data.records import SampleRecord
from tests.helpers_corpus import add_sample, base_overrides, exif_jpeg, noise_image, run_in_process, write_classes


def _exif_dataset(root: Path, frame: str) -> tuple[int, int, tuple[int, int, int, int]]:
    """One EXIF-rotated sample annotated in the ``stored`` or ``displayed`` frame; returns the frame's
    size and the patch's pixel-edge box in it."""
    picture, data = exif_jpeg()
    if frame == "stored":
        width, height, box = 64, 48, (40, 8, 56, 24)
    else:
        shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("L")) > 128
        ys, xs = np.nonzero(shown)
        height, width = shown.shape
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    add_sample(root, "rotated", data, boxes=[(box[0] + 1, box[1] + 1, box[2], box[3])], size=(width, height))
    write_classes(root)
    return width, height, box


@pytest.mark.parametrize("frame", ["stored", "displayed"])
def test_exif_orientation_boxes_follow_the_chosen_frame(tmp_path, frame):
    """``stored`` (default) ignores the EXIF tag; ``displayed`` rotates first. Either way, the box lands
    on the white patch in the network input, and the run reports the frame's size."""
    width, height, box = _exif_dataset(tmp_path / "data", frame)
    assert (width, height) == ((64, 48) if frame == "stored" else (48, 64))
    record = SampleRecord(
        "rotated", str(tmp_path / "data" / "images" / "rotated.jpg"), 0, np.asarray([box], np.float32)
    )
    item = AuditDataset([record], PreprocessSpec(mode="resize", size=64, resize_size=None, boxes_refer_to=frame))[0]
    assert item["ok"] and (item["width"], item["height"]) == (width, height)
    x1, y1, x2, y2 = (int(round(float(v))) for v in item["boxes"][0])
    pixels = item["image"].float().mean(dim=0)
    assert pixels[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].mean() > 200  # the patch is inside the box
    outside = torch.ones_like(pixels, dtype=torch.bool)
    outside[max(0, y1 - 3) : y2 + 3, max(0, x1 - 3) : x2 + 3] = False
    assert pixels[outside].mean() < 20  # and nothing bright outside it

    summary = run_in_process(
        base_overrides(tmp_path / "data", tmp_path / "cache", **{"data.preprocess.boxes_refer_to": frame}),
        tmp_path / "run",
    )
    row = pd.read_parquet(tmp_path / "run" / "samples.parquet").iloc[0]
    assert summary["errors"] == 0 and (row.width, row.height, row.n_boxes) == (width, height, 1)


def test_exif_annotation_in_the_other_frame_is_reported(tmp_path):
    """Stored-frame annotations audited with boxes_refer_to=displayed: the size check catches it."""
    _exif_dataset(tmp_path / "data", "stored")
    # a plain photo beside it: a run in which no sample is audited stops with exit 3 (run.check_failure_budget)
    add_sample(tmp_path / "data", "upright", noise_image(24, 24, 0), boxes=[(3, 3, 20, 20)])
    run_in_process(
        base_overrides(
            tmp_path / "data",
            tmp_path / "cache",
            **{"data.preprocess.boxes_refer_to": "displayed", "runtime.max_error_fraction": 1.0},
        ),
        tmp_path / "run",
    )
    assert pd.read_parquet(tmp_path / "run" / "samples.parquet")["id"].tolist() == ["upright"]
    (error,) = pd.read_parquet(tmp_path / "run" / "errors.parquet").itertuples()
    assert (error.id, error.stage) == (
        "rotated",
        "annotation",
    ) and "annotation says 64x48 but the image is 48x64" in error.message
