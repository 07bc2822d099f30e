"""The CUDA paths, run where a GPU is (``pytest -m cuda``; skipped elsewhere; scripts/gpu_check.sh runs them).

- nvJPEG batched decoding (``data.decode=gpu`` on CUDA) against PIL: boxes exactly, pixels within the
  tolerance of tests/data/test_device_decode.py;
- the defaults on CUDA: bf16 autocast for the forward, maps and scores float32 and finite, channels-last, the
  same predictions as an fp32 run on nearly every image and energy-in-box within 0.05;
- ``runtime.compile=true`` and ``runtime.batch_size=auto`` runs that give every image once;
- a whole audit with ``data.decode=gpu`` equal in rows to ``data.decode=cpu``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from pipeline.data.dataset import AuditDataset, PreprocessSpec, collate_samples
from pipeline.data.device_decode import decode_batch_on_device
from tests.data.test_device_decode import assert_close_pixels, photo, records_for
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CUDA = torch.device("cuda")


def test_nvjpeg_batch_equals_pil_geometry_and_is_close_in_pixels(tmp_path):
    paths = [
        photo(tmp_path / f"p{i}.jpg", w, h, i)
        for i, (w, h) in enumerate([(500, 375), (375, 500), (97, 61), (640, 480)] * 4)
    ]
    records = records_for(paths)
    spec = PreprocessSpec(mode="resize_crop", size=224, resize_size=256)
    on_cpu = collate_samples([AuditDataset(records, spec)[i] for i in range(len(records))])
    loaded = collate_samples([AuditDataset(records, spec, decode_on_device=True)[i] for i in range(len(records))])
    on_gpu = decode_batch_on_device(loaded, spec, CUDA, [r.image_path for r in records])
    assert on_gpu.image.device.type == "cuda"
    assert torch.equal(on_cpu.boxes.coords, on_gpu.boxes.coords) and torch.equal(on_cpu.boxes.valid, on_gpu.boxes.valid)
    assert all(
        torch.equal(getattr(on_cpu.placement, name), getattr(on_gpu.placement, name))
        for name in ("scale_x", "scale_y", "offset_x", "offset_y")
    )
    assert torch.equal(on_cpu.width, on_gpu.width) and torch.equal(on_cpu.height, on_gpu.height)
    assert_close_pixels(on_cpu.image, on_gpu.image.cpu())


def _run(tmp_path: Path, name: str, extra: list[str]) -> pd.DataFrame:
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache", **{"runtime.num_workers": 2})
    overrides = [o for o in overrides if not o.startswith("runtime.device=")] + ["runtime.device=cuda", *extra]
    summary = run_in_process(overrides, tmp_path / name)
    frame = pd.read_parquet(tmp_path / name / "samples.parquet").set_index("id").sort_index()
    assert summary["images"] == len(frame)
    return frame


def test_cuda_defaults_bf16_close_to_fp32_and_every_option_runs(tmp_path):
    ids = good_dataset(tmp_path / "data", 64, side=48)
    fp32 = _run(tmp_path, "fp32", ["runtime.precision=fp32", "runtime.channels_last=false"])
    default = _run(tmp_path, "default", [])
    assert sorted(default.index) == sorted(ids)
    assert (default["pred"] == fp32["pred"]).mean() >= 0.95
    both = default["true_energy_in_box"].notna() & fp32["true_energy_in_box"].notna()
    assert (default.loc[both, "true_energy_in_box"] - fp32.loc[both, "true_energy_in_box"]).abs().max() <= 0.05
    assert default["true_energy_in_box"].dtype == fp32["true_energy_in_box"].dtype
    for name, extra in {
        "compiled": ["runtime.compile=true"],
        "auto_batch": ["runtime.batch_size=auto"],
        "gpu_decode": ["data.decode=gpu"],
        "cpu_decode": ["data.decode=cpu"],
    }.items():
        frame = _run(tmp_path, name, extra)
        assert sorted(frame.index) == sorted(ids), name
    gpu, cpu = (
        pd.read_parquet(tmp_path / "gpu_decode" / "samples.parquet"),
        pd.read_parquet(tmp_path / "cpu_decode" / "samples.parquet"),
    )
    assert (gpu.set_index("id").sort_index()["pred"] == cpu.set_index("id").sort_index()["pred"]).mean() >= 0.9
