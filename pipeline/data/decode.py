"""Image decoding behind one small function, so a GPU decoder can replace it later.

``decode_image`` returns a ``[3, h, w]`` uint8 RGB tensor and the size the annotation's boxes refer to.
Decisions, stated once:
- Orientation: boxes refer to the **stored** pixels by default (``boxes_refer_to="stored"``): the EXIF
  orientation tag is ignored, as ImageNet's and COCO's tools did. With ``"displayed"`` the image is
  rotated by its EXIF tag first and boxes are read in the rotated frame.
- Alpha is dropped (the RGB channels are kept as stored); grayscale is repeated to three channels;
  CMYK is converted by PIL; 16-bit images are scaled to 8 bits (``v * 255 / 65535``).
- A JPEG far larger than the network needs is decoded at a reduced scale (JPEG DCT scaling through
  ``PIL.Image.draft``) so a 12,000 x 9,000 photo costs megabytes, not gigabytes; the reported size is
  still the stored one, so boxes keep their meaning.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps

# The stored-pixel budget above which we refuse an image outright (a decompression bomb).
Image.MAX_IMAGE_PIXELS = None


def decode_image(path: str, boxes_refer_to: str = "stored", min_side: int = 0, max_pixels: int = 400_000_000) -> tuple[torch.Tensor, tuple[int, int]]:
    """Decode an image file.

    Args:
        path: image file.
        boxes_refer_to: ``"stored"`` or ``"displayed"`` (apply the EXIF orientation first).
        min_side: the smallest side the caller will resize to; a JPEG at least twice as large on both
            sides is decoded at a reduced scale that still keeps both sides >= ``min_side``.
        max_pixels: refuse images with more stored pixels than this.
    Returns:
        image ``[3, h, w]`` uint8 and ``(width, height)``, the full-resolution size in the frame the boxes
        refer to (``h, w`` may be smaller when the JPEG was decoded at a reduced scale).
    """
    with Image.open(path) as img:
        width, height = img.size
        if width * height > max_pixels:
            raise ValueError(f"image has {width}x{height} pixels, more than the limit of {max_pixels}")
        transposed = boxes_refer_to == "displayed" and _exif_orientation(img) in (5, 6, 7, 8)
        if img.format == "JPEG" and min_side > 0 and min(width, height) >= 2 * min_side:
            img.draft("RGB", (max(min_side, 1) * width // min(width, height), max(min_side, 1) * height // min(width, height)))
        img.load()
        if boxes_refer_to == "displayed":
            img = ImageOps.exif_transpose(img)
        if transposed:
            width, height = height, width
        array = _to_rgb_array(img)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), (width, height)


def _exif_orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not reject a readable image
        return 1


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """``[h, w, 3]`` uint8 from any PIL mode."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        values = np.asarray(img, dtype=np.float64)
        # An I;16 image is 16-bit by definition: always scale, or a dark image (all values <= 255) would
        # turn bright. Mode "I" (32-bit) does not say its range: scale only when it exceeds 8 bits.
        sixteen_bit = img.mode.startswith("I;16") or values.max(initial=0) > 255
        scale = 255.0 / 65535.0 if sixteen_bit else 1.0
        gray = np.clip(np.round(values * scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        return np.repeat(np.clip(np.round(values), 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)  # a writable copy: torch wants one
