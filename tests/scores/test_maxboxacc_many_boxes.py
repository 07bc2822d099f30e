"""MaxBoxAccV2 memory is bounded whatever the number of boxes (issue 11, case 13).

One image with 1,000 boxes in a batch of 64 used to build the whole candidate x box IoU matrix at once
(1.5 GiB peak at 96 px, ``scripts/measure_many_boxes.py``; 20 GiB with 10,000 boxes at 224 px); it is now
computed ``pairs_per_chunk`` pairs at a time, with the same result, and ``data.max_boxes`` caps the boxes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import pipeline.scores.maxboxacc as maxboxacc_module
from pipeline.scores.maxboxacc import MaxBoxAccV2


def _batch(n_boxes: int, batch: int = 6, size: int = 40, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    maps = F.interpolate(torch.rand(batch, 1, 6, 6, generator=generator), size=(size, size), mode="bilinear")[:, 0]
    maps = (maps - maps.amin(dim=(1, 2), keepdim=True)) / (
        maps.amax(dim=(1, 2), keepdim=True) - maps.amin(dim=(1, 2), keepdim=True)
    )
    corners = torch.rand(batch, n_boxes, 2, generator=generator) * size * 0.7
    boxes = torch.cat([corners, corners + 2 + torch.rand(batch, n_boxes, 2, generator=generator) * size * 0.3], dim=2)
    valid = torch.rand(batch, n_boxes, generator=generator) < 0.5
    valid[:, 0] = True
    valid[-1] = False  # an image without any box
    return maps, torch.zeros(batch, dtype=torch.bool), boxes, valid


def test_chunked_iou_gives_the_unchunked_result():
    maps, empty, boxes, valid = _batch(n_boxes=37)
    whole = MaxBoxAccV2(thresholds=20, pairs_per_chunk=1 << 30).best_iou_per_threshold(maps, empty, boxes, valid)
    chunked = MaxBoxAccV2(thresholds=20, pairs_per_chunk=50).best_iou_per_threshold(maps, empty, boxes, valid)
    assert torch.equal(whole, chunked)
    assert (whole[-1] == -1).all() and (whole[0] > 0).any()


def test_iou_memory_is_bounded_whatever_the_box_count(monkeypatch):
    largest = []
    original = maxboxacc_module._pairwise_iou64

    def recording(pred, gt):
        out = original(pred, gt)
        largest.append(max(out.numel(), gt.numel() // 4))  # the IoU matrix and the gathered boxes, in pairs
        return out

    monkeypatch.setattr(maxboxacc_module, "_pairwise_iou64", recording)
    maps, empty, boxes, valid = _batch(n_boxes=1000, batch=4)
    budget = 4096
    MaxBoxAccV2(thresholds=10, pairs_per_chunk=budget).best_iou_per_threshold(maps, empty, boxes, valid)
    assert largest and max(largest) <= budget  # was every candidate x 1,000 boxes at once
