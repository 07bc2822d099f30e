"""AuditNet: the small CNN behind the built-in default model.

Input ``[B, 3, 96, 96]`` normalised RGB (see ``pipeline.demo.train_default.preprocess_default``).
``features`` downsamples by 8 in total, so its output is ``[B, 6 * width, 12, 12]``: that 12x12 map is the
Grad-CAM target layer (the engine resolves it by the dotted name ``features``). Then global average
pooling, flatten and one linear layer give ``[B, num_classes]`` logits.

Cost with the default ``width=12``: about 33 M multiply-adds per image, so training a few thousand
images for a few epochs fits in a couple of minutes on two CPU cores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 96
FEATURE_STRIDE = 8


class LocalContrastNorm(nn.Module):
    """Parameter-free local contrast normalisation of the input, in a ``k x k`` window.

    ``[B, C, H, W] -> [B, C, H, W]``: each channel minus its local mean, divided by the local standard
    deviation (pooled over channels, so colour ratios survive). Windows are truncated at the borders.

    Why: every synthetic image has its own background colour, brightness and contrast. With a global
    *average* pool those per-image offsets reach every logit, and the same network with BatchNorm only
    learned the shapes far too slowly for the time budget (in our runs it had not passed ~60-85%
    training accuracy after 8-10 epochs, where this reaches ~95%). Per-image InstanceNorm in the early
    blocks learned fast too, but it mixes statistics over the whole image: the small marker then
    changed features everywhere and Grad-CAM no longer located it. A local window keeps each output
    dependent on its 9x9 neighbourhood only, so the maps stay faithful.
    """

    def __init__(self, kernel_size: int = 9, eps: float = 1e-3) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel_size // 2
        mean = F.avg_pool2d(x, self.kernel_size, stride=1, padding=pad, count_include_pad=False)
        centred = x - mean
        variance = F.avg_pool2d(centred * centred, self.kernel_size, stride=1, padding=pad, count_include_pad=False)
        return centred * torch.rsqrt(variance.mean(dim=1, keepdim=True) + self.eps)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, eps={self.eps}"


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
    ``features[0]`` is a parameter-free :class:`LocalContrastNorm` of the input (see there why).
    """

    def __init__(self, num_classes: int, width: int = 12) -> None:
        super().__init__()
        if num_classes < 1 or width < 1:
            raise ValueError("num_classes and width must be positive")
        self.num_classes = num_classes
        self.width = width
        w = width
        self.features = nn.Sequential(
            LocalContrastNorm(kernel_size=9),
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
