import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.scores import boxes_to_mask
from tests.scores.scores_reference import random_boxes, ref_masks


def _mask(boxes, valid, h, w):
    return boxes_to_mask(torch.tensor(boxes, dtype=torch.float32), torch.tensor(valid, dtype=torch.bool), h, w).numpy()


def test_off_centre_box_non_square_rows_first():
    # H=5, W=8; box covers columns 1..6 and rows 0..1.
    m = _mask([[[1, 0, 7, 2]]], [[True]], 5, 8)
    expected = np.zeros((5, 8), bool)
    expected[0:2, 1:7] = True
    assert m.shape == (1, 5, 8)
    assert (m[0] == expected).all()
    # The transposed defect [x1:x2, y1:y2] would give a different mask.
    transposed = np.zeros((5, 8), bool)
    transposed[1:7, 0:2] = True
    assert not (m[0] == transposed).all()


def test_union_counted_once_and_padding_ignored():
    boxes = [[[0, 0, 4, 3], [2, 1, 6, 4], [-3, 7, 40, 9]]]
    valid = [[True, True, False]]
    m = _mask(boxes, valid, 5, 8)[0]
    assert m.sum() == 12 + 12 - 4
    assert m[0:3, 0:4].all() and m[1:4, 2:6].all()


def test_fractional_boxes_pixel_centres():
    boxes = [[[1.4, 0.6, 3.5, 2.5], [0.5, 0.5, 0.5, 3.0]], [[1.5, 1.0, 2.49, 2.0], [0, 0, 0, 0]]]
    valid = [[True, True], [True, False]]
    m = _mask(boxes, valid, 4, 5)
    e0 = np.zeros((4, 5), bool)
    e0[1, 1:3] = True  # centres 1.5, 2.5 in [1.4, 3.5); row centre 1.5 in [0.6, 2.5)
    e1 = np.zeros((4, 5), bool)
    e1[1, 1] = True
    assert (m[0] == e0).all() and (m[1] == e1).all()


def test_boxes_partly_outside_and_no_boxes():
    m = _mask([[[-3, -2, 2, 1], [6, 3, 20, 20]]], [[True, True]], 5, 8)[0]
    e = np.zeros((5, 8), bool)
    e[0:1, 0:2] = True
    e[3:5, 6:8] = True
    assert (m == e).all()
    empty = boxes_to_mask(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool), 3, 4)
    assert empty.shape == (2, 3, 4) and not empty.any()


@pytest.mark.parametrize("seed", range(4))
def test_random_against_reference(seed):
    rng = np.random.default_rng(seed)
    h, w = [(48, 64), (31, 17), (5, 8), (64, 48)][seed]
    boxes, valid = random_boxes(rng, 5, 4, h, w, fractional=bool(seed % 2))
    assert (_mask(boxes, valid, h, w) == ref_masks(boxes, valid, h, w)).all()


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    coords=st.lists(st.tuples(*[st.floats(-3, 15, width=32)] * 4), min_size=0, max_size=4),
)
def test_hypothesis_fractional(h, w, coords):
    boxes = np.array([coords], np.float32).reshape(1, len(coords), 4)
    valid = np.ones((1, len(coords)), bool)
    assert (_mask(boxes, valid, h, w) == ref_masks(boxes, valid, h, w)).all()
