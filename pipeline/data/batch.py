"""The batch the loader hands to the audit (:func:`~pipeline.data.dataset.collate_samples` makes it): images,
boxes with their validity and coordinate frame, where each stored image was placed in the network input,
and the samples that failed on the way. Every per-image field has the batch size ``B`` first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor

from pipeline.data import geometry

# The coordinate frames of boxes: the network input (after resize, crop or padding) and the stored image.
INPUT_FRAME = "input"
STORED_FRAME = "stored"

Rows = slice | Tensor  # a range of rows, or a [B] bool mask / long index


def _take(values: Tensor, rows: Rows) -> Tensor:
    """``values[rows]``, with a tensor selector moved to ``values``' device first."""
    return values[rows.to(values.device) if isinstance(rows, Tensor) else rows]


@dataclass(frozen=True)
class Boxes:
    """Boxes padded to the most boxes of an image, in pixel-edge coordinates of one frame.

    Attributes:
        coords: ``[B, N, 4]`` float32 ``(x1, y1, x2, y2)``; a box covers columns ``x1 <= x < x2``, rows
            ``y1 <= y < y2``. Padding rows hold zeros.
        valid: ``[B, N]`` bool, the real boxes (False: padding, or a box that did not reach the frame).
        frame: :data:`INPUT_FRAME` (network-input pixels) or :data:`STORED_FRAME` (stored-image pixels).
    """

    coords: Tensor
    valid: Tensor
    frame: str

    def rows(self, rows: Rows) -> Boxes:
        """The boxes of ``rows`` only."""
        return Boxes(_take(self.coords, rows), _take(self.valid, rows), self.frame)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Boxes:
        return Boxes(
            self.coords.to(device, non_blocking=non_blocking),
            self.valid.to(device, non_blocking=non_blocking),
            self.frame,
        )

    def pin_memory(self) -> Boxes:
        return Boxes(self.coords.pin_memory(), self.valid.pin_memory(), self.frame)


@dataclass(frozen=True)
class Placements:
    """Where each stored image landed in the network input: stored point ``(x, y)`` is at
    ``(x * scale_x + offset_x, y * scale_y + offset_y)`` of the input. Each field ``[B]`` float64."""

    scale_x: Tensor
    scale_y: Tensor
    offset_x: Tensor
    offset_y: Tensor

    @classmethod
    def of(cls, placements: Sequence[geometry.Placement]) -> Placements:
        """The placements of a batch from one :class:`~pipeline.data.geometry.Placement` per image."""
        columns = torch.tensor(
            [[p.scale_x, p.scale_y, p.offset_x, p.offset_y] for p in placements], dtype=torch.float64
        ).reshape(-1, 4)
        return cls.from_rows(columns)

    @classmethod
    def from_rows(cls, rows: Tensor) -> Placements:
        """From a ``[B, 4]`` tensor of ``(scale_x, scale_y, offset_x, offset_y)`` rows."""
        return cls(*(rows[:, column].contiguous() for column in range(4)))

    def rows(self, rows: Rows) -> Placements:
        return Placements(*(_take(getattr(self, f.name), rows) for f in fields(self)))

    def to(self, device: torch.device | str) -> Placements:
        return Placements(*(getattr(self, f.name).to(device=device, dtype=torch.float64) for f in fields(self)))

    def pin_memory(self) -> Placements:
        return Placements(*(getattr(self, f.name).pin_memory() for f in fields(self)))


@dataclass(frozen=True)
class Failure:
    """A sample that could not be made into a network input: it becomes an ``errors.parquet`` row.

    Attributes:
        index: its position in the records the loader reads.
        stage: where it failed (``decode``, ``preprocess``, ...).
        error_type: the exception's class name.
        error: its message (at most 500 characters).
    """

    index: int
    stage: str
    error_type: str
    error: str


@dataclass(frozen=True)
class Batch:
    """The good samples of one loader batch, and the failed ones.

    Attributes:
        index: ``[B]`` long, each row's position in the records the loader reads.
        image: ``[B, 3, S, S]`` uint8 network inputs (rows listed in ``encoded`` are placeholders until
            :func:`~pipeline.data.device_decode.decode_batch_on_device` fills them).
        boxes: the boxes in the network input (:data:`INPUT_FRAME`); a box cut away by the crop is not valid.
        boxes_stored: the annotated boxes in stored-image pixels (:data:`STORED_FRAME`), all valid.
        placement: where each stored image landed in the network input.
        width, height: ``[B]`` long, the stored image's size.
        n_boxes_dropped: ``[B]`` long, boxes that did not reach the network input.
        n_boxes_over_cap: ``[B]`` long, boxes beyond ``data.max_boxes`` (not read).
        failures: the samples of this loader batch that failed (not among the rows).
        encoded: ``(row, JPEG bytes)`` of the rows the device decodes (``data.decode=gpu``).
    """

    index: Tensor
    image: Tensor
    boxes: Boxes
    boxes_stored: Boxes
    placement: Placements
    width: Tensor
    height: Tensor
    n_boxes_dropped: Tensor
    n_boxes_over_cap: Tensor
    failures: list[Failure] = field(default_factory=list)
    encoded: list[tuple[int, Tensor]] = field(default_factory=list)

    def __len__(self) -> int:
        return self.index.numel()

    def rows(self, rows: Rows) -> Batch:
        """The batch of ``rows`` only (each per-image field); failures and JPEG bytes stay with the whole."""
        return Batch(
            _take(self.index, rows),
            _take(self.image, rows),
            self.boxes.rows(rows),
            self.boxes_stored.rows(rows),
            self.placement.rows(rows),
            _take(self.width, rows),
            _take(self.height, rows),
            _take(self.n_boxes_dropped, rows),
            _take(self.n_boxes_over_cap, rows),
        )

    def with_image(self, image: Tensor) -> Batch:
        """The same batch with ``image`` replaced (decoded on the device) and no JPEG bytes left."""
        return replace(self, image=image, encoded=[])

    def pin_memory(self) -> Batch:
        """Page-locked copies of the tensors (the DataLoader calls it with ``pin_memory=True``)."""
        return replace(
            self,
            index=self.index.pin_memory(),
            image=self.image.pin_memory(),
            boxes=self.boxes.pin_memory(),
            boxes_stored=self.boxes_stored.pin_memory(),
            placement=self.placement.pin_memory(),
            width=self.width.pin_memory(),
            height=self.height.pin_memory(),
            n_boxes_dropped=self.n_boxes_dropped.pin_memory(),
            n_boxes_over_cap=self.n_boxes_over_cap.pin_memory(),
            encoded=[(row, data.pin_memory()) for row, data in self.encoded],
        )
