"""How a target layer's output becomes the map layout ``[B, C, h, w]`` the CAM methods work on.

Three layouts cover the model families:
- ``nchw``: convolutional networks (torchvision, most timm CNNs): the output already is ``[B, C, h, w]``.
- ``nhwc``: channels-last stages (timm's Swin and others whose ``output_fmt`` is ``NHWC``): ``[B, h, w, C]``,
  permuted. Read as NCHW it would silently give maps of the wrong axes.
- ``tokens``: vision transformers (timm ViT, DeiT, ...): ``[B, T, C]`` with ``T = prefix + h * w``; the
  prefix tokens (class, distillation, registers) are dropped and the patch tokens laid out on the patch grid.
The permutation is applied to the activations and to their gradients alike (it is linear), so every method
of ``pipeline.maps.methods`` works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

LAYOUTS = ("auto", "nchw", "nhwc", "tokens")


@dataclass(frozen=True)
class FeatureLayout:
    """``kind`` is ``nchw``, ``nhwc`` or ``tokens``; for tokens, ``prefix_tokens`` and the patch ``grid`` (h, w)."""

    kind: str = "nchw"
    prefix_tokens: int = 0
    grid: tuple[int, int] | None = None

    def accepts(self, output: Tensor) -> bool:
        """Whether a module output has this layout's shape (for tokens: exactly ``prefix + h * w`` tokens)."""
        if not isinstance(output, Tensor):
            return False
        if self.kind == "tokens":
            return (
                output.dim() == 3
                and self.grid is not None
                and output.shape[1] == self.prefix_tokens + self.grid[0] * self.grid[1]
            )
        if output.dim() != 4:
            return False
        h, w = (output.shape[-2], output.shape[-1]) if self.kind == "nchw" else (output.shape[1], output.shape[2])
        return h > 1 and w > 1

    def to_map(self, output: Tensor) -> Tensor:
        """``[B, C, h, w]`` from the layer's output (a view or a permuted copy; values unchanged)."""
        if self.kind == "nchw":
            return output
        if self.kind == "nhwc":
            return output.permute(0, 3, 1, 2)
        if self.grid is None:
            raise ValueError("the tokens layout needs the patch grid (h, w)")
        batch, _, channels = output.shape
        patches = output[:, self.prefix_tokens :, :]
        return patches.reshape(batch, self.grid[0], self.grid[1], channels).permute(0, 3, 1, 2)


def detect_layout(model: nn.Module, option: str = "auto", input_size: int | None = None) -> FeatureLayout:
    """The layout of ``model``'s feature maps: ``option`` when it is explicit, else from the model's
    attributes (timm: ``num_prefix_tokens`` with ``patch_embed.grid_size`` -> tokens; ``output_fmt == 'NHWC'``
    -> nhwc; anything else -> nchw). A ViT built with ``dynamic_img_size`` gets the patch grid of
    ``input_size``.

    Raises:
        ValueError: an unknown option, or ``tokens`` for a model that does not say its patch grid.
    """
    if option not in LAYOUTS:
        raise ValueError(f"unknown layout {option!r}; use one of {', '.join(LAYOUTS)}")
    patch_embed = getattr(model, "patch_embed", None)
    grid = getattr(patch_embed, "grid_size", None)
    if (
        grid is not None
        and input_size
        and getattr(model, "dynamic_img_size", False)
        and patch_embed is not None
        and hasattr(patch_embed, "dynamic_feat_size")
    ):
        grid = patch_embed.dynamic_feat_size((input_size, input_size))
    is_tokens = hasattr(model, "num_prefix_tokens") and grid is not None
    if option == "tokens" or (option == "auto" and is_tokens):
        if not is_tokens:
            raise ValueError(
                "layout tokens needs a model that states num_prefix_tokens and patch_embed.grid_size (timm ViTs do)"
            )
        assert grid is not None  # is_tokens: the model has num_prefix_tokens and a grid
        prefix = int(getattr(model, "num_prefix_tokens", 0))
        return FeatureLayout("tokens", prefix, (int(grid[0]), int(grid[1])))
    if option == "nhwc" or (option == "auto" and str(getattr(model, "output_fmt", "NCHW")).upper() == "NHWC"):
        return FeatureLayout("nhwc")
    return FeatureLayout("nchw")
