"""What the strategy clustering costs at the end of a run: finalize with and without it on a finished run, and
the clustering alone on a synthetic frame of any size.

    python scripts/measure_strategies.py --run outputs/default-run --rounds 3   # finalize, alternating on / off
    python scripts/measure_strategies.py --rows 50000                          # planted maps, 50,000 rows

``--run``: the finished run (with its ``.hydra/config.yaml`` and ``parts/``) is copied to a temporary folder
and ``finalize_run`` (merge, triage, shortcut finder, strategies, pictures, summary, review page) runs on the
copy, in alternating rounds with ``report.strategies`` as configured and with ``report.strategies.grid=0``
(no clustering); the model is built as the run built it (``prepare``), the overlays are not redrawn.
``--rows``: 60 % of the rows in one predicted class (over the ``max_images`` cap: a sample builds the graph,
the rest go to the nearest centre), the rest in classes of at most 5,000; each class with two planted
strategies (a blob on the object, 20 % of the maps a blob beside it), noise and 1 % empty maps.
Prints seconds and the peak resident memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.reports.strategies import MAP_GRID_COLUMN, StrategySettings, find_strategies  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def planted_frame(rows: int, grid: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` rows with the columns the clustering reads, in ``samples.parquet``'s types."""
    rng = np.random.default_rng(seed)
    sizes = [int(rows * 0.6)]
    while sum(sizes) < rows:
        sizes.append(min(5000, rows - sum(sizes)))
    y, x = np.mgrid[0:grid, 0:grid]
    frames = []
    for number, size in enumerate(sizes):
        beside = rng.random(size) < 0.2
        centre_y = np.where(beside, grid * 0.25, grid * 0.5) + rng.normal(0, 0.5, size)
        centre_x = np.where(beside, grid * 0.75, grid * 0.5) + rng.normal(0, 0.5, size)
        blobs = np.exp(-((y[None] - centre_y[:, None, None]) ** 2 + (x[None] - centre_x[:, None, None]) ** 2) / 4.5)
        grids = np.clip(blobs.reshape(size, -1) + rng.normal(0, 0.1, (size, grid * grid)), 0, None).astype(np.float32)
        grids[rng.random(size) < 0.01] = 0.0  # empty maps: not clustered
        frames.append(
            pd.DataFrame(
                {
                    "id": [f"c{number:02d}_{i:06d}" for i in range(size)],
                    "pred_name": f"class{number:02d}",
                    "label_name": f"class{number:02d}",
                    "correct": ~beside,
                    "pred_pointing_hit": pd.array(~beside, dtype="boolean"),
                    "pred_excess_energy": np.where(beside, 0.0, 0.5),
                    MAP_GRID_COLUMN: list(grids),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def finalize_rounds(run: Path, rounds: int) -> None:
    """``finalize_run`` on copies of ``run``, alternating strategies on and off (best and all rounds)."""
    from omegaconf import OmegaConf

    from pipeline.reports.finalize import finalize_run
    from pipeline.reports.schema import samples_schema
    from pipeline.settings import resolved_config, settings_from_config
    from pipeline.setup import prepare

    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    settings = settings_from_config(cfg)
    times: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as scratch:
        setup = prepare(cfg, Path(scratch) / "probe", settings=settings)
        schema = samples_schema(setup, settings)
        for _ in range(rounds):
            for mode in ("on", "off"):
                copy = Path(scratch) / f"run-{mode}"
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(run, copy, ignore=shutil.ignore_patterns("overlays"))
                strategies = settings.report.strategies
                if mode == "off":
                    strategies = dataclasses.replace(strategies, grid=0)
                report = dataclasses.replace(settings.report, strategies=strategies)
                run_settings = dataclasses.replace(settings, report=report)
                started = time.perf_counter()
                summary = finalize_run(copy, run_settings, resolved_config(cfg), setup, schema, 0, 1.0, 1.0)
                times[mode].append(time.perf_counter() - started)
                if mode == "on":
                    section = summary["strategies"]
                    clustering = section["seconds"]
                    pictures = section.get("backdrop_seconds", 0.0) + section.get("picture_seconds", 0.0)
    print(
        f"{run}: finalize with strategies best {min(times['on']):.2f} s, without {min(times['off']):.2f} s "
        f"(rounds on {[round(t, 2) for t in times['on']]}, off {[round(t, 2) for t in times['off']]}); "
        f"last round's clustering {clustering:.2f} s, backdrops and pictures {pictures:.2f} s; "
        f"peak memory {peak_mib():.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a finished run folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=0, help="a synthetic frame of this many rows")
    parser.add_argument("--max-images", type=int, default=StrategySettings.max_images)
    args = parser.parse_args()
    if args.run:
        finalize_rounds(args.run, args.rounds)
    if args.rows:
        frame = planted_frame(args.rows, 16)
        before = peak_mib()
        started = time.perf_counter()
        section, ids = find_strategies(frame, StrategySettings(max_images=args.max_images))
        seconds = time.perf_counter() - started
        biggest = max(section["classes"], key=lambda e: e["images"])
        print(
            f"{len(frame)} rows, {len(section['classes'])} classes (largest {biggest['images']} maps, {biggest['sampled']} "
            f"built its graph): clustering {seconds:.2f} s; {int(ids.notna().sum())} rows got a cluster; "
            f"clusters per class {[len(e['clusters']) for e in section['classes']]}; "
            f"peak memory {before:.0f} MiB with the frame, {peak_mib():.0f} MiB after clustering"
        )


if __name__ == "__main__":
    main()
