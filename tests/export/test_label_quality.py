"""Hardness and mistakenness against a transcription of FiftyOne brain's own functions (fiftyone-brain 0.25,
``internal/core/hardness.py`` and ``mistakenness.py``); the check against the installed FiftyOne itself is in
``test_fiftyone_export.py`` (the ``fiftyone`` extra)."""

from __future__ import annotations

from math import exp, log

import numpy as np
import pytest
import torch
from scipy.special import softmax
from scipy.stats import entropy

from pipeline.export.label_quality import hardness, mistakenness


def fo_hardness(logits) -> float:
    # hardness.py, process_image: entropy(softmax(np.asarray(label.logits)))
    return entropy(softmax(np.asarray(logits)))


def fo_mistakenness(logits, m: float) -> float:
    # mistakenness.py, _compute_mistakenness_class; m = float(pred_label.label == gt_label.label)
    m = m * -2.0 + 1.0
    c = -1.0 * entropy(softmax(np.asarray(logits)))
    return (m * exp(c) + 1.0) / 2.0


def test_hardness_and_mistakenness_match_fiftyones_definitions():
    rng = np.random.default_rng(0)
    logits = np.concatenate(
        [
            rng.normal(0, 1, (40, 7)),  # unsure
            rng.normal(0, 8, (40, 7)),  # confident
            np.zeros((1, 7)),  # uniform: ln 7
            np.array([[60.0, 0, 0, 0, 0, 0, 0]]),  # one-hot within float32 (the others underflow to 0)
        ]
    )
    labels = rng.integers(0, 7, len(logits))
    correct = logits.argmax(axis=1) == labels
    got_h = hardness(torch.tensor(logits, dtype=torch.float32)).numpy()
    got_m = mistakenness(torch.tensor(got_h), torch.tensor(correct)).numpy()
    want_h = np.array([fo_hardness(row) for row in logits])
    want_m = np.array([fo_mistakenness(row, float(c)) for row, c in zip(logits, correct)])
    assert got_h.dtype == np.float32 and got_m.dtype == np.float32
    np.testing.assert_allclose(got_h, want_h, atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(got_m, want_m, atol=2e-6, rtol=1e-5)
    assert got_h[-2] == pytest.approx(log(7), abs=1e-6)  # the entropy's base is e, as SciPy's default
    assert got_h[-1] == pytest.approx(0.0, abs=1e-6) and np.isfinite(got_h).all()
    # a wrong prediction is above 0.5, a right one below: the sign of m
    assert (got_m[~correct] >= 0.5).all() and (got_m[correct] <= 0.5).all()
    assert correct.any() and (~correct).any()


def test_low_precision_logits_are_handled_in_float32():
    logits = torch.randn(5, 10, generator=torch.Generator().manual_seed(1)) * 4
    full = hardness(logits)
    half = hardness(logits.to(torch.bfloat16))
    assert half.dtype == torch.float32
    np.testing.assert_allclose(half.numpy(), hardness(logits.to(torch.bfloat16).float()).numpy(), atol=1e-6)
    assert torch.allclose(full, half, atol=0.05)
