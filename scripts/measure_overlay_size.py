"""What drawing overlays at the size they need saves (issue 12): one overlay (picture, two map panels, captions,
colour bar, JPEG encoding) for a 224 px input as drawn now (320 px panels) against the same at 448 px panels (what a
224 px input was enlarged to before: a whole factor of 2), alternating in one process, best of 7 rounds.

    .venv/bin/python scripts/measure_overlay_size.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.reports.overlays import draw_overlay  # noqa: E402


def smooth_case(side: int, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """A ``side`` px picture and two maps upsampled from 7 x 7, like a CAM at a 7 x 7 layer."""
    picture = cv2.resize((rng.random((56, 56, 3)) * 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_LINEAR)
    maps = [cv2.resize(rng.random((7, 7), dtype=np.float32), (side, side)) for _ in range(2)]
    return picture, maps


def main() -> None:
    rng = np.random.default_rng(0)
    cases = {"448 px panels (before)": smooth_case(448, rng), "320 px panels (now)": smooth_case(224, rng)}
    boxes = np.array([[10, 10, 100, 100]], np.float32)
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(7):
        for name, (picture, maps) in cases.items():
            start = time.process_time()
            for _ in range(20):
                drawn = draw_overlay(picture, boxes, maps, [["id", "true", "pred"]] * 3)
                cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, 90])
            best[name] = min(best[name], (time.process_time() - start) / 20)
    for name, seconds in best.items():
        print(f"{name}: {seconds * 1e3:.1f} ms CPU per overlay (draw + encode, best of 7)")
    before, now = best.values()
    print(f"now / before = {now / before:.2f}")


if __name__ == "__main__":
    main()
