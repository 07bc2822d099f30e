"""Image decoding behind one small function, so a GPU decoder can replace it later.

``decode_image`` returns a ``[3, h, w]`` uint8 RGB tensor and the size the annotation's boxes refer to.
Decisions, stated once:
- Orientation: boxes refer to the **stored** pixels by default (``boxes_refer_to="stored"``): the EXIF
  orientation tag is ignored, as ImageNet's and COCO's tools did. With ``"displayed"`` the image is
  rotated by its EXIF tag first and boxes are read in the rotated frame.
- Alpha is dropped (the RGB channels are kept as stored); grayscale is repeated to three channels;
  CMYK is converted by PIL; 16-bit images are scaled to 8 bits (``round(v * 255 / 65535)``, through a
  lookup table: 1 byte per pixel of scratch memory, not the 24 of a float64 conversion).
- Refused before any pixel is decoded (one error row each): more stored pixels than ``max_pixels``
  (:class:`TooManyPixels`; ``data.preprocess.max_pixels``, one limit for every format) and a longer side
  more than ``max_aspect_ratio`` times the shorter (:class:`ExtremeAspectRatio`; a 1 x 50,000 strip is
  ~100 bytes of PNG, and no crop of it shows anything).
- A JPEG far larger than the network needs is decoded at a reduced scale (JPEG DCT scaling through
  ``PIL.Image.draft``) so a 12,000 x 9,000 photo costs megabytes, not gigabytes; the reported size is
  still the stored one, so boxes keep their meaning.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps

# The one pixel limit is ``max_pixels`` below (checked from the header, before decoding, with a message
# naming the option). PIL's own check (a warning above 89 MP, an error above 179 MP, from
# ``Image.MAX_IMAGE_PIXELS``) is switched off so that it cannot contradict it.
Image.MAX_IMAGE_PIXELS = None
DEFAULT_MAX_PIXELS = 150_000_000  # data.preprocess.max_pixels: a 12,000 x 12,500 photo
DEFAULT_MAX_ASPECT_RATIO = 50.0  # data.preprocess.max_aspect_ratio: wider than any panorama a classifier is audited on
# Peak memory of decoding one image, bytes per stored pixel (PIL's buffer in a 4-byte mode, its RGB
# conversion, the array, the tensor): 14.0 measured on a 4,000 x 4,000 RGBA PNG (tests/data/test_bounded_decode.py, slow).
PEAK_BYTES_PER_PIXEL = 16


class TooManyPixels(ValueError):
    """The image has more stored pixels than the configured limit."""


BOXES_REFER_TO = ("stored", "displayed")  # data.preprocess.boxes_refer_to: which frame the boxes are drawn in


class ExtremeAspectRatio(ValueError):
    """The image's longer side is more than the configured number of times its shorter side."""


def decode_image(
    path: str,
    boxes_refer_to: str = "stored",
    min_side: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_aspect_ratio: float | None = None,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Decode an image file.

    Args:
        path: image file.
        boxes_refer_to: ``"stored"`` or ``"displayed"`` (apply the EXIF orientation first).
        min_side: the smallest side the caller will resize to; a JPEG at least twice as large on both
            sides is decoded at a reduced scale that still keeps both sides >= ``min_side``.
        max_pixels: refuse images with more stored pixels than this (:class:`TooManyPixels`).
        max_aspect_ratio: refuse images whose longer side exceeds this many times the shorter
            (:class:`ExtremeAspectRatio`); None: no limit.
    Returns:
        image ``[3, h, w]`` uint8 and ``(width, height)``, the full-resolution size in the frame the boxes
        refer to (``h, w`` may be smaller when the JPEG was decoded at a reduced scale).
    """
    with Image.open(path) as img:
        width, height = img.size
        if width * height > max_pixels:
            raise TooManyPixels(f"image has {width}x{height} pixels, more than data.preprocess.max_pixels={max_pixels}")
        if max_aspect_ratio is not None and max(width, height) > max_aspect_ratio * min(width, height):
            raise ExtremeAspectRatio(
                f"image is {width}x{height} (aspect ratio {max(width, height) / min(width, height):.0f}:1), more "
                f"than data.preprocess.max_aspect_ratio={max_aspect_ratio:g}"
            )
        transposed = boxes_refer_to == "displayed" and _exif_orientation(img) in (5, 6, 7, 8)
        if img.format == "JPEG" and min_side > 0 and min(width, height) >= 2 * min_side:
            img.draft(
                "RGB", (max(min_side, 1) * width // min(width, height), max(min_side, 1) * height // min(width, height))
            )
        img.load()
        shown: Image.Image = ImageOps.exif_transpose(img) if boxes_refer_to == "displayed" else img
        if transposed:
            width, height = height, width
        array = _to_rgb_array(shown)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), (width, height)


def _exif_orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not reject a readable image
        return 1


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """``[h, w, 3]`` uint8 from any PIL mode."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        values = np.asarray(img)  # uint16 (2 bytes per pixel) or int32 for mode "I"; a read-only view
        # An I;16 image is 16-bit by definition: always scale, or a dark image (all values <= 255) would
        # turn bright. Mode "I" (32-bit) does not say its range: scale only when it exceeds 8 bits.
        sixteen_bit = img.mode.startswith("I;16") or values.max(initial=0) > 255
        gray = _sixteen_to_eight_bits(values) if sixteen_bit else np.clip(values, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float32)  # PIL's own float32: rounded in place, no float64 copy
        gray = np.clip(np.round(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)  # a writable copy: torch wants one


def _sixteen_to_eight_bits(values: np.ndarray) -> np.ndarray:
    """``[h, w]`` 16-bit values (uint16, or int32 clipped to 0..65535) -> uint8 ``round(v * 255 / 65535)``.

    One lookup in a 65,536-entry table made once with that float64 formula: the only scratch memory is the
    1-byte result (the float64 conversion this replaces held three 8-byte arrays per pixel).
    """
    if values.dtype != np.uint16:
        values = np.clip(values, 0, 65535).astype(np.uint16)
    return _SIXTEEN_TO_EIGHT[values]


_SIXTEEN_TO_EIGHT = np.round(np.arange(65536, dtype=np.float64) * 255.0 / 65535.0).astype(np.uint8)
