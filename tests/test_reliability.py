"""Reliability: bad samples never stop a run, bad configuration fails fast, killed runs resume, loading
and writing are safe, and the same inputs give the same tables.

Every dataset here is written by the test into ``tmp_path`` (see ``tests/helpers_corpus.py``) and
audited with a tiny seeded CNN (``tests/helpers_tiny_model.py``) at a 32-pixel input, on the CPU.
Runs go in-process (``run_audit``) where only the tables matter, and through ``python -m pipeline``
where exit codes, stderr or signals matter. Subprocess start-up (~4 s: torch + torchvision imports)
dominates, so independent CLI cases run concurrently, and the CLI variants of cases already checked
in-process are marked ``slow``.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image, ImageOps

from pipeline.data.dataset import AuditDataset, PreprocessSpec
from pipeline.data.decode import decode_image
from pipeline.data.records import SampleRecord
from pipeline.errors import ConfigError, TooManyFailures
from pipeline.reports.overlays import safe_file_stem
from tests.helpers_corpus import (MAIN, add_sample, base_overrides, cli_command, good_dataset, jpeg_bytes, noise_image,
                                  read_summary, run_cli, run_in_process, write_classes)
from tests.helpers_tiny_model import TinyNet

CONFIG_LINE = re.compile(r"^cam-audit: configuration error: (?P<option>[\w.]+): .+$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+\.jpg$")


# --------------------------------------------------------------------------------------------------
# 1. Bad samples: every file either gives a correct row or an errors.parquet row, and the run goes on
# --------------------------------------------------------------------------------------------------


def _ok(width: int, height: int, label: int = 0, n_boxes: int = 1, dropped: int = 0) -> dict:
    return {"ok": True, "width": width, "height": height, "label": label, "n_boxes": n_boxes, "dropped": dropped}


def _fails(stage: str, error_type: str, text: str, has_path: bool = True) -> dict:
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


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> Path:
    """A flat 12,000 x 9,000 JPEG (1.7 MB on disk, 309 MiB decoded at full size)."""
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    Image.new("RGB", (12000, 9000), (90, 120, 150)).save(path, quality=50)
    return path


def build_corpus(root: Path, big_jpeg: Path) -> dict[str, dict]:
    """Write one sample per kind of bad input; returns id -> expected outcome."""
    expected: dict[str, dict] = {}

    def ok(stem, content, ext=".jpg", boxes=((11, 11, 40, 30),), **row):
        add_sample(root, stem, content, ext, boxes=list(boxes))
        expected[stem] = _ok(**row)

    # decodable oddities: each must give a correct row
    ok("good", noise_image(64, 48, 1), width=64, height=48)
    ok("alpha", noise_image(50, 40, 2, "RGBA"), ".png", width=50, height=40)
    ok("gray", noise_image(40, 50, 3, "L"), width=40, height=50)
    ok("cmyk", noise_image(48, 48, 4, "CMYK"), width=48, height=48)
    ok("gray16", Image.fromarray((np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 53)), ".png", width=40, height=30)
    ok("exif_rotated", exif_jpeg()[1], width=64, height=48)  # stored frame by default: the 64 x 48 of the file
    ok("big", big_jpeg.read_bytes(), boxes=((3001, 2001, 9000, 7000),), width=12000, height=9000)
    ok("tiny", noise_image(8, 8, 5), boxes=((2, 2, 7, 7),), width=8, height=8)
    ok("chat_été_猫", noise_image(64, 48, 6), width=64, height=48)
    ok("dup", noise_image(64, 48, 7), width=64, height=48)  # and dup.png below: same id
    # boxes: outside the image, inverted, zero area (1-based inclusive: xmax = xmin - 1), one good + one bad
    ok("box_outside", noise_image(64, 48, 8), boxes=((101, 101, 120, 120),), width=64, height=48, n_boxes=0, dropped=1)
    ok("box_inverted", noise_image(64, 48, 9), boxes=((40, 10, 10, 30),), width=64, height=48, n_boxes=0, dropped=1)
    ok("box_zero_area", noise_image(64, 48, 10), boxes=((20, 10, 19, 30),), width=64, height=48, n_boxes=0, dropped=1)
    ok("box_mixed", noise_image(64, 48, 11), boxes=((11, 11, 40, 30), (40, 10, 10, 30)), width=64, height=48, n_boxes=1, dropped=1)

    # failures: each must become exactly one errors.parquet row
    images = root / "images"
    (images / "dup.png").write_bytes(b"")  # written raw: a second file with the stem of dup.jpg
    expected["dup#dup1"] = _fails("index", "DuplicateId", "duplicate id 'dup'")
    add_sample(root, "zero_bytes", b"", boxes=[(1, 1, 5, 5)], size=(64, 48))
    expected["zero_bytes"] = _fails("decode", "UnidentifiedImageError", "cannot identify image file")
    whole = jpeg_bytes(noise_image(64, 48, 12))
    add_sample(root, "truncated", whole[: len(whole) // 2], boxes=[(1, 1, 5, 5)], size=(64, 48))
    expected["truncated"] = _fails("decode", "OSError", "truncated")
    add_sample(root, "text_named_jpg", b"this is a text file, not a JPEG\n", boxes=[(1, 1, 5, 5)], size=(64, 48))
    expected["text_named_jpg"] = _fails("decode", "UnidentifiedImageError", "cannot identify image file")
    add_sample(root, "annotation_only", None, boxes=[(1, 1, 5, 5)], size=(64, 48))
    expected["annotation_only"] = _fails("index", "MissingImage", "has no image", has_path=False)
    add_sample(root, "image_only", noise_image(64, 48, 13), key=None)
    expected["image_only"] = _fails("index", "MissingAnnotation", "no annotation")
    add_sample(root, "unknown_label", noise_image(64, 48, 14), key="n999", boxes=[(1, 1, 5, 5)])
    expected["unknown_label"] = _fails("index", "BadLabel", "unknown or ambiguous label n999")
    add_sample(root, "size_mismatch", noise_image(64, 48, 15), boxes=[(1, 1, 5, 5)], size=(100, 100))
    expected["size_mismatch"] = _fails("annotation", "ValueError", "annotation says 100x100 but the image is 64x48")
    add_sample(root, "broken_xml", noise_image(64, 48, 16), xml="<annotation><object><name>n001")
    expected["broken_xml"] = _fails("index", "BadAnnotation", "bad annotation broken_xml.xml")
    write_classes(root)
    return expected


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, big_jpeg):
    """One audit of the whole corpus (with DataLoader workers and every overlay), its stdout captured."""
    tmp = tmp_path_factory.mktemp("corpus")
    root, run_dir = tmp / "data", tmp / "run"
    expected = build_corpus(root, big_jpeg)
    overrides = base_overrides(root, tmp / "cache", **{"runtime.num_workers": 2, "report.overlays": "all",
                                                        "runtime.max_error_fraction": 1.0})
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = run_in_process(overrides, run_dir)
    samples = pd.read_parquet(run_dir / "samples.parquet")
    errors = pd.read_parquet(run_dir / "errors.parquet")
    return {"root": root, "run_dir": run_dir, "expected": expected, "summary": summary, "printed": printed.getvalue(),
            "samples": samples.set_index("id", drop=False), "errors": errors.set_index("id", drop=False)}


def test_every_sample_is_a_row_or_an_error_exactly_once(corpus_run):
    expected, samples, errors = corpus_run["expected"], corpus_run["samples"], corpus_run["errors"]
    assert not samples.index.duplicated().any() and not errors.index.duplicated().any()
    assert set(samples.index).isdisjoint(errors.index)
    assert sorted(samples.index) == sorted(k for k, v in expected.items() if v["ok"])
    assert sorted(errors.index) == sorted(k for k, v in expected.items() if not v["ok"])


def test_decodable_oddities_give_correct_rows(corpus_run):
    samples, root = corpus_run["samples"], corpus_run["root"]
    for sample_id, want in corpus_run["expected"].items():
        if not want["ok"]:
            continue
        row = samples.loc[sample_id]
        assert (row.width, row.height) == (want["width"], want["height"]), sample_id
        assert row.label == want["label"] and row.label_name == "cat", sample_id
        assert (row.n_boxes, row.n_boxes_dropped) == (want["n_boxes"], want["dropped"]), sample_id
        assert Path(row.path).parent == (root / "images").resolve() and Path(row.path).stem == sample_id
        assert 0.0 <= row.confidence <= 1.0 and row.pred_name in ("cat", "dog", "bird"), sample_id
        if want["n_boxes"] == 0:  # no box left: flagged, and box scores are NaN (not 0)
            assert row.no_box_in_input and np.isnan(row.true_energy_in_box) and np.isnan(row.pred_energy_in_box), sample_id
        else:
            assert not row.no_box_in_input and 0.0 <= row.true_energy_in_box <= 1.0, sample_id


def test_bad_samples_become_error_rows_with_stage_type_and_message(corpus_run):
    errors, root = corpus_run["errors"], corpus_run["root"]
    assert list(errors.columns) == ["id", "path", "stage", "error_type", "message"]
    for sample_id, want in corpus_run["expected"].items():
        if want["ok"]:
            continue
        row = errors.loc[sample_id]
        assert (row.stage, row.error_type) == (want["stage"], want["error_type"]), (sample_id, row.stage, row.error_type, row.message)
        assert want["text"] in row.message, (sample_id, row.message)
        if want["has_path"]:
            assert Path(row.path).parent == (root / "images").resolve(), sample_id
        else:
            assert row.path == "", sample_id


def test_summary_states_how_many_were_skipped_and_why(corpus_run):
    expected, errors, printed = corpus_run["expected"], corpus_run["errors"], corpus_run["printed"]
    summary = read_summary(corpus_run["run_dir"])
    n_ok = sum(v["ok"] for v in expected.values())
    assert summary["images"] == n_ok and summary["errors"] == len(expected) - n_ok
    counts = errors.groupby(["stage", "error_type"]).size()
    assert {(e["stage"], e["error_type"]): e["n"] for e in summary["errors_by_stage"]} == counts.to_dict()
    assert counts[("index", "BadAnnotation")] == 1 and counts[("index", "BadLabel")] == 1 and counts[("decode", "UnidentifiedImageError")] == 2
    assert f"{summary['errors']} skipped" in printed
    for (stage, error_type), n in counts.items():
        assert f"skipped at {stage}: {n} x {error_type}" in printed


def test_overlays_use_safe_names_inside_the_run_folder(corpus_run):
    run_dir = corpus_run["run_dir"]
    written = [p for p in run_dir.rglob("*.jpg")]
    assert written and all(p.parent == run_dir / "overlays" and SAFE_NAME.match(p.name) for p in written)
    assert len(written) == len(corpus_run["samples"])  # report.overlays=all: one per scored image
    assert (run_dir / "overlays" / f"{safe_file_stem('chat_été_猫')}.jpg").is_file()


def test_decoder_channel_rules(tmp_path):
    """Alpha dropped (RGB kept as stored), grey repeated, 16-bit scaled by 255/65535 (also a dark one),
    CMYK converted by PIL."""
    rgba = noise_image(9, 7, 1, "RGBA")
    rgba.save(tmp_path / "a.png")
    image, size = decode_image(str(tmp_path / "a.png"))
    assert size == (9, 7) and torch.equal(image, torch.from_numpy(np.asarray(rgba)[:, :, :3].copy()).permute(2, 0, 1))
    noise_image(9, 7, 2, "L").save(tmp_path / "g.png")
    image, _ = decode_image(str(tmp_path / "g.png"))
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    for name, values, want in (("bright", [[0, 65535], [32768, 257]], [[0, 255], [128, 1]]),
                               ("dark", [[0, 255], [128, 200]], [[0, 1], [0, 1]])):
        Image.fromarray(np.asarray(values, np.uint16)).save(tmp_path / f"{name}.png")
        assert Image.open(tmp_path / f"{name}.png").mode.startswith("I;16")
        image, _ = decode_image(str(tmp_path / f"{name}.png"))
        assert image[0].tolist() == want, name
    noise_image(9, 7, 3, "CMYK").save(tmp_path / "c.jpg", quality=95)
    image, _ = decode_image(str(tmp_path / "c.jpg"))
    assert torch.equal(image, torch.from_numpy(np.asarray(Image.open(tmp_path / "c.jpg").convert("RGB")).copy()).permute(2, 0, 1))


def test_huge_jpeg_decodes_in_modest_memory(big_jpeg, tmp_path):
    """A 12,000 x 9,000 JPEG (309 MiB as RGB) decodes in a fresh process whose peak RSS grows by far
    less than the full image: the decoder reduces it while decoding (PIL draft, as the dataset asks with
    ``min_side`` = the resize target). Only the decoder is imported, to keep the child light."""
    Image.new("RGB", (300, 200), (90, 120, 150)).save(tmp_path / "warm.jpg")
    code = f"""
import resource
from pipeline.data.decode import decode_image
decode_image({str(tmp_path / 'warm.jpg')!r}, min_side=256)  # warm-up: first-call allocations before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image, (width, height) = decode_image({str(big_jpeg)!r}, min_side=256)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(width, height, min(image.shape[1:]), (after - before) / 1024)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=MAIN, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    width, height, short_side, grown = result.stdout.split()
    assert (width, height) == ("12000", "9000") and 256 <= int(short_side) < 9000  # reduced, still >= the resize target
    assert float(grown) < 60, f"peak RSS grew by {float(grown):.0f} MiB decoding a 12000x9000 JPEG"


def _exif_dataset(root: Path, frame: str) -> tuple[int, int, tuple[int, int, int, int]]:
    """One EXIF-rotated sample annotated in the ``stored`` or ``displayed`` frame; returns the frame's
    size and the patch's pixel-edge box in it."""
    picture, data = exif_jpeg()
    if frame == "stored":
        width, height, box = 64, 48, (40, 8, 56, 24)
    else:
        shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("L")) > 128
        ys, xs = np.nonzero(shown)
        height, width = shown.shape
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    add_sample(root, "rotated", data, boxes=[(box[0] + 1, box[1] + 1, box[2], box[3])], size=(width, height))
    write_classes(root)
    return width, height, box


@pytest.mark.parametrize("frame", ["stored", "displayed"])
def test_exif_orientation_boxes_follow_the_chosen_frame(tmp_path, frame):
    """``stored`` (default) ignores the EXIF tag; ``displayed`` rotates first. Either way, the box lands
    on the white patch in the network input, and the run reports the frame's size."""
    width, height, box = _exif_dataset(tmp_path / "data", frame)
    assert (width, height) == ((64, 48) if frame == "stored" else (48, 64))
    record = SampleRecord("rotated", str(tmp_path / "data" / "images" / "rotated.jpg"), 0, np.asarray([box], np.float32))
    item = AuditDataset([record], PreprocessSpec(mode="resize", size=64, resize_size=None, boxes_refer_to=frame))[0]
    assert item["ok"] and (item["width"], item["height"]) == (width, height)
    x1, y1, x2, y2 = (int(round(float(v))) for v in item["boxes"][0])
    pixels = item["image"].float().mean(dim=0)
    assert pixels[y1 + 2:y2 - 2, x1 + 2:x2 - 2].mean() > 200  # the patch is inside the box
    outside = torch.ones_like(pixels, dtype=torch.bool)
    outside[max(0, y1 - 3):y2 + 3, max(0, x1 - 3):x2 + 3] = False
    assert pixels[outside].mean() < 20  # and nothing bright outside it

    summary = run_in_process(base_overrides(tmp_path / "data", tmp_path / "cache", **{"data.preprocess.boxes_refer_to": frame}),
                             tmp_path / "run")
    row = pd.read_parquet(tmp_path / "run" / "samples.parquet").iloc[0]
    assert summary["errors"] == 0 and (row.width, row.height, row.n_boxes) == (width, height, 1)


def test_exif_annotation_in_the_other_frame_is_reported(tmp_path):
    """Stored-frame annotations audited with boxes_refer_to=displayed: the size check catches it."""
    _exif_dataset(tmp_path / "data", "stored")
    run_in_process(base_overrides(tmp_path / "data", tmp_path / "cache", **{"data.preprocess.boxes_refer_to": "displayed"}),
                   tmp_path / "run")
    error = pd.read_parquet(tmp_path / "run" / "errors.parquet").iloc[0]
    assert (error.id, error.stage) == ("rotated", "annotation") and "annotation says 64x48 but the image is 48x64" in error.message


def test_metadata_columns_that_clash_with_the_report_do_not_replace_it(tmp_path):
    """A metadata CSV with its own ``label`` (a name) and ``width``: the pipeline's columns win, the
    others join; a sample the CSV does not list gets nulls."""
    ids = good_dataset(tmp_path / "data", 4)
    pd.DataFrame({"id": ids[:3], "label": ["cat", "dog", "bird"], "width": [999] * 3, "marker_present": [1, 0, 1]}).to_csv(
        tmp_path / "meta.csv", index=False)
    run_in_process(base_overrides(tmp_path / "data", tmp_path / "cache", **{"data.metadata": tmp_path / "meta.csv"}), tmp_path / "run")
    samples = pd.read_parquet(tmp_path / "run" / "samples.parquet").set_index("id")
    assert samples["label"].tolist() == [0, 1, 2, 0] and samples["width"].tolist() == [24] * 4
    assert samples["marker_present"].iloc[:3].tolist() == [1, 0, 1] and pd.isna(samples["marker_present"].iloc[3])


def _failing_dataset(root: Path) -> list[str]:
    """6 text files named .jpg (sorted first) then 6 good images."""
    for i in range(6):
        add_sample(root, f"a_bad_{i}", b"not an image", boxes=[(1, 1, 5, 5)], size=(24, 24))
    return good_dataset(root, 6)


def test_too_many_failures_stops_in_process_and_keeps_the_error_rows(tmp_path):
    _failing_dataset(tmp_path / "data")
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache", **{"runtime.min_samples_for_error_check": 4,
                                                                         "runtime.max_error_fraction": 0.25})
    with pytest.raises(TooManyFailures, match=r"4 of 4 samples failed, more than runtime.max_error_fraction=0.25"):
        run_in_process(overrides, tmp_path / "run")
    assert not (tmp_path / "run" / "samples.parquet").exists()
    errors = pd.concat(pd.read_parquet(p) for p in (tmp_path / "run" / "parts").glob("errors-*.parquet"))
    assert sorted(errors["id"]) == [f"a_bad_{i}" for i in range(4)]


# --------------------------------------------------------------------------------------------------
# 2. Bad configuration: one line naming the option, exit code 2, before any work
# --------------------------------------------------------------------------------------------------


class Payload:
    """Unpickling this runs ``os.makedirs(marker)``: proof of execution if a loader ever unpickles it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.fixture(scope="module")
def config_world(tmp_path_factory) -> dict:
    """A good dataset, a file to put a run folder under, and a checkpoint with a code-running payload."""
    tmp = tmp_path_factory.mktemp("config")
    root = tmp / "data"
    good_dataset(root, 4)
    (tmp / "a_file").write_text("not a folder")
    (tmp / "empty" / "images").mkdir(parents=True)
    (tmp / "empty" / "annotations").mkdir()
    (tmp / "dup_classes.txt").write_text("n001 cat\nn001 cat\n")
    (tmp / "other_classes.txt").write_text("cat\ndog\nfox\n")  # names only: the XML labels are WordNet-style ids
    evil = tmp / "evil.pt"
    torch.save({"state_dict": TinyNet().state_dict(), "payload": Payload(str(tmp / "pwned"))}, evil)
    return {"tmp": tmp, "root": root, "evil": evil, "marker": tmp / "pwned"}


def config_case(name: str, world: dict) -> tuple[list[str], Path, str]:
    """``(overrides, run folder, option the error must name)`` for one bad configuration."""
    tmp, root = world["tmp"], world["root"]
    run_dir, cache = tmp / f"run_{name}", tmp / "cache"
    cases = {
        "missing_data_folder": ({"data.images": tmp / "nope"}, "data.images"),
        "missing_annotation_folder": ({"data.annotations": tmp / "nope"}, "data.annotations"),
        "empty_dataset": ({"data.images": tmp / "empty" / "images", "data.annotations": tmp / "empty" / "annotations"}, "data.images"),
        "class_list_repeats_a_class": ({"data.classes": tmp / "dup_classes.txt"}, "data.classes"),
        "wrong_target_layer": ({"model.target_layer": "features.9"}, "model.target_layer"),
        "outputs_do_not_match_classes": ({"num_classes": 5}, "data.classes"),  # TinyNet(5) vs 3 classes
        "unknown_cam_method": ({"cam.method": "gradcam_plus_minus"}, "cam.method"),
        "cuda_without_gpu": ({"runtime.device": "cuda"}, "runtime.device"),
        "run_dir_under_a_file": ({}, "hydra.run.dir"),
        "mandatory_value_missing": ({"data.images": None}, "data.images"),
        "classes_from_model_without_metadata": ({"data.classes": None}, "data.classes"),  # TinyNet names no classes
        "class_list_matches_no_label": ({"data.classes": tmp / "other_classes.txt"}, "data.classes"),
        "checkpoint_with_pickled_object": ({"model.checkpoint": world["evil"]}, "model.checkpoint"),
        "unknown_interpolation": ({"data.preprocess.interpolation": "cubic"}, "data.preprocess.interpolation"),
        "unknown_preprocess_mode": ({"data.preprocess.mode": "crop"}, "data.preprocess.mode"),
        "unknown_score_space": ({"scores.space": "stored"}, "scores.space"),
    }
    extra, option = cases[name]
    if name == "run_dir_under_a_file":
        run_dir = tmp / "a_file" / "run"
    return base_overrides(root, cache, **extra), run_dir, option


CONFIG_CASES = ["missing_data_folder", "missing_annotation_folder", "empty_dataset", "class_list_repeats_a_class",
                "wrong_target_layer", "outputs_do_not_match_classes", "unknown_cam_method", "cuda_without_gpu",
                "run_dir_under_a_file", "mandatory_value_missing", "checkpoint_with_pickled_object", "unknown_interpolation",
                "unknown_preprocess_mode", "unknown_score_space", "classes_from_model_without_metadata",
                "class_list_matches_no_label"]
# Cases whose CLI path differs from "ConfigError raised in prepare()" (checked in-process for every case):
# always run through the CLI. The rest go through the CLI in the slow set.
CLI_ALWAYS = ["run_dir_under_a_file", "mandatory_value_missing"]


def _skip_if_gpu(name: str) -> None:
    if name == "cuda_without_gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is present: cuda is a valid device here")


def _assert_config_failure(result: subprocess.CompletedProcess, option: str, run_dir: Path) -> None:
    """Exit 2, one ``cam-audit: configuration error: <option>: ...`` line, no traceback, no work done."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    ours = [line for line in result.stderr.splitlines() if line.startswith("cam-audit:")]
    assert len(ours) == 1, result.stderr
    match = CONFIG_LINE.match(ours[0])
    assert match and match["option"] == option, ours[0]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert not (run_dir / "parts").exists() and not (run_dir / "samples.parquet").exists()


def _run_concurrently(commands: dict[str, tuple[list[str], Path]], timeout: float = 180) -> dict[str, subprocess.CompletedProcess]:
    """Start every ``python -m pipeline`` at once (start-up dominates), then collect them."""
    running = {name: (subprocess.Popen(cli_command(overrides, run_dir), cwd=MAIN, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True), overrides) for name, (overrides, run_dir) in commands.items()}
    results = {}
    for name, (process, overrides) in running.items():
        out, err = process.communicate(timeout=timeout)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return results


@pytest.fixture(scope="module")
def cli_results(config_world, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """The CLI runs of the fast set, started together: CLI_ALWAYS and a run stopped for too many
    failures (exit 3)."""
    commands = {name: config_case(name, config_world)[:2] for name in CLI_ALWAYS}
    failing = tmp_path_factory.mktemp("failing")
    _failing_dataset(failing / "data")
    commands["too_many_failures"] = (base_overrides(failing / "data", failing / "cache", **{
        "runtime.min_samples_for_error_check": 4, "runtime.max_error_fraction": 0.25}), failing / "run")
    return _run_concurrently(commands)


@pytest.fixture(scope="module")
def slow_cli_results(config_world) -> dict[str, subprocess.CompletedProcess]:
    """Every other config case through the CLI, plus runtime.debug=true and an unknown config group."""
    names = [n for n in CONFIG_CASES if n not in CLI_ALWAYS and not (n == "cuda_without_gpu" and torch.cuda.is_available())]
    commands = {name: config_case(name, config_world)[:2] for name in names}
    overrides, run_dir, _ = config_case("missing_data_folder", config_world)
    commands["debug"] = (overrides + ["runtime.debug=true"], run_dir.with_name("run_debug"))
    commands["unknown_group"] = (["cam=nope"], config_world["tmp"] / "run_unknown_group")
    return _run_concurrently(commands)


@pytest.mark.parametrize("name", CONFIG_CASES)
def test_bad_configuration_is_a_config_error_naming_the_option(config_world, name):
    """In-process: prepare() raises ConfigError(option) with a one-line message before writing parts."""
    _skip_if_gpu(name)
    if name == "mandatory_value_missing":
        from omegaconf.errors import MissingMandatoryValue

        overrides, run_dir, option = config_case(name, config_world)
        with pytest.raises(MissingMandatoryValue):  # the CLI turns it into the one-line message
            run_in_process(overrides, run_dir)
        return
    overrides, run_dir, option = config_case(name, config_world)
    with pytest.raises(ConfigError) as error:
        run_in_process(overrides, run_dir)
    assert error.value.option == option and "\n" not in str(error.value), str(error.value)
    assert not (run_dir / "parts").exists()
    if name == "class_list_matches_no_label":  # a run of zero rows would look like success
        assert "4 of 4 samples cannot be audited" in str(error.value) and "'cat'" in str(error.value)
    if name == "checkpoint_with_pickled_object":
        assert "refused" in str(error.value) and "os.makedirs" in str(error.value)
        assert not config_world["marker"].exists()  # never unpickled


@pytest.mark.parametrize("name", CLI_ALWAYS)
def test_cli_prints_one_line_and_exits_2(cli_results, config_world, name):
    _, run_dir, option = config_case(name, config_world)
    _assert_config_failure(cli_results[name], option, run_dir)


@pytest.mark.slow
def test_debug_shows_the_traceback(slow_cli_results):
    result = slow_cli_results["debug"]
    assert result.returncode != 0 and "Traceback" in result.stderr and "ConfigError" in result.stderr


def test_cli_too_many_failures_exits_3(cli_results):
    result = cli_results["too_many_failures"]
    assert result.returncode == 3, result.stderr[-2000:]
    assert re.search(r"^cam-audit: stopped: 4 of 4 samples failed, more than runtime.max_error_fraction=0.25", result.stderr, re.M)
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in CONFIG_CASES if n not in CLI_ALWAYS])
def test_cli_every_config_case(slow_cli_results, config_world, name):
    _skip_if_gpu(name)
    _, run_dir, option = config_case(name, config_world)
    _assert_config_failure(slow_cli_results[name], option, run_dir)
    if name == "checkpoint_with_pickled_object":
        assert not config_world["marker"].exists()


@pytest.mark.slow
def test_unknown_config_group_is_reported_by_hydra(slow_cli_results, config_world):
    """``cam=nope`` is Hydra's own error (not ours): non-zero exit, the group and option named, no work."""
    result = slow_cli_results["unknown_group"]
    assert result.returncode != 0 and "cam/nope" in result.stderr, result.stderr
    assert not (config_world["tmp"] / "run_unknown_group").exists()


# --------------------------------------------------------------------------------------------------
# 3. Killed runs resume: every sample exactly once, parts readable at all times
# --------------------------------------------------------------------------------------------------


def _read_every_part(parts_dir: Path) -> dict[str, list[str]]:
    """Ids per table from every complete part; raises if any part on disk is unreadable."""
    ids: dict[str, list[str]] = {"samples": [], "errors": []}
    for path in sorted(parts_dir.glob("*.parquet")):
        table = pq.read_table(path)  # a half-written part would raise here
        ids[path.name.split("-", 1)[0]].extend(table.column("id").to_pylist())
    return ids


def test_sigkill_mid_run_then_resume_gives_every_sample_exactly_once(tmp_path):
    root, run_dir = tmp_path / "data", tmp_path / "run"
    ids = good_dataset(root, 120, side=16)
    for i in range(0, 120, 30):  # bad files spread through the run: decode failures and an index failure
        add_sample(root, f"img_{i:05d}b", b"not an image", boxes=[(1, 1, 5, 5)], size=(16, 16))
        ids.append(f"img_{i:05d}b")
    add_sample(root, "img_00099c", noise_image(16, 16, 0), key=None)
    ids.append("img_00099c")
    overrides = base_overrides(root, tmp_path / "cache", **{"report.rows_per_part": 8, "runtime.batch_size": 4,
                                                            "runtime.num_workers": 2, "+model.kwargs.delay_s": 0.03})
    process = subprocess.Popen(cli_command(overrides, run_dir), cwd=MAIN, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)  # its own process group: the kill takes the loader workers too
    parts_dir = run_dir / "parts"
    deadline = time.monotonic() + 120
    try:
        while not list(parts_dir.glob("samples-*.parquet")):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no part was written"
            if parts_dir.is_dir():
                _read_every_part(parts_dir)  # readable while the run is writing
            time.sleep(0.005)
        assert process.poll() is None, "the run ended before it could be killed: make it longer"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (run_dir / "samples.parquet").exists()
    before = _read_every_part(parts_dir)  # every part left by the killed run reads
    done_before = before["samples"] + before["errors"]
    assert 0 < len(done_before) < len(ids) and len(set(done_before)) == len(done_before)

    with pytest.raises(ConfigError, match="set resume=true") as error:  # same folder without resume=true
        run_in_process(overrides, run_dir)
    assert error.value.option == "resume"

    summary = run_in_process(overrides + ["resume=true"], run_dir)
    samples = pd.read_parquet(run_dir / "samples.parquet")["id"].tolist()
    errors = pd.read_parquet(run_dir / "errors.parquet")["id"].tolist()
    assert sorted(samples + errors) == sorted(ids)  # every sample exactly once: none missing, none twice
    assert len(errors) == 5 and summary["images"] == 120 and summary["errors"] == 5
    index_left = 0 if "img_00099c" in done_before else 1  # index errors are written, not "scored"
    assert summary["images_scored_this_invocation"] + index_left == len(ids) - len(done_before)


def test_resume_removes_half_written_parts_of_the_interrupted_run(tmp_path):
    good_dataset(tmp_path / "data", 4)
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache")
    run_in_process(overrides, tmp_path / "run")
    leftover = tmp_path / "run" / "parts" / ".samples-r000-000009.parquet.tmp-4242"  # what a kill mid-write leaves
    leftover.write_bytes(b"PAR1 half")
    summary = run_in_process(overrides + ["resume=true"], tmp_path / "run")
    assert not leftover.exists() and summary["images"] == 4


@pytest.mark.slow
def test_cli_refuses_a_used_folder_without_resume(tmp_path):
    good_dataset(tmp_path / "data", 4)
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache")
    assert run_cli(overrides, tmp_path / "run").returncode == 0
    result = run_cli(overrides, tmp_path / "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("cam-audit:")]
    assert len(ours) == 1 and CONFIG_LINE.match(ours[0])["option"] == "resume" and "resume=true" in ours[0]


# --------------------------------------------------------------------------------------------------
# 4. Safe writing and paths: ids cannot escape the run folder, manifests cannot leave their root
# --------------------------------------------------------------------------------------------------


def _manifest_dataset(tmp_path: Path) -> Path:
    """A manifest in ``data/`` naming two images inside (crafted ids) and one at ``../outside.jpg``."""
    root = tmp_path / "data"
    root.mkdir()
    noise_image(24, 24, 1).save(root / "a.jpg")
    noise_image(24, 24, 2).save(root / "b.jpg")
    noise_image(24, 24, 3).save(tmp_path / "outside.jpg")
    write_classes(root)
    pd.DataFrame({"id": ["../../evil", "../élan/../../x", "outside"], "path": ["a.jpg", "b.jpg", "../outside.jpg"],
                  "label": ["n001", "n002", "n003"], "boxes": ["[[2, 2, 20, 20]]"] * 3}).to_csv(root / "manifest.csv", index=False)
    return root


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_crafted_ids_and_outside_paths_stay_contained(tmp_path):
    root = _manifest_dataset(tmp_path)
    before = _files(tmp_path)
    run_dir = tmp_path / "runs" / "run"
    overrides = base_overrides(root, tmp_path / "cache", manifest=root / "manifest.csv", **{"report.overlays": "all"})
    run_in_process(overrides, run_dir)
    created = _files(tmp_path) - before
    assert created and all(run_dir in p.parents for p in created), sorted(map(str, created))
    overlays = sorted(p.name for p in (run_dir / "overlays").iterdir())
    assert len(overlays) == 2 and all(SAFE_NAME.match(name) for name in overlays), overlays
    samples = pd.read_parquet(run_dir / "samples.parquet")
    assert sorted(samples["id"]) == ["../../evil", "../élan/../../x"]  # the id itself is kept, only file names change
    error = pd.read_parquet(run_dir / "errors.parquet").iloc[0]
    assert (error.id, error.stage) == ("outside", "index") and "outside" in error.message and "allow_outside_root" in error.message


def test_allow_outside_root_lets_the_outside_image_in(tmp_path):
    root = _manifest_dataset(tmp_path)
    overrides = base_overrides(root, tmp_path / "cache", manifest=root / "manifest.csv", **{"data.allow_outside_root": "true"})
    summary = run_in_process(overrides, tmp_path / "run")
    samples = pd.read_parquet(tmp_path / "run" / "samples.parquet").set_index("id")
    assert summary["errors"] == 0 and Path(samples.loc["outside", "path"]) == (tmp_path / "outside.jpg").resolve()


def test_safe_file_stem_cannot_traverse():
    for sample_id in ("../../evil", "/etc/passwd", "..", ".", "", "a/b\\c", "猫", "x" * 500, "-rf"):
        stem = safe_file_stem(sample_id)
        assert re.fullmatch(r"[A-Za-z0-9._-]+", stem) and not stem.startswith(".") and len(stem) <= 89, (sample_id, stem)
    assert safe_file_stem("a/b") != safe_file_stem("a_b")  # ids that clean alike still get their own file


def test_checkpoint_payload_is_real(config_world, tmp_path):
    """Guard for the refusal test: the file really runs code when unpickled without weights_only."""
    marker = tmp_path / "ran"
    with open(config_world["evil"], "rb") as handle:
        blob = handle.read()
    assert b"makedirs" in blob
    torch.save({"payload": Payload(str(marker))}, tmp_path / "check.pt")
    torch.load(tmp_path / "check.pt", weights_only=False)  # the unsafe path, on our own harmless payload
    assert marker.is_dir()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "check.pt", weights_only=True)


# --------------------------------------------------------------------------------------------------
# 5. Determinism: same inputs and configuration, same tables
# --------------------------------------------------------------------------------------------------


def test_two_runs_give_identical_tables(tmp_path):
    root = tmp_path / "data"
    good_dataset(root, 10)
    add_sample(root, "zz_bad", b"not an image", boxes=[(1, 1, 5, 5)], size=(24, 24))
    overrides = base_overrides(root, tmp_path / "cache", **{"runtime.num_workers": 2, "runtime.batch_size": 3})
    summaries = [run_in_process(overrides, tmp_path / f"run{i}") for i in (1, 2)]
    for table in ("samples", "errors", "classes"):
        first, second = (pd.read_parquet(tmp_path / f"run{i}" / f"{table}.parquet") for i in (1, 2))
        assert len(first), table
        pd.testing.assert_frame_equal(first, second, check_exact=True)
    assert pq.read_schema(tmp_path / "run1" / "samples.parquet").metadata == pq.read_schema(tmp_path / "run2" / "samples.parquet").metadata
    timing = {"run_dir", "seconds", "images_per_second"}
    first, second = ({k: v for k, v in s.items() if k not in timing} for s in summaries)
    assert _nan_safe(first) == _nan_safe(second)


def _nan_safe(value):
    """NaN != NaN: replace it by a marker so summaries compare with ``==``."""
    if isinstance(value, dict):
        return {k: _nan_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_safe(v) for v in value]
    if isinstance(value, float) and value != value:
        return "nan"
    return value


def test_index_problems_stop_the_run_only_when_they_are_systematic():
    """One bad annotation is an error row; most labels unknown is a configuration error at start."""
    from pipeline.data.records import ClassList, SampleRecord, empty_boxes
    from pipeline.sources import check_index_problems

    classes = ClassList(("n1", "n2"), ("cat", "dog"))

    def records(n_good: int, problems: list[str]) -> list[SampleRecord]:
        good = [SampleRecord(f"g{i}", "x.jpg", 0, empty_boxes()) for i in range(n_good)]
        return good + [SampleRecord(f"b{i}", "x.jpg", -1, empty_boxes(), problem=p) for i, p in enumerate(problems)]

    check_index_problems(records(57, ["unknown label fox"] * 3), classes, "voc", 0.1, 50)  # 5 %: rows in errors.parquet
    check_index_problems(records(3, ["unknown label fox"] * 2), classes, "voc", 0.1, 50)  # too few samples to judge
    with pytest.raises(ConfigError) as error:  # 17 % of 60
        check_index_problems(records(50, ["unknown label fox"] * 8 + ["bad annotation a.xml: junk"] * 2), classes, "voc", 0.1, 50)
    assert error.value.option == "data.classes" and "10 of 60" in str(error.value) and "'n1'" in str(error.value)
    with pytest.raises(ConfigError) as error:  # nothing usable at all, whatever the count
        check_index_problems(records(0, ["bad annotation a.xml: junk"] * 3), classes, "coco", 0.1, 50)
    assert error.value.option == "data.annotations"


@pytest.mark.parametrize("problem,error_type", [
    ("duplicate id 'a': b.jpg and b.png share the file stem", "DuplicateId"),
    ("duplicate file name x.jpg (also image id 3)", "DuplicateId"),
    ("file name ../x.jpg resolves outside /data (pass allow_outside_root=True to accept it)", "PathOutsideRoot"),
    ("annotation a.xml has no image", "MissingImage"),
    ("annotations refer to image id 7, which is not in 'images'", "MissingImage"),
    ("image has no annotation file", "MissingAnnotation"),
    ("image has no annotations and no label", "MissingAnnotation"),
    ("unknown or ambiguous label n999", "BadLabel"),
    ("annotations disagree (cat, dog) and the image has no label field", "BadLabel"),
    ("label index 9 out of range (3 classes)", "BadLabel"),
    ("unknown category id 12", "BadLabel"),
    ("bad annotation a.xml: mismatched tag: line 1", "BadAnnotation"),
    ("bbox [1, 2] is not [x, y, w, h]", "BadAnnotation"),
])
def test_index_problems_get_a_type_a_person_can_filter_on(problem, error_type):
    from pipeline.sources import index_problem_type

    assert index_problem_type(problem) == error_type
