"""Timing of the scores on one batch of realistic maps.

Usage: ``python scripts/bench_scores.py [--batch 64] [--size 224] [--threads N] [--device cpu]``.
Maps: 7x7 uniform random maps upsampled bilinearly (``align_corners=False``) to size x size and
min-max normalised, like real CAMs; 3 random boxes per image.  Prints the median of ``--repeats``
runs (after one warm-up) and the fastest, in milliseconds.  ``scores.space=original`` is timed on
ImageNet-shaped images (half 500 x 375, half 375 x 500, resize 256 / crop 224: a 341 x 341 canvas),
warp included, beside the input-space ``score_map`` of the same maps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.scores import (
    MaxBoxAccV2,
    label_components,
    largest_component_box,
    score_map,
)
from pipeline.scores.maxboxacc import maxboxacc_from_best_iou


def realistic_batch(batch: int, size: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(batch, 1, 7, 7, generator=g)
    m = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    lo = m.amin(dim=(1, 2), keepdim=True)
    hi = m.amax(dim=(1, 2), keepdim=True)
    maps = (m - lo) / (hi - lo)
    xy = torch.rand(batch, 3, 2, 2, generator=g) * size
    boxes = torch.cat([xy.amin(dim=2), xy.amax(dim=2)], dim=2).floor()  # (x1, y1, x2, y2)
    valid = torch.ones(batch, 3, dtype=torch.bool)
    empty = torch.zeros(batch, dtype=torch.bool)
    return maps.to(device), empty.to(device), boxes.to(device), valid.to(device)


def original_space_batch(maps: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor):
    """A function that warps ``maps`` (network input, 224) back to ImageNet-shaped stored images."""
    from pipeline.data.batch import Placements
    from pipeline.data.geometry import plan_placement
    from pipeline.maps.engine import UpsampledMaps
    from pipeline.maps.warp import original_grid_sizes, warp_to_original

    batch = maps.shape[0]
    sizes = [(500, 375) if i % 2 == 0 else (375, 500) for i in range(batch)]
    placements = [plan_placement(w, h, "resize_crop", 224, 256) for w, h in sizes]
    placement = Placements.of(placements)
    width, height = torch.tensor([w for w, _ in sizes]), torch.tensor([h for _, h in sizes])
    grid = original_grid_sizes(placement, width, height, 512)
    upsampled = UpsampledMaps(
        maps[:, None],
        maps[:, None],
        torch.zeros(batch, 1, dtype=torch.bool, device=maps.device),
        maps.amax(dim=(1, 2))[:, None],
    )
    shift = torch.tensor([[-p.offset_x, -p.offset_y] * 2 for p in placements], dtype=torch.float32, device=maps.device)
    stored = (boxes + shift[:, None, :]) * torch.tensor(
        [[1 / p.scale_x, 1 / p.scale_y] * 2 for p in placements], dtype=torch.float32, device=maps.device
    )[:, None, :]

    def warped():
        original = warp_to_original(upsampled, placement, width, height, grid)
        scale = original.grid_scale.to(torch.float32)
        return original, stored * torch.cat([scale, scale], dim=1)[:, None, :], valid

    return warped


def _score_view(view) -> dict:
    original, boxes, valid = view
    return score_map(
        original.normalised[:, 0], original.raw[:, 0], original.empty[:, 0], boxes, valid, domain=original.domain
    )


def _time(fn, repeats: int, device: str) -> float:
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return min(times) * 1000.0, statistics.median(times) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--thresholds", type=int, default=100)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    maps, empty, boxes, valid = realistic_batch(args.batch, args.size, args.device)
    print(
        f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} "
        f"size={args.size} torch={torch.__version__}"
    )
    r = args.repeats
    dev = args.device

    def show(name, fn, reps=r):
        best, med = _time(fn, reps, dev)
        print(f"{name:42s} median {med:9.1f} ms   min {best:9.1f} ms")

    binary = maps >= 0.15
    show("label_components (maps >= 0.15)", lambda: label_components(binary))
    show("largest_component_box (tau 0.15)", lambda: largest_component_box(maps, empty, 0.15))
    show("score_map (taus=(0.15,))", lambda: score_map(maps, maps, empty, boxes, valid))
    if args.size == 224:
        warped = original_space_batch(maps, boxes, valid)
        show("warp_to_original (ImageNet shapes)", lambda: warped())
        view = warped()
        show("score_map, original space (incl. warp)", lambda: _score_view(warped()))
        show("score_map, original space (excl. warp)", lambda: _score_view(view))
    for holes in (True, False):

        def mba(holes=holes):
            best = MaxBoxAccV2(thresholds=args.thresholds, include_holes=holes).best_iou_per_threshold(
                maps, empty, boxes, valid
            )
            return maxboxacc_from_best_iou(best.cpu().numpy(), valid.any(1).cpu().numpy(), args.thresholds)

        show(f"MaxBoxAccV2 ({args.thresholds} thresholds, holes={holes})", mba, max(1, r // 2))


if __name__ == "__main__":
    main()
