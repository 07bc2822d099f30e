"""Scoring each distinct map once (pipeline/scores/distinct.py) gives every map the scores it would get alone."""

import torch

from pipeline.scores import score_map
from pipeline.scores.distinct import distinct_maps


def test_distinct_maps_on_a_crafted_batch():
    # 3 images, maps (pred, true, top2): image 0 right (pred == true), image 1 wrong, image 2 right and its
    # second-ranked class repeats nothing; flat order k * B + b.
    targets = torch.tensor([[4, 4, 7], [2, 5, 5], [1, 1, 3]])
    distinct, copy_of = distinct_maps(targets)
    # flat: k=0 -> 0,1,2; k=1 -> 3 (copy of 0), 4, 5 (copy of 2); k=2 -> 6, 7 (copy of 4), 8
    assert distinct.tolist() == [0, 1, 2, 4, 6, 8]
    assert distinct[copy_of].tolist() == [0, 1, 2, 0, 4, 2, 6, 4, 8]


def test_no_repeated_class_scores_every_map():
    targets = torch.tensor([[0, 1], [2, 3]])
    distinct, copy_of = distinct_maps(targets)
    assert distinct.tolist() == [0, 1, 2, 3] and copy_of.tolist() == [0, 1, 2, 3]


def test_scores_of_the_distinct_maps_equal_scores_of_all_maps():
    generator = torch.Generator().manual_seed(0)
    batch, k_maps, size = 6, 3, 32
    targets = torch.randint(0, 3, (batch, k_maps), generator=generator)
    own = torch.rand(batch, 3, size, size, generator=generator)  # one map per (image, class)
    own[0, targets[0, 0]] = 0.0  # an empty map among them
    maps = own.gather(1, targets[:, :, None, None].expand(-1, -1, size, size))  # [B, K, H, W]
    flat = maps.transpose(0, 1).reshape(-1, size, size)
    boxes = torch.tensor([[4.0, 4.0, 20.0, 24.0]]).repeat(batch * k_maps, 1, 1)
    valid = torch.ones(batch * k_maps, 1, dtype=torch.bool)
    valid[batch - 1 :: batch] = False  # the last image has no box
    empty = flat.flatten(1).amax(1) == 0
    everything = score_map(flat, flat - 0.5, empty, boxes, valid, taus=(0.15, 0.5))
    distinct, copy_of = distinct_maps(targets)
    assert len(distinct) < batch * k_maps  # the seed gives repeats
    once = score_map(
        flat[distinct], flat[distinct] - 0.5, empty[distinct], boxes[distinct], valid[distinct], taus=(0.15, 0.5)
    )
    for column, values in everything.items():
        torch.testing.assert_close(
            once[column][copy_of], values, equal_nan=True, rtol=0, atol=0, msg=lambda m, column=column: f"{column}: {m}"
        )
