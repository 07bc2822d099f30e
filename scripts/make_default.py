"""Generate the synthetic dataset and train the default model into a cache folder; print metrics and timings.

Usage::

    python scripts/make_default.py --cache outputs/.cache [--epochs 10] [--seed 0] [--force]

Both steps are cached (by spec hash, and by spec + training settings): a second run reuses them unless
``--force`` is given, in which case both are rebuilt.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

# Allow ``python scripts/make_default.py`` from the repository root without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pipeline.demo.synthetic import SyntheticSpec, ensure_synthetic  # noqa: E402
from pipeline.demo.train_default import (  # noqa: E402
    DEFAULT_EPOCHS,
    DEFAULT_WIDTH,
    TrainSettings,
    default_model_key,
    ensure_default_model,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("outputs/.cache"), help="cache folder")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--seed", type=int, default=0, help="training seed (the data seed is the spec's)")
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH)
    parser.add_argument("--force", action="store_true", help="delete cached data and model first")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) the default dataset and model, then print where they are and their metrics."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the demo's progress events (generation, epochs)
    spec = SyntheticSpec()
    settings = TrainSettings(epochs=args.epochs, seed=args.seed, width=args.width)
    data_root = args.cache / f"synthetic-{spec.short_hash()}"
    model_path = args.cache / f"default-cnn-{default_model_key(spec, settings)}.pt"
    if args.force:
        shutil.rmtree(data_root, ignore_errors=True)
        model_path.unlink(missing_ok=True)

    start = time.perf_counter()
    ensure_synthetic(args.cache, spec)
    generate_s = time.perf_counter() - start
    start = time.perf_counter()
    ensure_default_model(args.cache, spec, epochs=args.epochs, seed=args.seed, width=args.width)
    train_s = time.perf_counter() - start

    checkpoint = torch.load(model_path, map_location="cpu", weights_only=True)
    print(f"data:    {data_root}  ({generate_s:.1f} s)")
    print(f"model:   {model_path}  ({train_s:.1f} s incl. loading and evaluation)")
    print(f"classes: {', '.join(checkpoint['classes'])}  (marker class: {spec.marker_class})")
    print(f"threads: {torch.get_num_threads()}")
    print(json.dumps(checkpoint["metrics"], indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
