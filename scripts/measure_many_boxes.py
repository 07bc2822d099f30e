"""Peak memory and time of MaxBoxAccV2 for a batch in which one image has many boxes (issue 11, case 13).

    .venv/bin/python scripts/measure_many_boxes.py --boxes 1000

One process per measurement (peak RSS is per process): a batch of ``--batch`` smooth random maps of
``--size`` px, 100 thresholds, one image with ``--boxes`` boxes and the others one box each (padded to
``[B, N, 4]`` as the loader does). Prints the seconds and the process's peak RSS growth in MiB.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.nn.functional as F

from pipeline.scores.maxboxacc import MaxBoxAccV2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--boxes", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    torch.manual_seed(0)
    maps = F.interpolate(torch.rand(args.batch, 1, 7, 7), size=(args.size, args.size), mode="bilinear")[:, 0]
    maps = (maps - maps.amin(dim=(1, 2), keepdim=True)) / (
        maps.amax(dim=(1, 2), keepdim=True) - maps.amin(dim=(1, 2), keepdim=True)
    )
    corners = torch.rand(args.batch, args.boxes, 2) * args.size * 0.7
    boxes = torch.cat([corners, corners + 4 + torch.rand(args.batch, args.boxes, 2) * args.size * 0.3], dim=2)
    valid = torch.zeros(args.batch, args.boxes, dtype=torch.bool)
    valid[:, 0] = True
    valid[0] = True  # image 0 has every box
    empty = torch.zeros(args.batch, dtype=torch.bool)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    best = MaxBoxAccV2(thresholds=100).best_iou_per_threshold(maps, empty, boxes, valid)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"boxes={args.boxes} batch={args.batch} size={args.size}: {seconds:.2f} s, peak RSS +{(peak - before) / 1024:.0f} MiB, "
        f"checksum {float(best.clamp(min=0).sum()):.6f}"
    )


if __name__ == "__main__":
    main()
