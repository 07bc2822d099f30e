"""AuditNet: the small CNN behind the built-in default model.

Input ``[B, 3, 96, 96]`` normalised RGB (see ``pipeline.model.train_default.preprocess_default``).
``features`` downsamples by 8 in total, so its output is ``[B, 6 * width, 12, 12]``: that 12x12 map is the
Grad-CAM target layer (the engine resolves it by the dotted name ``features``). Then global average
pooling, flatten and one linear layer give ``[B, num_classes]`` logits.

Cost with the default ``width=12``: about 31 M multiply-adds per image, so training a few thousand
images for a few epochs fits in a couple of minutes on two CPU cores.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SIZE = 96
FEATURE_STRIDE = 8


def conv_block(in_channels: int, out_channels: int, stride: int) -> list[nn.Module]:
    """3x3 convolution (padding 1) + batch norm + ReLU; ``stride`` 2 halves the spatial size.

    The ReLU is not in-place: the last one is the output of ``features``, which Grad-CAM hooks, and an
    in-place op there would overwrite the activation the hook keeps.
    """
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=False),
    ]


class AuditNet(nn.Module):
    """Small CNN classifier for 96x96 RGB images with a 12x12 last feature map.

    Layout of ``features`` (channels for ``width`` w, spatial size for a 96x96 input):
    ``3 -> w`` @96, ``w -> 2w`` @48, ``2w -> 4w`` @24, ``4w -> 6w`` @12, ``6w -> 6w`` @12, ``6w -> 6w`` @12.
    The two extra 12x12 blocks widen the receptive field (about 49 px) so one cell sees whole objects.
    """

    def __init__(self, num_classes: int, width: int = 12) -> None:
        super().__init__()
        if num_classes < 1 or width < 1:
            raise ValueError("num_classes and width must be positive")
        self.num_classes = num_classes
        self.width = width
        w = width
        self.features = nn.Sequential(
            *conv_block(3, w, stride=1),
            *conv_block(w, 2 * w, stride=2),
            *conv_block(2 * w, 4 * w, stride=2),
            *conv_block(4 * w, 6 * w, stride=2),
            *conv_block(6 * w, 6 * w, stride=1),
            *conv_block(6 * w, 6 * w, stride=1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(6 * w, num_classes)

    @property
    def feature_channels(self) -> int:
        """Channels of the ``features`` output (the Grad-CAM target map)."""
        return 6 * self.width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised images (96x96 expected) -> ``[B, num_classes]`` logits."""
        return self.classifier(self.flatten(self.pool(self.features(images))))
