"""Decoding: channel rules per image mode, and a huge JPEG decoded in modest memory."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from pipeline.data.decode import decode_image
from tests.helpers_corpus import MAIN, noise_image


def test_decoder_channel_rules(tmp_path):
    """Alpha dropped (RGB kept as stored), grey repeated, 16-bit scaled by 255/65535 (also a dark one),
    CMYK converted by PIL."""
    rgba = noise_image(9, 7, 1, "RGBA")
    rgba.save(tmp_path / "a.png")
    image, size = decode_image(str(tmp_path / "a.png"))
    assert size == (9, 7) and torch.equal(image, torch.from_numpy(np.asarray(rgba)[:, :, :3].copy()).permute(2, 0, 1))
    noise_image(9, 7, 2, "L").save(tmp_path / "g.png")
    image, _ = decode_image(str(tmp_path / "g.png"))
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    for name, values, want in (
        ("bright", [[0, 65535], [32768, 257]], [[0, 255], [128, 1]]),
        ("dark", [[0, 255], [128, 200]], [[0, 1], [0, 1]]),
    ):
        Image.fromarray(np.asarray(values, np.uint16)).save(tmp_path / f"{name}.png")
        assert Image.open(tmp_path / f"{name}.png").mode.startswith("I;16")
        image, _ = decode_image(str(tmp_path / f"{name}.png"))
        assert image[0].tolist() == want, name
    noise_image(9, 7, 3, "CMYK").save(tmp_path / "c.jpg", quality=95)
    image, _ = decode_image(str(tmp_path / "c.jpg"))
    assert torch.equal(
        image, torch.from_numpy(np.asarray(Image.open(tmp_path / "c.jpg").convert("RGB")).copy()).permute(2, 0, 1)
    )


def test_huge_jpeg_decodes_in_modest_memory(big_jpeg, tmp_path):
    """A 12,000 x 9,000 JPEG (309 MiB as RGB) decodes in a fresh process whose peak RSS grows by far
    less than the full image: the decoder reduces it while decoding (PIL draft, as the dataset asks with
    ``min_side`` = the resize target). Only the decoder is imported, to keep the child light."""
    Image.new("RGB", (300, 200), (90, 120, 150)).save(tmp_path / "warm.jpg")
    code = f"""
import resource
from pipeline.data.decode import decode_image
decode_image({str(tmp_path / "warm.jpg")!r}, min_side=256)  # warm-up: first-call allocations before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image, (width, height) = decode_image({str(big_jpeg)!r}, min_side=256)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(width, height, min(image.shape[1:]), (after - before) / 1024)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=MAIN, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    width, height, short_side, grown = result.stdout.split()
    assert (width, height) == ("12000", "9000") and 256 <= int(short_side) < 9000  # reduced, still >= the resize target
    assert float(grown) < 60, f"peak RSS grew by {float(grown):.0f} MiB decoding a 12000x9000 JPEG"
