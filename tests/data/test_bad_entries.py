"""Single bad entries of issue 11 (cases 4, 7-12, 16, 19): each is one ``errors.parquet`` row (or, where
stated, a correct row), and the run goes on.

Three small datasets, one per reader (VOC folders, a CSV manifest, a COCO file), each audited once by
the tiny seeded CNN (``tests/helpers_tiny_model.py``) at a 32-pixel input with ``resize_crop`` (resize
to 40, crop 32), on the CPU. Every case sits next to good samples, so "the run goes on" is checked by
the good samples' rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.helpers_corpus import (
    add_sample,
    base_overrides,
    good_dataset,
    noise_image,
    run_in_process,
    voc_xml,
    write_classes,
)

LONG_NAME = "x" * 300 + ".jpg"  # over the 255-byte file-name limit of every common file system
NON_UTF8_STEM = b"caf\xe9"  # Latin-1 'café' from an old archive: not valid UTF-8
NON_UTF8_ID = "caf\\xe9"  # the id it gets: the undecodable byte written as a backslash escape


def _rows(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    samples = pd.read_parquet(run_dir / "samples.parquet")
    errors = pd.read_parquet(run_dir / "errors.parquet")
    return samples.set_index("id", drop=False), errors.set_index("id", drop=False)


def _error(errors: pd.DataFrame, sample_id: str) -> pd.Series:
    assert sample_id in errors.index, (sample_id, errors.index.tolist())
    return errors.loc[sample_id]


# --------------------------------------------------------------------------------------------------
# VOC folders: cases 4, 10, 11, 12, 16, 19
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("voc_bad")
    root = tmp / "data"
    good = good_dataset(root, 4)  # img_00000 .. img_00003, 24 x 24 JPEGs
    # 4: a duplicate whose "#dup1" name is a real sample's id
    add_sample(root, "img_00001", noise_image(24, 24, 50), ext=".png", key=None)  # second file with stem img_00001
    add_sample(root, "img_00001#dup1", noise_image(24, 24, 51), boxes=[(3, 3, 20, 20)])
    # 10: an infinite coordinate
    add_sample(
        root,
        "coord_inf",
        noise_image(24, 24, 52),
        xml=voc_xml("coord_inf.jpg", (24, 24), [("n001", (3, 3, 20, 20))]).replace(
            "<xmax>20</xmax>", "<xmax>inf</xmax>"
        ),
    )
    # 11: a file name that is not UTF-8 (written through bytes, as an old archive would unpack it)
    images, annotations = root / "images", root / "annotations"
    Image.fromarray(np.asarray(noise_image(24, 24, 53))).save(
        os.fsdecode(bytes(images) + b"/" + NON_UTF8_STEM + b".jpg"), format="JPEG"
    )
    with open(bytes(annotations) + b"/" + NON_UTF8_STEM + b".xml", "w", encoding="utf-8") as handle:
        handle.write(voc_xml("cafe.jpg", (24, 24), [("n001", (3, 3, 20, 20))]))
    # 12: aspect-ratio bomb, 1 x 50,000 (a ~200-byte PNG; resize_crop would make it 40 x 2,000,000)
    add_sample(root, "bomb", Image.new("RGB", (1, 50_000), (200, 10, 10)), ext=".png", boxes=[(1, 1, 1, 50_000)])
    # 12: a tall but reasonable image (1 : 20) is still audited, through the crop-first path
    add_sample(root, "tall", noise_image(12, 240, 54), ext=".png", boxes=[(1, 10, 12, 40)])
    # 16: a 16-bit grayscale PNG
    add_sample(
        root,
        "gray16",
        Image.fromarray(np.arange(24 * 24, dtype=np.uint16).reshape(24, 24) * 97),
        ext=".png",
        boxes=[(3, 3, 20, 20)],
    )
    # 19: a GIF with its annotation
    add_sample(root, "anim", None, boxes=[(3, 3, 20, 20)], size=(24, 24))
    noise_image(24, 24, 55).save(images / "anim.gif", format="GIF")
    write_classes(root)
    run_dir = tmp / "run"
    summary = run_in_process(base_overrides(root, tmp / "cache", **{"runtime.max_error_fraction": 1.0}), run_dir)
    samples, errors = _rows(run_dir)
    return {"good": good, "samples": samples, "errors": errors, "summary": summary}


def test_every_voc_entry_is_exactly_one_row(voc_run):
    samples, errors = voc_run["samples"], voc_run["errors"]
    ids = samples["id"].tolist() + errors["id"].tolist()
    assert len(ids) == len(set(ids)), sorted(ids)
    assert set(voc_run["good"]) <= set(samples.index)  # the run went on


def test_case4_duplicate_suffix_never_takes_a_real_id(voc_run):
    samples, errors = voc_run["samples"], voc_run["errors"]
    assert "img_00001#dup1" in samples.index and "img_00001#dup1" not in errors.index  # the real file keeps its id
    duplicate = errors[errors.error_type == "DuplicateId"]
    assert len(duplicate) == 1 and duplicate.path.iloc[0].endswith("img_00001.png")
    assert duplicate.id.iloc[0] == "img_00001#dup2" and "duplicate id 'img_00001'" in duplicate.message.iloc[0]


def test_case10_infinite_voc_coordinate_is_a_bad_annotation_row(voc_run):
    error = _error(voc_run["errors"], "coord_inf")
    assert (error.stage, error.error_type) == ("index", "BadAnnotation") and "inf" in error.message


def test_case11_non_utf8_file_name_is_audited_under_an_escaped_id(voc_run):
    row = voc_run["samples"].loc[NON_UTF8_ID]
    assert row.path.endswith("caf\\xe9.jpg") and row.width == 24


def test_case12_extreme_aspect_ratio_is_an_error_row(voc_run):
    error = _error(voc_run["errors"], "bomb")
    assert (error.stage, error.error_type) == ("decode", "ExtremeAspectRatio")
    assert "1x50000" in error.message and "data.preprocess.max_aspect_ratio" in error.message
    tall = voc_run["samples"].loc["tall"]
    assert (tall.width, tall.height, tall.n_boxes) == (12, 240, 0)  # the box lies outside the centre crop


def test_case16_16bit_png_is_audited(voc_run):
    row = voc_run["samples"].loc["gray16"]
    assert (row.width, row.height) == (24, 24)


def test_case19_unsupported_format_is_named(voc_run):
    error = _error(voc_run["errors"], "anim")
    assert (error.stage, error.error_type) == ("index", "UnsupportedFormat")
    assert "unsupported format" in error.message and ".gif" in error.message and error.path.endswith("anim.gif")


# --------------------------------------------------------------------------------------------------
# Manifest: cases 7 and 8
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("manifest_bad")
    root = tmp / "data"
    good = good_dataset(root, 3)
    lines = ["path,label,x1,y1,x2,y2"] + [f"images/{stem}.jpg,{i % 3},3,4,19,22" for i, stem in enumerate(good)]
    lines.append(f"images/{LONG_NAME},0,1,1,5,5")  # 7
    noise_image(24, 24, 60).save(root / "images" / "superscript.jpg")
    lines.append("images/superscript.jpg,²,1,1,5,5")  # 8: '²'.isdigit() is True, int('²') fails
    (root / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_dir = tmp / "run"
    run_in_process(
        base_overrides(root, tmp / "cache", manifest=root / "manifest.csv", **{"runtime.max_error_fraction": 1.0}),
        run_dir,
    )
    samples, errors = _rows(run_dir)
    return {"good": good, "samples": samples, "errors": errors}


def test_case7_over_long_manifest_path_is_an_error_row(manifest_run):
    (error,) = [row for _, row in manifest_run["errors"].iterrows() if row.id.startswith("xxx")]
    assert (error.stage, error.error_type) == ("index", "MissingImage") and "too long" in error.message
    assert set(manifest_run["good"]) <= set(manifest_run["samples"].index)


def test_case8_unicode_digit_label_is_a_bad_label_row(manifest_run):
    error = _error(manifest_run["errors"], "superscript")
    assert (error.stage, error.error_type) == ("index", "BadLabel") and "²" in error.message
    assert set(manifest_run["good"]) <= set(manifest_run["samples"].index)


# --------------------------------------------------------------------------------------------------
# COCO: cases 7 and 9
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("coco_bad")
    root = tmp / "data"
    good = good_dataset(root, 3)
    for stem in ("huge_bbox", "huge_width"):
        noise_image(24, 24, 70).save(root / "images" / f"{stem}.jpg")
    images = [{"id": i, "file_name": f"{stem}.jpg", "width": 24, "height": 24} for i, stem in enumerate(good)]
    images += [
        {"id": 10, "file_name": "huge_bbox.jpg", "width": 24, "height": 24},
        {"id": 11, "file_name": "huge_width.jpg", "width": "HUGE", "height": 24},
        {"id": 12, "file_name": LONG_NAME, "width": 24, "height": 24},
    ]
    annotations = [
        {"id": 100 + i, "image_id": i, "category_id": 1 + i % 3, "bbox": [3, 4, 16, 18]} for i in range(len(good))
    ]
    annotations += [
        {"id": 110, "image_id": 10, "category_id": 1, "bbox": [3, 4, "HUGE", 18]},
        {"id": 111, "image_id": 11, "category_id": 1, "bbox": [3, 4, 16, 18]},
        {"id": 112, "image_id": 12, "category_id": 1, "bbox": [3, 4, 16, 18]},
    ]
    categories = [{"id": 1 + i, "name": key} for i, key in enumerate(("n001", "n002", "n003"))]
    text = json.dumps({"images": images, "annotations": annotations, "categories": categories})
    (root / "coco.json").write_text(
        text.replace('"HUGE"', "1" + "0" * 400), encoding="utf-8"
    )  # 9: a 401-digit JSON integer
    run_dir = tmp / "run"
    overrides = base_overrides(
        root,
        tmp / "cache",
        **{"data": "coco", "data.annotations": root / "coco.json", "runtime.max_error_fraction": 1.0},
    )
    run_in_process(overrides, run_dir)
    samples, errors = _rows(run_dir)
    return {"good": good, "samples": samples, "errors": errors}


@pytest.mark.parametrize("sample_id", ["huge_bbox", "huge_width"])
def test_case9_huge_json_integer_is_a_bad_annotation_row(coco_run, sample_id):
    error = _error(coco_run["errors"], sample_id)
    assert (error.stage, error.error_type) == ("index", "BadAnnotation") and "too large" in error.message
    assert set(coco_run["good"]) <= set(coco_run["samples"].index)


def test_case7_over_long_coco_file_name_is_an_error_row(coco_run):
    (error,) = [row for _, row in coco_run["errors"].iterrows() if row.id.startswith("xxx")]
    assert (error.stage, error.error_type) == ("index", "MissingImage") and "too long" in error.message
