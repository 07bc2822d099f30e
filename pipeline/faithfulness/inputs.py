"""The network inputs of a few chosen images, made the way the run makes them: the run's dataset class,
preprocessing and collate function (and its on-device JPEG decoder with ``data.decode=gpu``), then the
normalisation of :func:`pipeline.compute.audit_batch`."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from pipeline.data.batch import Batch
from pipeline.data.dataset import AuditDataset, collate_samples
from pipeline.data.device_decode import decode_batch_on_device


def normalised_inputs(setup, batch: Batch) -> Tensor:
    """``[B, 3, S, S]`` float32 on ``setup.device``: ``(image / 255 - mean) / std``, channels-last when the run
    is (as :func:`pipeline.compute.audit_batch`)."""
    images = (batch.image.to(setup.device).float() / 255.0 - setup.input_mean) / setup.input_std
    return images.contiguous(memory_format=torch.channels_last) if setup.channels_last else images


def load_inputs(setup, records: list, max_boxes: int | None, batch_size: int) -> tuple[Tensor, list[str]]:
    """The normalised inputs of ``records`` (an image that fails to load is left out) and their ids, in the
    order of ``records``. No loader workers: a sanity sample is a few dozen images."""
    dataset = AuditDataset(records, setup.preprocess, max_boxes, setup.decode_on_device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate_samples)
    images, ids = [], []
    for batch in loader:
        if batch.encoded:
            paths = [records[i].image_path for i in batch.index.tolist()]
            batch = decode_batch_on_device(batch, setup.preprocess, setup.device, paths)
        if len(batch):
            images.append(normalised_inputs(setup, batch))
            ids += [records[i].sample_id for i in batch.index.tolist()]
    if not images:
        size = setup.preprocess.size
        return torch.empty(0, 3, size, size, device=setup.device), []
    return torch.cat(images), ids
