"""The loader's batch as a type: collate_samples makes a Batch whose per-image fields share the batch size,
and taking rows of it (a piece that fits in memory, the rows a device decoder could read) takes those rows of
every per-image field, boxes with their frame and placement by name."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from pipeline.data.batch import INPUT_FRAME, STORED_FRAME, Batch, Failure, Placements
from pipeline.data.dataset import AuditDataset, PreprocessSpec, collate_samples
from pipeline.data.geometry import plan_placement
from pipeline.data.records import SampleRecord
from tests.helpers_corpus import good_dataset, per_image_fields


def _batch(tmp_path, count: int = 5) -> Batch:
    ids = good_dataset(tmp_path, count, side=24)
    records = [
        SampleRecord(
            sample_id, str(tmp_path / "images" / f"{sample_id}.jpg"), 0, np.array([[2, 3, 20, 22]], np.float32)
        )
        for sample_id in ids
    ]
    records.append(SampleRecord("missing", str(tmp_path / "missing.jpg"), 0, np.zeros((0, 4), np.float32)))
    dataset = AuditDataset(records, PreprocessSpec(mode="resize_crop", size=16, resize_size=20))
    return collate_samples([dataset[i] for i in range(len(records))])


def test_collate_makes_a_batch_with_named_fields_and_the_failures_apart(tmp_path):
    batch = _batch(tmp_path)
    assert len(batch) == 5 and batch.image.shape == (5, 3, 16, 16) and batch.image.dtype == torch.uint8
    assert batch.boxes.frame == INPUT_FRAME and batch.boxes_stored.frame == STORED_FRAME
    assert all(values.shape[0] == 5 for values in per_image_fields(batch).values())
    assert [(f.index, f.stage) for f in batch.failures] == [(5, "decode")] and isinstance(batch.failures[0], Failure)
    expected = plan_placement(24, 24, "resize_crop", 16, 20)
    assert batch.placement.scale_x.tolist() == [expected.scale_x] * 5
    assert batch.placement.offset_y.tolist() == [expected.offset_y] * 5


def test_rows_take_the_same_rows_of_every_per_image_field(tmp_path):
    batch = _batch(tmp_path)
    whole = per_image_fields(batch)
    for rows, expected in ((slice(1, 4), [1, 2, 3]), (torch.tensor([True, False, True, False, True]), [0, 2, 4])):
        piece = batch.rows(rows)
        assert len(piece) == len(expected) and piece.failures == [] and piece.encoded == []
        for name, values in per_image_fields(piece).items():
            assert torch.equal(values, whole[name][expected]), name
        assert piece.boxes.frame == INPUT_FRAME and piece.boxes_stored.frame == STORED_FRAME


def test_placements_of_geometry_placements_name_the_columns():
    placements = [plan_placement(100, 75, "resize_crop", 64, 73), plan_placement(60, 100, "letterbox", 64)]
    batch = Placements.of(placements)
    for name in ("scale_x", "scale_y", "offset_x", "offset_y"):
        values = getattr(batch, name)
        assert values.dtype == torch.float64 and values.tolist() == [getattr(p, name) for p in placements]


class _Pinnable(torch.Tensor):
    """A tensor whose ``pin_memory`` (CUDA-only) only records that it was asked for."""

    def pin_memory(self, *args, **kwargs):
        return "pinned"


def test_pin_memory_pins_every_tensor_the_loader_hands_over(tmp_path):
    """With ``pin_memory=True`` (CUDA) the DataLoader calls ``Batch.pin_memory``: every tensor, the JPEG bytes
    included, must be pinned, as the dict batch's were (tested without a GPU: pinning only recorded)."""
    from torch.utils.data._utils.pin_memory import pin_memory

    batch = _batch(tmp_path)
    marked = dataclasses.replace(
        batch.rows(slice(None)),
        **{
            name: values.as_subclass(_Pinnable)
            for name, values in vars(batch).items()
            if isinstance(values, torch.Tensor)
        },
        boxes=dataclasses.replace(
            batch.boxes,
            coords=batch.boxes.coords.as_subclass(_Pinnable),
            valid=batch.boxes.valid.as_subclass(_Pinnable),
        ),
        boxes_stored=dataclasses.replace(
            batch.boxes_stored,
            coords=batch.boxes_stored.coords.as_subclass(_Pinnable),
            valid=batch.boxes_stored.valid.as_subclass(_Pinnable),
        ),
        placement=Placements(
            *(getattr(batch.placement, f.name).as_subclass(_Pinnable) for f in dataclasses.fields(Placements))
        ),
        encoded=[(0, torch.zeros(3, dtype=torch.uint8).as_subclass(_Pinnable))],
    )
    pinned = pin_memory(marked)
    assert isinstance(pinned, Batch)
    values = [*per_image_fields(pinned).values(), pinned.encoded[0][1]]
    assert values == ["pinned"] * len(values)
