"""Issue 23, case 4: a box outside the image, inverted, of zero width or under a pixel was dropped and the
image triaged "object not in input"; a box ten times past the edge was clipped and scored as the whole image.
Each is now a ``BadAnnotation`` row (stage ``annotation``, once the image size is known) naming the box and
the image size. A box within the edge tolerance (the larger of 2 px and 1 % of the side) is clipped as
before, and a valid box that the centre crop removes stays a row flagged ``no_box_in_input``: that is true.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.data.geometry import checked_boxes, edge_tolerance
from pipeline.data.records import BadAnnotation
from tests.data.audit_rows import audit_rows, error_row
from tests.helpers_corpus import add_sample, base_overrides, good_dataset, noise_image, run_in_process

SIDE = 48  # stored 48 x 48, resized to 40, centre crop 32: the crop cuts 4 input px (4.8 stored px) a side


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("box_validity")
    root = tmp / "data"
    good = good_dataset(root, 3)

    def sample(stem, boxes, seed):  # boxes 1-based inclusive, as the XML holds them
        add_sample(root, stem, noise_image(SIDE, SIDE, 100 + seed), key="n001", boxes=list(boxes))

    sample("box_ten_times", ((1, 1, 480, 480),), 1)
    sample("box_outside", ((101, 101, 120, 120),), 2)
    sample("box_inverted", ((40, 10, 10, 30),), 3)
    sample("box_zero_width", ((20, 10, 19, 30),), 4)
    sample("box_far_left", ((-30, 10, 20, 30),), 5)  # a negative coordinate, 31 px out
    sample("box_one_bad_of_two", ((11, 11, 40, 30), (1, 1, 480, 30)), 6)
    sample("box_slightly_past", ((0, -1, 49, 50),), 7)  # 1-2 px past every edge: within the tolerance
    sample("box_cut_by_crop", ((1, 1, 4, 4),), 8)  # a valid box in the corner the centre crop removes
    # a sub-pixel box needs fractional coordinates: a manifest over the same images
    (root / "manifest.csv").write_text(
        "path,label,boxes\n"
        + "".join(f'images/{s}.jpg,cat,"{json.dumps([[2, 2, 20, 20]])}"\n' for s in good)
        + 'images/box_slightly_past.jpg,cat,"[[2, 2, 2.5, 20]]"\n'
    )
    run_dir, manifest_run = tmp / "run", tmp / "run_manifest"
    run_in_process(base_overrides(root, tmp / "cache", **{"runtime.max_error_fraction": 1.0}), run_dir)
    run_in_process(
        base_overrides(root, tmp / "cache", manifest=root / "manifest.csv", **{"runtime.max_error_fraction": 1.0}),
        manifest_run,
    )
    samples, errors = audit_rows(run_dir)
    manifest_samples, manifest_errors = audit_rows(manifest_run)
    return {
        "good": good,
        "samples": samples,
        "errors": errors,
        "manifest_samples": manifest_samples,
        "manifest_errors": manifest_errors,
    }


@pytest.mark.parametrize(
    ("sample_id", "words"),
    [
        ("box_ten_times", "annotated box 1 (0, 0, 480, 480) extends 432 px past the right edge"),
        ("box_outside", "lies entirely outside the image"),
        ("box_inverted", "is inverted or empty"),
        ("box_zero_width", "is inverted or empty"),
        ("box_far_left", "31 px past the left edge"),
        ("box_one_bad_of_two", "annotated box 2 (0, 0, 480, 30)"),
    ],
)
def test_case4_a_box_that_does_not_fit_the_image_is_a_bad_annotation_row(audit, sample_id, words):
    error = error_row(audit["errors"], sample_id)
    assert (error.stage, error.error_type) == ("annotation", "BadAnnotation"), error.message
    assert words in error.message and f"the image is {SIDE}x{SIDE}" in error.message, error.message
    assert sample_id not in audit["samples"].index
    assert set(audit["good"]) <= set(audit["samples"].index)


def test_case4_a_sub_pixel_box_is_a_bad_annotation_row(audit):
    error = error_row(audit["manifest_errors"], "box_slightly_past")
    assert (error.stage, error.error_type) == ("annotation", "BadAnnotation") and "under 1 px" in error.message
    assert set(audit["manifest_samples"].index) == set(audit["good"])


def test_case4_a_box_within_the_tolerance_is_clipped_and_one_the_crop_removes_stays_a_row(audit):
    samples = audit["samples"]
    slightly = samples.loc["box_slightly_past"]
    assert (slightly.n_boxes, slightly.n_boxes_dropped) == (1, 0) and not slightly.no_box_in_input
    assert slightly.true_box_area_fraction == pytest.approx(1.0)  # clipped to the image: all of the input
    cut = samples.loc["box_cut_by_crop"]
    assert (cut.n_boxes, cut.n_boxes_dropped) == (0, 1) and cut.no_box_in_input
    assert cut.triage == "object_not_in_input" and np.isnan(cut.true_energy_in_box)


def test_edge_tolerance_is_2_px_or_1_percent_of_the_side():
    assert edge_tolerance(48) == 2.0 and edge_tolerance(1000) == 10.0
    box = np.array([[-10.0, 0.0, 1010.0, 500.0]])  # 10 px past both sides of a 1000 px wide image
    assert checked_boxes(box, 1000, 500).tolist() == [[0.0, 0.0, 1000.0, 500.0]]
    with pytest.raises(BadAnnotation, match=r"10\.5 px past the right edge \(tolerance 10 px\)"):
        checked_boxes(np.array([[0.0, 0.0, 1010.5, 500.0]]), 1000, 500)
