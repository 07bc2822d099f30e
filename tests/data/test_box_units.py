"""Issue 23, case 3: manifest boxes in normalised 0..1 coordinates were read as pixels, every box a speck in
the corner, and every image became "object not in input" (exit 0). ``data.box_units=normalized`` now scales
them by the decoded image size; boxes that plainly are in the other unit are refused at start, naming
``data.box_units``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import ConfigError
from tests.data.audit_rows import audit_rows
from tests.helpers_corpus import base_overrides, good_dataset, noise_image, run_in_process, write_classes

SIDE = 48
BOXES = {"a": (6, 8, 40, 30), "b": (10, 4, 44, 44), "c": (2, 2, 30, 20)}  # pixels of 48 x 48 images
NORMALIZED = {stem: tuple(v / SIDE for v in box) for stem, box in BOXES.items()}
SCORED = ["id", "label", "n_boxes", "n_boxes_dropped", "true_energy_in_box", "true_box_area_fraction", "pred"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("box_units")
    root = tmp / "data"
    (root / "images").mkdir(parents=True)
    for seed, stem in enumerate(BOXES):
        noise_image(SIDE, SIDE, 200 + seed).save(root / "images" / f"{stem}.jpg")
    write_classes(root)
    return {"tmp": tmp, "root": root}


def _manifest(world: dict, name: str, boxes: dict) -> Path:
    path = world["root"] / name
    path.write_text(
        "path,label,boxes\n" + "".join(f'images/{s}.jpg,cat,"{json.dumps([list(b)])}"\n' for s, b in boxes.items())
    )
    return path


def _overrides(world: dict, manifest: Path, **extra) -> list[str]:
    return base_overrides(world["root"], world["tmp"] / "cache", manifest=manifest, **extra)


def test_case3_normalized_boxes_give_the_numbers_of_the_same_boxes_in_pixels(world):
    pixel_run, normalized_run = world["tmp"] / "run_pixels", world["tmp"] / "run_normalized"
    run_in_process(_overrides(world, _manifest(world, "pixels.csv", BOXES)), pixel_run)
    normalized = _manifest(world, "normalized.csv", NORMALIZED)
    run_in_process(_overrides(world, normalized, **{"data.box_units": "normalized"}), normalized_run)
    (pixels, pixel_errors), (scaled, scaled_errors) = audit_rows(pixel_run), audit_rows(normalized_run)
    assert len(pixels) == 3 and not len(pixel_errors) and not len(scaled_errors)
    assert (pixels["n_boxes"] == 1).all()
    pd.testing.assert_frame_equal(scaled[SCORED].sort_index(), pixels[SCORED].sort_index())


def test_case3_normalized_boxes_read_as_pixels_are_refused_at_start(world, tmp_path):
    with pytest.raises(ConfigError) as error:
        run_in_process(_overrides(world, _manifest(world, "normalized_as_pixels.csv", NORMALIZED)), tmp_path / "run")
    assert error.value.option == "data.box_units" and "set data.box_units=normalized" in str(error.value)
    assert not (tmp_path / "run" / "parts").exists()


def test_case3_pixel_boxes_declared_normalized_are_refused_at_start(world, tmp_path):
    manifest = _manifest(world, "pixels_as_normalized.csv", BOXES)
    with pytest.raises(ConfigError) as error:
        run_in_process(_overrides(world, manifest, **{"data.box_units": "normalized"}), tmp_path / "run")
    assert error.value.option == "data.box_units" and "set data.box_units=pixels" in str(error.value)


def test_case3_tiny_images_with_tiny_pixel_boxes_are_not_taken_for_normalized(tmp_path):
    """The detection needs images larger than 16 px: on 8 x 8 images a 1 px box is plausible."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    noise_image(8, 8, 0).save(root / "images" / "tiny.jpg")
    write_classes(root)
    (root / "m.csv").write_text('path,label,boxes\nimages/tiny.jpg,cat,"[[0, 0, 1, 1]]"\n')
    run_in_process(base_overrides(root, tmp_path / "cache", manifest=root / "m.csv"), tmp_path / "run")
    samples, _ = audit_rows(tmp_path / "run")
    assert samples.loc["tiny", "n_boxes"] == 1


def test_box_units_is_refused_for_a_format_whose_boxes_are_pixels(tmp_path):
    good_dataset(tmp_path / "data", 2)
    with pytest.raises(ConfigError) as error:
        run_in_process(
            base_overrides(tmp_path / "data", tmp_path / "cache", **{"+data.box_units": "normalized"}), tmp_path / "run"
        )
    assert error.value.option == "data.box_units" and "data=manifest only" in str(error.value)
