"""A tiny finished run with saved maps, shared by the export tests."""

from __future__ import annotations

from pathlib import Path

from tests.helpers_corpus import add_sample, base_overrides, good_dataset, noise_image, run_in_process


def tiny_run(root: Path, count: int = 10, **extra) -> Path:
    """A finished run of ``count`` 24 x 24 images and two wider ones (a centre crop cuts their sides), with
    ``cam.save_maps=true``; returns its folder."""
    data = root / "data"
    good_dataset(data, count)
    add_sample(data, "wide_a", noise_image(64, 24, 101), key="n002", boxes=[(20, 3, 50, 20)])
    add_sample(data, "wide_b", noise_image(60, 30, 102), key="n003", boxes=[(2, 2, 15, 28), (30, 5, 58, 25)])
    run_dir = root / "run"
    run_in_process(base_overrides(data, root / "cache", **{"cam.save_maps": "true", **extra}), run_dir)
    return run_dir
