"""Timing of the scores on one batch of realistic maps.

Usage: ``python -m pipeline.scores.bench [--batch 64] [--size 224] [--threads N] [--device cpu]``.
Maps: 7x7 uniform random maps upsampled bilinearly (``align_corners=False``) to size x size and
min-max normalised, like real CAMs; 3 random boxes per image.  Prints the median of ``--repeats``
runs (after one warm-up) and the fastest, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from . import MaxBoxAccV2, label_components, largest_component_box, score_map


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
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} "
          f"size={args.size} torch={torch.__version__}")
    r = args.repeats
    dev = args.device
    def show(name, fn, reps=r):
        best, med = _time(fn, reps, dev)
        print(f"{name:42s} median {med:9.1f} ms   min {best:9.1f} ms")

    binary = maps >= 0.15
    show("label_components (maps >= 0.15)", lambda: label_components(binary))
    show("largest_component_box (tau 0.15)", lambda: largest_component_box(maps, empty, 0.15))
    show("score_map (taus=(0.15,))", lambda: score_map(maps, maps, empty, boxes, valid))
    for holes in (True, False):
        def mba(holes=holes):
            acc = MaxBoxAccV2(thresholds=args.thresholds, include_holes=holes)
            acc.update(maps, empty, boxes, valid)
            return acc.compute()

        show(f"MaxBoxAccV2 ({args.thresholds} thresholds, holes={holes})", mba, max(1, r // 2))


if __name__ == "__main__":
    main()
