"""``data.decode=gpu`` runs the device decoding path; here on the CPU device, the same code as on CUDA.

Against the PIL path (``data.decode=cpu``) on real photographs and on generated JPEGs: boxes, placements,
sizes and ids are equal exactly; pixels differ only by the JPEG decoders' rounding. Tolerance: mean
absolute difference <= 2.0 grey levels per image and at most 2 % of the values differing by more than 8 (measured:
below 1.0 on the photographs; about 1.1 on a noisy generated 640 x 480 JPEG that PIL decodes at reduced
scale, ``draft``, while the device path decodes it whole and resizes with antialiasing). Files the device
path must not take (PNG, CMYK JPEG) are decoded by PIL in the worker, equal to the CPU path exactly; a JPEG
the device decoder rejects falls back to PIL for that file only, and a file nothing can decode becomes an
error row of stage ``decode`` while the rest of the batch goes on.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data.batch import Batch
from pipeline.data.dataset import AuditDataset, PreprocessSpec, collate_samples
from pipeline.data.device_decode import (
    decode_batch_on_device,
    read_jpeg_for_device,
    resolve_decode,
)
from pipeline.data.records import SampleRecord
from tests.helpers_corpus import REAL_PHOTO_SAMPLE, per_image_fields

SAMPLE = REAL_PHOTO_SAMPLE / "images"
CPU = torch.device("cpu")


def photo(path: Path, width: int, height: int, seed: int, mode: str = "RGB", fmt: str = "JPEG") -> Path:
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((9, 12, 3)) * 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
    noisy = np.clip(np.asarray(small, dtype=np.int64) + rng.integers(-20, 21, (height, width, 3)), 0, 255).astype(
        np.uint8
    )
    Image.fromarray(noisy).convert(mode).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path


def records_for(paths: list[Path]) -> list[SampleRecord]:
    out = []
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            width, height = img.size
        out.append(
            SampleRecord(
                sample_id=f"s{i}",
                image_path=str(path),
                label=0,
                boxes=np.array(
                    [[width * 0.1, height * 0.2, width * 0.7, height * 0.9], [1, 1, 30, 20]], dtype=np.float32
                ),
            )
        )
    return out


def both_paths(records: list[SampleRecord], spec: PreprocessSpec) -> tuple[Batch, Batch]:
    on_cpu = collate_samples([AuditDataset(records, spec)[i] for i in range(len(records))])
    loaded = collate_samples([AuditDataset(records, spec, decode_on_device=True)[i] for i in range(len(records))])
    on_device = decode_batch_on_device(loaded, spec, CPU, [r.image_path for r in records])
    return on_cpu, on_device


def assert_same_geometry(on_cpu: Batch, on_device: Batch) -> None:
    expected, got = per_image_fields(on_cpu, pixels=False), per_image_fields(on_device, pixels=False)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def assert_close_pixels(a: torch.Tensor, b: torch.Tensor) -> None:
    difference = (a.int() - b.int()).abs().float()
    for row in range(a.shape[0]):
        assert difference[row].mean() <= 2.0, (row, difference[row].mean())
        assert (difference[row] > 8).float().mean() <= 0.02, (row, (difference[row] > 8).float().mean())


@pytest.mark.real_photos
def test_real_photos_same_boxes_and_close_pixels():
    paths = sorted(SAMPLE.glob("*.JPEG"))[:12]
    records = records_for(paths)
    spec = PreprocessSpec(mode="resize_crop", size=224, resize_size=256)
    on_cpu, on_device = both_paths(records, spec)
    loaded = collate_samples([AuditDataset(records, spec, decode_on_device=True)[i] for i in range(len(records))])
    assert len(loaded.encoded) == len(records)  # every photo took the device path
    assert_same_geometry(on_cpu, on_device)
    assert_close_pixels(on_cpu.image, on_device.image)


@pytest.mark.parametrize("mode", ["resize_crop", "resize", "letterbox"])
def test_generated_jpegs_every_mode(tmp_path, mode):
    paths = [
        photo(tmp_path / f"p{i}.jpg", w, h, i)
        for i, (w, h) in enumerate([(500, 375), (375, 500), (97, 61), (640, 480)])
    ]
    spec = PreprocessSpec(mode=mode, size=96, resize_size=110 if mode == "resize_crop" else None)
    on_cpu, on_device = both_paths(records_for(paths), spec)
    assert_same_geometry(on_cpu, on_device)
    assert_close_pixels(on_cpu.image, on_device.image)


def test_png_and_cmyk_stay_on_the_cpu_path_and_equal_it(tmp_path):
    paths = [
        photo(tmp_path / "a.png", 80, 60, 1, fmt="PNG"),
        photo(tmp_path / "b.jpg", 80, 60, 2, mode="CMYK"),
        photo(tmp_path / "c.jpg", 80, 60, 3),
    ]
    assert (
        read_jpeg_for_device(str(paths[0]), "stored") is None and read_jpeg_for_device(str(paths[1]), "stored") is None
    )
    spec = PreprocessSpec(mode="resize", size=64, resize_size=None)
    on_cpu, on_device = both_paths(records_for(paths), spec)
    assert torch.equal(on_cpu.image[:2], on_device.image[:2])  # decoded by PIL in the worker, as before
    assert_close_pixels(on_cpu.image[2:], on_device.image[2:])


def test_a_rejected_jpeg_falls_back_for_that_file_and_an_undecodable_one_leaves_the_batch(tmp_path):
    good = photo(tmp_path / "good.jpg", 120, 90, 4)
    whole = photo(tmp_path / "whole.jpg", 120, 90, 5).read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole[: len(whole) // 3])  # header intact, scan data cut: nothing decodes it
    records = records_for([good, truncated, photo(tmp_path / "last.jpg", 120, 90, 6)])
    spec = PreprocessSpec(mode="resize", size=64, resize_size=None)
    loaded = collate_samples([AuditDataset(records, spec, decode_on_device=True)[i] for i in range(3)])
    assert [row for row, _ in loaded.encoded] == [0, 1, 2]

    calls = {"n": 0}
    from pipeline.data import device_decode

    real = device_decode._decode_jpegs

    def reject_first_file(data, device):  # the device decoder refuses good.jpg; the CPU path must take it
        calls["n"] += 1
        if any(torch.equal(d, loaded.encoded[0][1]) for d in data):
            raise RuntimeError("nvjpeg: unsupported")
        return real(data, device)

    device_decode._decode_jpegs = reject_first_file
    try:
        out = decode_batch_on_device(loaded, spec, CPU, [r.image_path for r in records])
    finally:
        device_decode._decode_jpegs = real
    assert out.index.tolist() == [0, 2]
    assert [(f.index, f.stage) for f in out.failures] == [(1, "decode")]
    on_cpu = collate_samples([AuditDataset(records, spec)[i] for i in (0, 2)])
    assert torch.equal(out.image[0], on_cpu.image[0])  # good.jpg: decoded by PIL, exactly the CPU path
    assert_close_pixels(out.image[1:], on_cpu.image[1:])
    assert torch.equal(out.boxes.coords, on_cpu.boxes.coords) and calls["n"] >= 2


def test_decode_option():
    assert resolve_decode("gpu", CPU) and not resolve_decode("auto", CPU) and not resolve_decode("cpu", CPU)
    assert resolve_decode("auto", torch.device("cuda")) and not resolve_decode("cpu", torch.device("cuda"))
    with pytest.raises(ValueError, match="unknown decoder"):
        resolve_decode("nvjpeg", CPU)


def test_bytes_are_the_file(tmp_path):
    path = photo(tmp_path / "x.jpg", 40, 30, 7)
    data, size = read_jpeg_for_device(str(path), "stored")
    assert size == (40, 30) and bytes(data.numpy()) == path.read_bytes()
    assert read_jpeg_for_device(str(path), "displayed") is not None  # no EXIF tag: nothing to rotate
    rotated = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    with Image.open(path) as img:
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", exif=exif)
    rotated.write_bytes(buffer.getvalue())
    assert (
        read_jpeg_for_device(str(rotated), "displayed") is None
        and read_jpeg_for_device(str(rotated), "stored") is not None
    )
