"""A tiny, seeded CNN for fast pipeline tests (``model=custom model._target_=tests.helpers_tiny_model.TinyNet``).

Its weights come from a private generator seeded by ``seed``, so two processes (or two runs in one
process) build the same model without touching the global RNG: runs are comparable row by row.
``delay_s`` sleeps in every forward so that a subprocess run lasts long enough to be killed mid-way.
"""

from __future__ import annotations

import time

import torch
from torch import nn


class TinyNet(nn.Module):
    """conv(3->8, /2) -> ReLU -> conv(8->16, /2) -> ReLU (``features``, the CAM layer) -> GAP -> linear."""

    def __init__(self, num_classes: int = 3, seed: int = 0, delay_s: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)
        self.delay_s = float(delay_s)
        generator = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.fc(self.pool(self.features(x)).flatten(1))
