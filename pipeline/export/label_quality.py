"""Hardness and mistakenness of a classification, as FiftyOne's brain defines them (fiftyone-brain 0.25,
``fiftyone/brain/internal/core/hardness.py`` and ``mistakenness.py``, ``_compute_mistakenness_class``):

- ``hardness = H(softmax(logits))``, the entropy of the softmax in nats (``scipy.stats.entropy``'s default
  base e): 0 for a one-hot prediction, ``ln(C)`` for a uniform one over ``C`` classes;
- ``mistakenness = (m * exp(-hardness) + 1) / 2`` with ``m = +1`` when the prediction is wrong and ``-1``
  when it is right: near 1 for a confident wrong prediction (a likely label mistake), near 0 for a confident
  right one, 0.5 when the model is unsure.

Both are computed by the run on the device from the logits (:func:`pipeline.compute.audit_batch`), in float32
whatever the forward's precision, so a reviewer can sort ``samples.parquet`` (or the FiftyOne dataset) by them.
"""

from __future__ import annotations

import torch

HARDNESS_DESCRIPTION = (
    "entropy of the softmax over all classes, in nats (FiftyOne brain's hardness): 0 for a one-hot prediction, "
    "ln(number of classes) for a uniform one"
)
MISTAKENNESS_DESCRIPTION = (
    "(m * exp(-hardness) + 1) / 2 with m = +1 for a wrong prediction and -1 for a right one (FiftyOne brain's "
    "mistakenness for classification): near 1 = confidently wrong, a likely label mistake; near 0 = confidently right"
)


def hardness(logits: torch.Tensor) -> torch.Tensor:
    """``[B, C]`` logits -> ``[B]`` float32 entropy of their softmax (nats); a probability that underflows to 0
    adds 0, as in SciPy."""
    log_probs = logits.float().log_softmax(dim=1)
    return -(log_probs.exp() * log_probs).sum(dim=1)


def mistakenness(entropy: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """``[B]`` entropy (:func:`hardness`) and ``[B]`` correct flags (bool or 0/1) -> ``[B]`` float32."""
    m = 1.0 - 2.0 * correct.float()  # +1 wrong, -1 right (FiftyOne: m * -2 + 1 with m = 1 for a match)
    return (m * torch.exp(-entropy.float()) + 1.0) / 2.0
