"""From sample records to batches: decode, place in the network input, move boxes along.

The dataset never raises for one bad file: a sample that fails becomes ``ok=False`` with the stage and
the error, the collate function takes it out of the batch and hands it to the run, which writes it to
``errors.parquet``. Images stay uint8 until they reach the device (4x less to copy); the engine
normalises them there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.batch import INPUT_FRAME, STORED_FRAME, Batch, Boxes, Failure, Placements
from pipeline.data.decode import DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MAX_PIXELS, decode_image
from pipeline.data.device_decode import read_jpeg_for_device
from pipeline.data.geometry import (
    MODES,
    boxes_in_stored,
    boxes_to_input,
    checked_boxes,
    image_to_input,
    plan_placement,
)
from pipeline.data.records import SampleRecord
from pipeline.errors import OptionError


@dataclass(frozen=True)
class PreprocessSpec:
    """How images become network inputs (see :mod:`pipeline.data.geometry`)."""

    mode: str = "resize_crop"
    size: int = 224
    resize_size: int | None = 256
    interpolation: str = "bilinear"
    fill: int = 0
    boxes_refer_to: str = "stored"
    check_annotated_size: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS  # refuse larger images (stored pixels), one error row each
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO  # refuse images whose longer side is more times the shorter


# Where the data config says ``auto`` and the model's weights say nothing: ImageNet evaluation.
PREPROCESS_FALLBACK: dict[str, Any] = {"size": 224, "resize_size": 256, "interpolation": "bilinear"}
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic")  # what torchvision resizes uint8 tensors with


def resolve_preprocess(options: Mapping, from_model: Mapping) -> tuple[PreprocessSpec, dict[str, str]]:
    """The preprocessing of a run: ``data.preprocess`` with each ``auto`` value taken from the model.

    Args:
        options: the ``data.preprocess`` config (``size``, ``resize_size``, ``interpolation`` may be ``auto``).
        from_model: what the weights' metadata says (``BuiltModel.preprocess``), possibly empty.
    Returns:
        the spec, and for each of ``size``/``resize_size``/``interpolation`` where its value came from
        (``config``, ``model``, or ``fallback`` = :data:`PREPROCESS_FALLBACK`; ``unused`` for ``resize_size``
        outside ``resize_crop``). An ``auto`` resize size keeps the model's crop ratio ``resize_size / size``
        (else 256 / 224) at the size actually used. timm's other crop modes (squash, border) are not modelled:
        they become a centre crop.
    Raises:
        ValueError: ``"<option>: <reason>"`` for a value that cannot work.
    """
    values, sources = {}, {}
    for key in ("size", "interpolation"):
        value = options.get(key)
        if value == "auto":
            value, sources[key] = (
                (from_model[key], "model") if key in from_model else (PREPROCESS_FALLBACK[key], "fallback")
            )
        else:
            sources[key] = "config"
        values[key] = value
    resize_size = options.get("resize_size")
    sources["resize_size"] = "config"
    if resize_size == "auto" and isinstance(values["size"], int):
        # The crop ratio, not the number, carries over: an input size set elsewhere keeps the weights' ratio
        # (resnet50 V2 at 232/224 audited at 384 resizes to 398), so a size and a resize from two sources never clash.
        if "resize_size" in from_model and "size" in from_model:
            ratio, sources["resize_size"] = from_model["resize_size"] / from_model["size"], "model"
        else:
            ratio, sources["resize_size"] = PREPROCESS_FALLBACK["resize_size"] / PREPROCESS_FALLBACK["size"], "fallback"
        resize_size = int(round(values["size"] * ratio))
    mode = str(options.get("mode", "resize_crop"))
    if mode not in MODES:
        raise OptionError("mode", f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if not isinstance(values["size"], int) or values["size"] < 8:
        raise OptionError("size", f"{values['size']!r} is not a side of at least 8 pixels (or auto)")
    if mode != "resize_crop":
        sources["resize_size"] = "unused"
    if (
        mode == "resize_crop"
        and resize_size is not None
        and (not isinstance(resize_size, int) or resize_size < values["size"])
    ):
        raise OptionError("resize_size", f"{resize_size!r} must be an integer >= size ({values['size']}), null or auto")
    if str(values["interpolation"]) not in INTERPOLATIONS:
        raise OptionError(
            "interpolation", f"{values['interpolation']!r} is not one of {', '.join(INTERPOLATIONS)} (or auto)"
        )
    max_pixels = options.get("max_pixels", DEFAULT_MAX_PIXELS)
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise OptionError("max_pixels", f"{max_pixels!r} is not a positive whole number of pixels")
    max_aspect_ratio = options.get("max_aspect_ratio", DEFAULT_MAX_ASPECT_RATIO)
    if (
        isinstance(max_aspect_ratio, bool)
        or not isinstance(max_aspect_ratio, (int, float))
        or not max_aspect_ratio >= 1
    ):
        raise OptionError("max_aspect_ratio", f"{max_aspect_ratio!r} is not a number >= 1")
    spec = PreprocessSpec(
        mode=mode,
        size=values["size"],
        resize_size=resize_size if mode == "resize_crop" else None,
        interpolation=str(values["interpolation"]),
        fill=int(options.get("fill", 0)),
        boxes_refer_to=str(options.get("boxes_refer_to", "stored")),
        check_annotated_size=bool(options.get("check_annotated_size", True)),
        max_pixels=int(max_pixels),
        max_aspect_ratio=float(max_aspect_ratio),
    )
    return spec, sources


class AuditDataset(Dataset):
    """Samples for the audit, one per record.

    Each item is a dict:
        ``index`` (int, position in ``records``), ``ok`` (bool), ``image`` ``[3, S, S]`` uint8,
        ``boxes`` ``[M, 4]`` float32 in network-input pixel-edge coordinates (clipped to the input),
        ``n_boxes_dropped`` (valid boxes that the crop cut away: outside the input), ``width``/``height``
        (stored size), ``placement`` ``[4]`` float64 ``(scale_x, scale_y, offset_x, offset_y)`` (stored
        point ``x`` -> input point ``x * scale_x + offset_x``), ``boxes_stored`` ``[M', 4]`` float32, the
        annotated boxes clipped to the stored image (for ``scores.space=original``), ``n_boxes_over_cap``
        (annotated boxes beyond ``max_boxes``, left out), and when ``ok`` is False: ``stage`` and ``error``
        (type and message). An annotated box that is wrong for the decoded image (inverted, under a pixel,
        outside it or past its edge beyond a small tolerance: :func:`~pipeline.data.geometry.checked_boxes`)
        fails the sample at stage ``annotation`` with error type ``BadAnnotation``; it is never dropped quietly.

    ``max_boxes`` (``data.max_boxes``): at most this many boxes per image, the first ones in annotation
    order; it bounds the ``[B, N, ...]`` score tensors whatever an annotation holds.
    """

    def __init__(
        self,
        records: list[SampleRecord],
        spec: PreprocessSpec,
        max_boxes: int | None = None,
        decode_on_device: bool = False,
    ):
        self.records = records
        self.spec = spec
        self.max_boxes = max_boxes
        # data.decode=gpu: JPEGs stay bytes here (``encoded``), decoded in batches on the device
        # (pipeline.data.device_decode); every other file is decoded here as usual.
        self.decode_on_device = decode_on_device

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        stage = "decode"
        try:
            encoded = None
            if self.decode_on_device:
                try:
                    encoded = read_jpeg_for_device(
                        record.image_path, self.spec.boxes_refer_to, self.spec.max_pixels, self.spec.max_aspect_ratio
                    )
                except Exception:  # noqa: BLE001 -- unreadable header: the CPU decoder below reports it
                    encoded = None
            if encoded is not None:
                image, (width, height) = None, encoded[1]
            else:
                image, (width, height) = decode_image(
                    record.image_path,
                    self.spec.boxes_refer_to,
                    min_side=self.spec.resize_size or self.spec.size,
                    max_pixels=self.spec.max_pixels,
                    max_aspect_ratio=self.spec.max_aspect_ratio,
                )
            stage = "annotation"
            if (
                self.spec.check_annotated_size
                and record.annotated_size
                and tuple(record.annotated_size) != (width, height)
            ):
                raise ValueError(
                    f"annotation says {record.annotated_size[0]}x{record.annotated_size[1]} but the image is {width}x{height}"
                )
            # every annotated box against the decoded size: a wrong one makes the sample a BadAnnotation row
            checked = checked_boxes(boxes_in_pixels(record, width, height), width, height)
            stage = "preprocess"
            placement = plan_placement(width, height, self.spec.mode, self.spec.size, self.spec.resize_size)
            annotated = checked if self.max_boxes is None else checked[: self.max_boxes]
            boxes, kept = boxes_to_input(annotated, placement)
            if image is None:  # a placeholder: the device fills this row
                pixels = torch.zeros(3, self.spec.size, self.spec.size, dtype=torch.uint8)
            else:
                pixels = image_to_input(image, placement, self.spec.interpolation, self.spec.fill)
            stored = boxes_in_stored(annotated, width, height)
        except Exception as error:  # one bad sample must never stop the run
            return _failed(index, self.spec.size, stage, error)
        return {
            "index": index,
            "ok": True,
            "image": pixels,
            "boxes": torch.from_numpy(boxes),
            "n_boxes_dropped": int((~kept).sum()),
            "n_boxes_over_cap": len(record.boxes) - len(annotated),
            "width": width,
            "height": height,
            "placement": torch.tensor(
                [placement.scale_x, placement.scale_y, placement.offset_x, placement.offset_y], dtype=torch.float64
            ),
            "boxes_stored": torch.from_numpy(stored),
            "encoded": None if encoded is None else encoded[0],
        }


def boxes_in_pixels(record: SampleRecord, width: int, height: int) -> np.ndarray:
    """The record's boxes in pixel-edge coordinates of the ``width x height`` image it was decoded to:
    as annotated, or scaled from fractions of the image (``box_units: normalized``)."""
    if record.box_units == "normalized":
        return np.asarray(record.boxes, dtype=np.float64) * np.array([width, height, width, height], dtype=np.float64)
    return record.boxes


def _failed(index: int, size: int, stage: str, error: BaseException) -> dict:
    return {
        "index": index,
        "ok": False,
        "image": torch.zeros(3, size, size, dtype=torch.uint8),
        "boxes": torch.zeros(0, 4),
        "n_boxes_dropped": 0,
        "n_boxes_over_cap": 0,
        "width": 0,
        "height": 0,
        "placement": torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64),
        "boxes_stored": torch.zeros(0, 4),
        "stage": stage,
        "error_type": type(error).__name__,
        "error": str(error)[:500],
    }


def collate_samples(items: list[dict]) -> Batch:
    """Batch the good samples (their boxes padded to the most boxes of an image, with a validity mask) and
    list the failed ones: a :class:`~pipeline.data.batch.Batch`."""
    good = [item for item in items if item["ok"]]
    failures = [
        Failure(*(item[k] for k in ("index", "stage", "error_type", "error"))) for item in items if not item["ok"]
    ]
    boxes, valid = _pad_boxes([item["boxes"] for item in good])
    boxes_stored, stored_valid = _pad_boxes([item["boxes_stored"] for item in good])
    size = items[0]["image"].shape[-1] if items else 0
    return Batch(
        index=torch.tensor([item["index"] for item in good], dtype=torch.long),
        image=torch.stack([item["image"] for item in good])
        if good
        else torch.zeros(0, 3, size, size, dtype=torch.uint8),
        boxes=Boxes(boxes, valid, INPUT_FRAME),
        boxes_stored=Boxes(boxes_stored, stored_valid, STORED_FRAME),
        placement=Placements.from_rows(
            torch.stack([item["placement"] for item in good]) if good else torch.zeros(0, 4, dtype=torch.float64)
        ),
        width=torch.tensor([item["width"] for item in good], dtype=torch.long),
        height=torch.tensor([item["height"] for item in good], dtype=torch.long),
        n_boxes_dropped=torch.tensor([item["n_boxes_dropped"] for item in good], dtype=torch.long),
        n_boxes_over_cap=torch.tensor([item["n_boxes_over_cap"] for item in good], dtype=torch.long),
        failures=failures,
        # (row, JPEG bytes) of the rows the device decodes (data.decode=gpu); their ``image`` rows are placeholders
        encoded=[(row, item["encoded"]) for row, item in enumerate(good) if item.get("encoded") is not None],
    )


def _pad_boxes(per_image: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[M_i, 4]`` boxes per image -> ``[B, N_max, 4]`` float32 and a ``[B, N_max]`` validity mask."""
    n_max = max([boxes.shape[0] for boxes in per_image] + [1])
    padded = torch.zeros(len(per_image), n_max, 4, dtype=torch.float32)
    valid = torch.zeros(len(per_image), n_max, dtype=torch.bool)
    for row, boxes in enumerate(per_image):  # runs in the loader workers, not in the audit's hot path
        padded[row, : boxes.shape[0]] = boxes
        valid[row, : boxes.shape[0]] = True
    return padded, valid
