"""JPEG decoding on the device (``data.decode=gpu``): bytes from the loader, pixels made beside the model.

The loader workers read each JPEG's bytes and its header (size, colour mode, EXIF orientation) and plan
the placement and the boxes exactly as for CPU decoding (:mod:`pipeline.data.geometry`), so boxes are the
same numbers whichever decoder runs. The main process then decodes the batch's JPEGs in one
``torchvision.io.decode_jpeg(list, device=...)`` call (nvJPEG on CUDA) and resizes and crops each image on
the device with the same :func:`~pipeline.data.geometry.image_to_input`.

What stays on the CPU path (decoded by PIL in the workers, as with ``data.decode=cpu``): files that are
not JPEG, JPEGs that are not plain RGB or greyscale (CMYK, YCCK), JPEGs that must be rotated by their EXIF
tag (``boxes_refer_to=displayed``), and images over the pixel or aspect-ratio limits (refused there with the
usual message).
A file the device decoder rejects is decoded again with PIL on the CPU, that file only; if PIL rejects it
too, it becomes an error row (stage ``decode``) and leaves the batch.

Pixels differ from PIL's by the JPEG decoders' rounding (inverse DCT and chroma upsampling) and, for a
JPEG at least twice the needed size, by PIL's reduced-scale decoding (``draft``), which the device path
does not use; the test states the tolerance.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from pipeline.data.batch import Batch, Failure
from pipeline.data.decode import DEFAULT_MAX_PIXELS, decode_image
from pipeline.data.geometry import image_to_input, plan_placement

JPEG_MAGIC = b"\xff\xd8\xff"
DECODE_OPTIONS = ("auto", "cpu", "gpu")
PLAIN_JPEG_MODES = ("RGB", "L")  # what the device decoder turns into RGB like PIL does


def resolve_decode(option: str, device: torch.device) -> bool:
    """Whether JPEGs are decoded on the device: ``gpu`` always (CUDA or, for tests, the CPU device running the
    same code), ``auto`` on CUDA only, ``cpu`` never. Raises ValueError for another value."""
    if option not in DECODE_OPTIONS:
        raise ValueError(f"unknown decoder {option!r}; use auto, cpu or gpu")
    return option == "gpu" or (option == "auto" and device.type == "cuda")


def read_jpeg_for_device(
    path: str, boxes_refer_to: str, max_pixels: int = DEFAULT_MAX_PIXELS, max_aspect_ratio: float | None = None
) -> tuple[torch.Tensor, tuple[int, int]] | None:
    """In a loader worker: the file's bytes and stored ``(width, height)`` when the device can decode it as
    the CPU path would, else None (the caller decodes it with PIL).

    Returns:
        ``[n_bytes]`` uint8 tensor of the file, and its size from the header.
    """
    data = Path(path).read_bytes()
    if not data.startswith(JPEG_MAGIC):
        return None
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        if img.format != "JPEG" or img.mode not in PLAIN_JPEG_MODES or width * height > max_pixels:
            return None  # over a limit: the CPU path refuses it with its usual error
        if max_aspect_ratio is not None and max(width, height) > max_aspect_ratio * min(width, height):
            return None
        if boxes_refer_to == "displayed" and _orientation(img) != 1:
            return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8), (width, height)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 -- a broken EXIF block: let the CPU path decide, as it does
        return 0


def decode_batch_on_device(batch: Batch, spec, device: torch.device, image_paths: list[str]) -> Batch:
    """Make the batch's network inputs on ``device`` from the JPEG bytes its loader collected.

    Args:
        batch: from :func:`~pipeline.data.dataset.collate_samples`; ``encoded`` lists ``(row, bytes)`` for the
            rows whose pixels are still JPEG bytes (their ``image`` rows are placeholders), ``image``
            ``[B, 3, S, S]`` uint8 holds the rows the workers decoded.
        spec: the run's :class:`~pipeline.data.dataset.PreprocessSpec`.
        image_paths: the file of each row (for the per-file CPU fallback).
    Returns:
        the batch with ``image`` ``[B', 3, S, S]`` uint8 on ``device``; rows that no decoder could read are
        removed from every per-row field and added to ``failures`` (stage ``decode``).
    """
    encoded = batch.encoded
    images = batch.image.to(device, non_blocking=True)
    if not encoded:
        return batch.with_image(images)
    rows = [row for row, _ in encoded]
    decoded: list[torch.Tensor | None]
    try:  # one call for the batch (nvJPEG batched decode on CUDA)
        decoded = list(_decode_jpegs([data for _, data in encoded], device))
    except RuntimeError:  # some file is bad: decode one by one so that only that file falls back
        decoded = [_decode_one(data, device) for _, data in encoded]
    failed_rows: list[tuple[int, BaseException]] = []
    for row, image in zip(rows, decoded):
        width, height = int(batch.width[row]), int(batch.height[row])
        try:
            if image is None or tuple(image.shape[-2:]) != (height, width):
                image, _ = decode_image(
                    image_paths[row],
                    spec.boxes_refer_to,
                    min_side=spec.resize_size or spec.size,
                    max_pixels=spec.max_pixels,
                    max_aspect_ratio=spec.max_aspect_ratio,
                )
                image = image.to(device)
            placement = plan_placement(width, height, spec.mode, spec.size, spec.resize_size)
            # Per image: the images have different sizes, so each has its own resize (a few kernels each).
            images[row] = image_to_input(image, placement, spec.interpolation, spec.fill)
        except Exception as error:  # noqa: BLE001 -- one bad file must never stop the run
            failed_rows.append((row, error))
    batch = batch.with_image(images)
    if failed_rows:
        batch = _drop_rows(batch, failed_rows)
    return batch


def _decode_jpegs(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    try:
        return _decode_jpegs([data], device)[0]
    except RuntimeError:
        return None


def _drop_rows(batch: Batch, failed_rows: list[tuple[int, BaseException]]) -> Batch:
    """The batch without ``failed_rows``, which become ``failures`` entries (stage ``decode``)."""
    bad = {row for row, _ in failed_rows}
    keep = torch.tensor([row not in bad for row in range(len(batch))])
    failures = list(batch.failures) + [
        Failure(int(batch.index[row]), "decode", type(error).__name__, str(error)[:500]) for row, error in failed_rows
    ]
    return replace(batch.rows(keep), failures=failures)
