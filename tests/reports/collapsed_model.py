"""A model whose predictions have collapsed: TinyNet with a large bias on class 0 (for the finder's warning)."""

import torch

from tests.helpers_tiny_model import TinyNet


class CollapsedNet(TinyNet):
    """Predicts class 0 for (almost) every image: ``+20`` on its logit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        return logits + torch.nn.functional.one_hot(torch.zeros(1, dtype=torch.long), logits.shape[1]).to(logits) * 20.0
