"""Decoding and placing images within bounded memory (issue 11, cases 12 and 16).

- Case 12: ``image_to_input`` resizes only the window of the stored image that the centre crop keeps when
  the whole resized image would be large; the result must equal the whole-image path (tolerance: 0
  levels, measured over every interpolation), with the same placement and so the same boxes.
- Case 16: 16-bit images become 8 bits in integers, equal to the float64 formula for every value and
  with less scratch memory.
"""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data import geometry
from pipeline.data.decode import ExtremeAspectRatio, TooManyPixels, _sixteen_to_eight_bits, _to_rgb_array, decode_image
from pipeline.data.geometry import boxes_to_input, image_to_input, plan_placement, source_window

SHAPES = [(12, 240), (3, 150), (1, 500), (240, 10), (7, 301), (100, 2000), (37, 1111), (2000, 90)]
INTERPOLATIONS = ["bilinear", "bicubic", "nearest", "nearest-exact"]


def _whole_image_path(image: torch.Tensor, placement, interpolation: str) -> torch.Tensor:
    """The pre-fix path: resize the whole image, then cut the crop (the crop-first rule switched off)."""
    saved = geometry.CROP_FIRST_FACTOR
    geometry.CROP_FIRST_FACTOR = float("inf")
    try:
        return image_to_input(image, placement, interpolation)
    finally:
        geometry.CROP_FIRST_FACTOR = saved


@pytest.mark.parametrize("size,resize_size", [(32, 40), (224, 256)])
def test_crop_first_gives_the_same_pixels_as_the_whole_image_resize(size, resize_size):
    rng = np.random.default_rng(0)
    for (width, height), interpolation in itertools.product(SHAPES, INTERPOLATIONS):
        image = torch.from_numpy(rng.integers(0, 256, (3, height, width), dtype=np.uint8))
        placement = plan_placement(width, height, "resize_crop", size, resize_size)
        assert (
            placement.resized_width * placement.resized_height > geometry.CROP_FIRST_FACTOR * size * size
        )  # the new path runs
        fast, reference = (
            image_to_input(image, placement, interpolation),
            _whole_image_path(image, placement, interpolation),
        )
        assert torch.equal(fast, reference), (
            width,
            height,
            interpolation,
            int((fast.int() - reference.int()).abs().max()),
        )


def test_crop_first_resizes_a_window_not_the_strip():
    """A 1 x 50,000 strip: the window is a few source rows, whatever the strip's length."""
    rows = source_window(50_000, 256 * 50_000, 128 * 50_000 - 112, 128 * 50_000 + 112)
    assert rows.source_stop - rows.source_start <= 12 and rows.resized_length == 256 * (
        rows.source_stop - rows.source_start
    )
    strip = torch.full((3, 50_000, 1), 7, dtype=torch.uint8)
    placement = plan_placement(1, 50_000, "resize_crop", 224, 256)
    out = image_to_input(strip, placement)  # the whole-image path would allocate 3 x 12,800,000 x 256 bytes (9.2 GiB)
    assert out.shape == (3, 224, 224) and int(out.min()) == int(out.max()) == 7
    boxes, kept = boxes_to_input(
        np.array([[0, 24_990, 1, 25_010]], np.float32), placement
    )  # same placement -> same boxes
    assert kept.tolist() == [True] and boxes.tolist() == [[0.0, 0.0, 224.0, 224.0]]


def test_source_window_is_the_whole_axis_when_no_exact_window_exists():
    window = source_window(375, 256, 16, 240)  # period 375: the usual ImageNet photo keeps the usual path
    assert (window.source_start, window.source_stop, window.resized_start, window.resized_length) == (0, 375, 0, 256)


def test_sixteen_bit_conversion_equals_the_float64_formula_for_every_value():
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = np.clip(np.round(values.astype(np.float64) * 255.0 / 65535.0), 0, 255).astype(np.uint8)
    assert np.array_equal(_sixteen_to_eight_bits(values), expected)
    wide = np.array([[-5, 0, 300, 65535, 70000]], dtype=np.int32)  # mode "I": clipped to 16 bits first
    assert _sixteen_to_eight_bits(wide).tolist() == [[0, 0, 1, 255, 255]]


def test_sixteen_bit_png_converts_within_six_bytes_per_pixel(tmp_path):
    """Peak memory of the conversion, traced by tracemalloc (numpy reports its buffers to it): the uint16
    array (2 bytes per pixel), the uint8 gray (1) and the RGB result (3). The float64 conversion this
    replaced peaked at 24.0 bytes per pixel under the same measurement (main at 9d6a92d)."""
    side = 1000
    path = tmp_path / "g16.png"
    Image.fromarray((np.arange(side * side, dtype=np.uint32) % 65536).astype(np.uint16).reshape(side, side)).save(path)
    with Image.open(path) as img:
        img.load()
        tracemalloc.start()
        rgb = _to_rgb_array(img)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert rgb.shape == (side, side, 3) and rgb.dtype == np.uint8
    assert peak <= 6.1 * side * side, peak / (side * side)


def test_pixel_and_aspect_limits_are_checked_from_the_header(tmp_path):
    path = tmp_path / "strip.png"
    Image.new("RGB", (1, 5000)).save(path)
    with pytest.raises(ExtremeAspectRatio, match=r"1x5000 .*data.preprocess.max_aspect_ratio=50"):
        decode_image(str(path), max_aspect_ratio=50)
    with pytest.raises(TooManyPixels, match="data.preprocess.max_pixels=4999"):
        decode_image(str(path), max_pixels=4999)
    image, size = decode_image(str(path), max_aspect_ratio=5000)
    assert size == (1, 5000) and image.shape == (3, 5000, 1)


# The peak is the process's VmHWM (/proc/self/status), not getrusage's ru_maxrss: Linux keeps ru_maxrss across
# exec, so a child of a large pytest process starts with its parent's peak and the decode never rises above it.
PEAK_SCRIPT = """
import re, sys
from pipeline.data.decode import decode_image
from pipeline.data.geometry import image_to_input, plan_placement
def high_water_bytes():
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)) * 1024
before = high_water_bytes()
image, (width, height) = decode_image(sys.argv[1], min_side=256)
image_to_input(image, plan_placement(width, height, "resize_crop", 224, 256))
print((high_water_bytes() - before) / (width * height))
"""


@pytest.mark.slow
def test_decode_peak_memory_is_within_the_stated_bytes_per_pixel(tmp_path):
    """PEAK_BYTES_PER_PIXEL (used to check data.preprocess.max_pixels x workers against memory) bounds the
    measured peak of decode + placement of a 4,000 x 4,000 RGBA PNG (measured 14.0 bytes per pixel)."""
    import subprocess
    import sys

    from pipeline.data.decode import PEAK_BYTES_PER_PIXEL
    from tests.helpers_corpus import MAIN

    path = tmp_path / "rgba.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (4000, 4000, 4), dtype=np.uint8), "RGBA").save(
        path, compress_level=1
    )
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(path)], cwd=MAIN, capture_output=True, text=True, check=True
    )
    assert 8 < float(result.stdout) <= PEAK_BYTES_PER_PIXEL, result.stdout
