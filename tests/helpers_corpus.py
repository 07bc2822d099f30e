"""Small on-disk datasets and ways to run the pipeline on them, for the reliability tests.

A dataset is ILSVRC-style: ``<root>/images/<id>.<ext>``, ``<root>/annotations/<id>.xml`` (VOC XML,
**1-based inclusive** boxes) and ``<root>/classes.txt``. The model is
:class:`tests.helpers_tiny_model.TinyNet` at a 32-pixel input, so a run takes a second or two on a CPU.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

MAIN = Path(__file__).resolve().parent.parent
CONF = MAIN / "conf"
CLASSES = (("n001", "cat"), ("n002", "dog"), ("n003", "bird"))
TINY_MODEL = "tests.helpers_tiny_model.TinyNet"


def dataset_dirs(root: Path) -> tuple[Path, Path]:
    """``(images, annotations)`` folders of a dataset root, created."""
    images, annotations = root / "images", root / "annotations"
    images.mkdir(parents=True, exist_ok=True)
    annotations.mkdir(parents=True, exist_ok=True)
    return images, annotations


def write_classes(root: Path, classes=CLASSES) -> Path:
    path = root / "classes.txt"
    path.write_text("".join(f"{key} {name}\n" for key, name in classes), encoding="utf-8")
    return path


def voc_xml(filename: str, size: tuple[int, int] | None, objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    """An annotation; ``objects`` are ``(class key, (xmin, ymin, xmax, ymax))``, 1-based inclusive."""
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    boxes = "".join(
        f"<object><name>{key}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for key, (x1, y1, x2, y2) in objects)
    return f"<annotation><filename>{filename}</filename>{size_xml}{boxes}</annotation>"


def noise_image(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    """A seeded random-noise picture (so the tiny model's outputs differ between images)."""
    rng = np.random.default_rng(seed)
    bands = {"RGB": 3, "RGBA": 4, "CMYK": 4, "L": 1}[mode]
    array = rng.integers(0, 256, size=(height, width, bands), dtype=np.uint8)
    return Image.fromarray(array[:, :, 0] if bands == 1 else array, mode)


def jpeg_bytes(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **save)
    return buffer.getvalue()


def add_sample(root: Path, stem: str, content: bytes | Image.Image | None, ext: str = ".jpg", key: str | None = "n001",
               boxes: list[tuple[int, int, int, int]] | None = None, size: tuple[int, int] | None = None,
               xml: str | None = None) -> None:
    """Write one image (``None``: none) and its XML (``key=None`` and ``xml=None``: none).

    ``content`` is raw bytes, or a PIL image saved in the format of ``ext``. ``size`` defaults to the
    image's; ``xml`` replaces the generated annotation text entirely.
    """
    images, annotations = dataset_dirs(root)
    if isinstance(content, Image.Image):
        size = size or content.size
        buffer = io.BytesIO()
        content.save(buffer, format={".jpg": "JPEG", ".png": "PNG"}[ext], **({"quality": 90} if ext == ".jpg" else {}))
        content = buffer.getvalue()
    if content is not None:
        (images / f"{stem}{ext}").write_bytes(content)
    if xml is None and key is not None:
        xml = voc_xml(f"{stem}{ext}", size, [(key, box) for box in (boxes or [])])
    if xml is not None:
        (annotations / f"{stem}.xml").write_text(xml, encoding="utf-8")


def good_dataset(root: Path, count: int, side: int = 24, seed: int = 0) -> list[str]:
    """``count`` good samples (labels cycle over the classes, one box each); returns their ids."""
    ids = []
    for i in range(count):
        stem = f"img_{i:05d}"
        add_sample(root, stem, noise_image(side, side, seed + i), key=CLASSES[i % len(CLASSES)][0],
                   boxes=[(3, 4, side - 5, side - 2)])
        ids.append(stem)
    write_classes(root)
    return ids


def base_overrides(root: Path, cache: Path, num_classes: int = 3, manifest: Path | None = None, **extra) -> list[str]:
    """Overrides for a tiny run on ``root`` (VOC folders, or ``manifest``) with TinyNet on the CPU;
    ``extra`` adds or replaces ``key=value`` (a value of None drops the key)."""
    data = ({"data": "imagenet_val", "data.images": root / "images", "data.annotations": root / "annotations"} if manifest is None
            else {"data": "manifest", "data.manifest": manifest})
    options = {
        **data, "data.classes": root / "classes.txt", "data.preprocess.size": 32, "data.preprocess.resize_size": 40,
        "model": "custom", "model._target_": TINY_MODEL, "+model.kwargs.num_classes": num_classes,
        "runtime.device": "cpu", "runtime.num_workers": 0, "runtime.batch_size": 4, "runtime.progress": "false",
        "report.overlays": "none", "cache_dir": cache,
    }
    options.update(extra)
    return [f"{key}={value}" for key, value in options.items() if value is not None]


def compose(overrides: list[str]):
    """The run's configuration, composed as the CLI would (without the ``hydra`` node)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def run_in_process(overrides: list[str], run_dir: Path) -> dict:
    """Run an audit in this process; returns the summary (ConfigError / TooManyFailures propagate)."""
    from pipeline.run import run_audit

    return run_audit(compose(overrides), run_dir)


def cli_command(overrides: list[str], run_dir: Path | str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *overrides, f"hydra.run.dir={run_dir}"]


def run_cli(overrides: list[str], run_dir: Path | str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m pipeline`` from the project root, output captured."""
    return subprocess.run(cli_command(overrides, run_dir), cwd=MAIN, capture_output=True, text=True, timeout=timeout)


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())
