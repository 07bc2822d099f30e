"""Deletion and insertion (Petsiuk et al. 2018, *RISE: Randomized Input Sampling for Explanation of
Black-box Models*, BMVC, arXiv 1806.07421; the protocol of ``CausalMetric`` in eclique/RISE
``evaluation.py``), batched: every step of every image of a batch goes through the model in a few large
forwards.

Protocol (each choice also in ``docs/definitions.md``):
- the pixels are taken in the order of the map, highest first (``rank`` 0 is the highest pixel); ties, e.g.
  the zero region of a map after its ReLU, in raster order (a stable sort; RISE's ``np.flip(np.argsort(...))``
  leaves their order to NumPy's unstable sort);
- ``step = ceil(H W / steps)`` pixels change per step and ``n = ceil(H W / step)`` steps make ``n + 1``
  scores ``s_0 .. s_n``: ``s_i`` is the model's output on the input whose first ``min(i step, H W)``
  pixels (all channels) have been changed;
- **deletion** starts from the image and changes pixels to 0 in normalised space (the dataset's mean
  colour): the map is faithful when the score falls fast (low AUC);
- **insertion** starts from a blurred copy (RISE's ``gkern(11, 5)``: :func:`rise_blur_kernel`) and puts the
  image's pixels back: the score should rise fast (high AUC);
- the score is the softmax probability of a fixed class (the run uses the predicted class);
- ``AUC = (sum_i s_i - s_0 / 2 - s_n / 2) / n``, the trapezoid rule on ``[0, 1]`` (RISE's ``auc``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Predict = Callable[[Tensor], Tensor]  # [J, 3, H, W] normalised inputs -> [J, num_classes] logits


def rise_blur_kernel(size: int = 11, sigma: float = 5.0, truncate: float = 4.0) -> Tensor:
    """RISE's insertion blur ``gkern(klen=size, nsig=sigma)``: ``scipy.ndimage.gaussian_filter`` of a
    ``size x size`` array holding 1 at its centre, computed here without SciPy.

    ``gaussian_filter`` correlates each axis with the weights ``w_j = exp(-j^2 / (2 sigma^2))``, ``|j| <=
    radius = int(truncate sigma + 0.5)``, normalised to sum 1, reading outside the array by reflection
    (``mode='reflect'``: ``d c b a | a b c d | d c b a``). With ``radius`` (20) above ``size // 2`` (5)
    the reflections fold the Gaussian's tails back into the window, so the kernel is flatter than a
    truncated Gaussian, and still sums to 1. A delta is separable, so the 2-D kernel is the outer product of
    the 1-D result with itself.

    Returns:
        ``[size, size]`` float64.
    """
    radius = int(truncate * float(sigma) + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * offsets**2 / float(sigma) ** 2)
    weights = weights / weights.sum()
    centre = size // 2
    line = torch.zeros(size, dtype=torch.float64)
    for i in range(size):  # output[i] = sum_j w_j * delta[reflect(i + j)]
        for j, weight in zip(range(-radius, radius + 1), weights):
            position = (i + j) % (2 * size)  # the reflected extension has period 2 * size
            if position >= size:
                position = 2 * size - 1 - position
            if position == centre:
                line[i] += weight
    return torch.outer(line, line)


def blur(images: Tensor, kernel: Tensor) -> Tensor:
    """Each channel convolved with ``kernel`` (``[k, k]``), zero padding ``k // 2`` (RISE's
    ``conv2d(x, kern, padding=klen // 2)`` with the kernel on the channel diagonal).

    Args:
        images: ``[N, C, H, W]`` normalised inputs.
    Returns:
        ``[N, C, H, W]``, same dtype.
    """
    channels = images.shape[1]
    weight = kernel.to(images.device, images.dtype)[None, None].expand(channels, 1, *kernel.shape).contiguous()
    return F.conv2d(images, weight, padding=kernel.shape[-1] // 2, groups=channels)


def pixel_ranks(maps: Tensor) -> Tensor:
    """The position of each pixel in the map's descending order, ties in raster order.

    Args:
        maps: ``[N, H, W]``.
    Returns:
        ``[N, H W]`` long: 0 for the pixel taken first.
    """
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(order.shape[1], device=maps.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def step_plan(pixels: int, steps: int) -> tuple[int, int]:
    """``(step, n)``: pixels changed per step, ``ceil(pixels / steps)``, and the number of steps,
    ``ceil(pixels / step)`` (at most ``steps``; RISE's ``n_steps = (HW + step - 1) // step``)."""
    step = math.ceil(pixels / steps)
    return step, math.ceil(pixels / step)


def area_under_curve(curves: Tensor) -> Tensor:
    """RISE's ``auc``: the trapezoid rule over ``n + 1`` equally spaced scores, normalised to ``[0, 1]``.

    Args:
        curves: ``[N, n + 1]``.
    Returns:
        ``[N]``: ``(sum(s) - s_0 / 2 - s_n / 2) / n``.
    """
    return (curves.sum(dim=1) - curves[:, 0] / 2 - curves[:, -1] / 2) / (curves.shape[1] - 1)


def deletion_insertion_curves(
    predict: Predict,
    images: Tensor,
    maps: Tensor,
    classes: Tensor,
    steps: int,
    kernel: Tensor,
    chunk: int,
    probability: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The deletion and insertion curves of each image, every step of both through ``predict`` in
    forwards of at most ``chunk`` inputs.

    Args:
        predict: normalised inputs -> logits (the model, in eval mode).
        images: ``[S, 3, H, W]`` normalised inputs.
        maps: ``[S, H, W]`` the maps giving the order.
        classes: ``[S]`` long, the class whose softmax probability is the score.
        steps: the number of steps asked for (see :func:`step_plan`).
        kernel: the insertion blur (:func:`rise_blur_kernel`).
        chunk: most inputs per forward.
        probability: ``[S]`` the class's probability on the unchanged image when the caller has it (the
            run's forward): deletion's first and insertion's last score, two fewer forwards per image.
    Returns:
        ``(deletion [S, n + 1], insertion [S, n + 1])`` float32.
    """
    count, pixels = images.shape[0], images.shape[-2] * images.shape[-1]
    step, n = step_plan(pixels, steps)
    ranks = pixel_ranks(maps)
    blurred = blur(images, kernel)
    # Curve c of image s is row c * S + s: deletion goes from the image to zeros, insertion from the blur back.
    start = torch.cat([images, blurred])
    finish = torch.cat([torch.zeros_like(images), images])
    curves = torch.full((2 * count, n + 1), float("nan"), device=images.device)
    needed = torch.ones(2, n + 1, dtype=torch.bool)  # [curve kind, step]
    if probability is not None:
        curves[:count, 0] = probability.float()
        curves[count:, n] = probability.float()
        needed[0, 0] = needed[1, n] = False
    needed[0, n] = False  # the all-zero input is the same for every image: one forward below
    kinds, indices = needed.nonzero(as_tuple=True)  # the (kind, step) pairs to compute, for every image
    rows = (kinds[:, None] * count + torch.arange(count)[None, :]).reshape(-1).to(images.device)  # [J]
    step_of = indices[:, None].expand(-1, count).reshape(-1).to(images.device)  # [J]
    flat_ranks = ranks.repeat(2, 1)
    with torch.no_grad():
        for begin in range(0, rows.numel(), chunk):
            row, at = rows[begin : begin + chunk], step_of[begin : begin + chunk]
            changed = (flat_ranks[row] < (at * step)[:, None]).view(-1, 1, *images.shape[-2:])
            inputs = torch.where(changed, finish[row], start[row])
            probabilities = predict(inputs).float().softmax(dim=1)
            curves[row, at] = probabilities.gather(1, classes.repeat(2)[row][:, None])[:, 0]
        zeros = predict(torch.zeros_like(images[:1])).float().softmax(dim=1)[0]
    curves[:count, n] = zeros[classes]
    return curves[:count], curves[count:]
