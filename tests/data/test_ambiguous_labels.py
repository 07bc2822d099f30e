"""Issue 23, case 2: ImageNet lists ``crane`` twice (the bird n02012849, the machine n03126707); a label
``crane`` silently meant the later class. A text that names several classes is now refused wherever labels
are resolved (VOC XML, manifest, COCO), as a ``BadLabel`` row that lists the keys to write instead."""

from __future__ import annotations

import json

import pytest

from pipeline.data.coco import read_coco
from pipeline.data.manifest import read_manifest
from pipeline.data.records import ClassList
from tests.data.audit_rows import audit_rows, error_row
from tests.helpers_corpus import add_sample, base_overrides, good_dataset, noise_image, run_in_process

CRANES = ClassList(("n001", "n002", "n003", "n004"), ("cat", "dog", "crane", "crane"))


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ambiguous")
    root = tmp / "data"
    good = good_dataset(root, 3)
    (root / "classes.txt").write_text("".join(f"{k} {n}\n" for k, n in zip(CRANES.keys, CRANES.names)))
    add_sample(root, "crane_object", noise_image(24, 24, 1), key="crane", boxes=[(3, 3, 20, 20)])
    add_sample(root, "crane_003", noise_image(24, 24, 2), key="n003", boxes=[(3, 3, 20, 20)])
    run_dir = tmp / "run"
    overrides = base_overrides(root, tmp / "cache", num_classes=4, **{"runtime.max_error_fraction": 1.0})
    run_in_process(overrides, run_dir)
    samples, errors = audit_rows(run_dir)
    return {"good": good, "samples": samples, "errors": errors}


def test_case2_a_name_two_classes_share_is_a_bad_label_row_naming_their_keys(audit):
    """The object named ``crane`` is refused (it was class 3); the ambiguous prefix of ``crane_003`` is no
    evidence either way, its object ``n003`` gives class 2."""
    error = error_row(audit["errors"], "crane_object")
    assert (error.stage, error.error_type) == ("index", "BadLabel")
    assert "ambiguous label crane" in error.message and "n003 (class 2), n004 (class 3)" in error.message
    assert audit["samples"].loc["crane_003", "label"] == 2
    assert set(audit["good"]) <= set(audit["samples"].index)


def test_case2_ambiguous_name_in_a_manifest_and_a_coco_file(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.jpg").write_bytes(b"")
    (tmp_path / "m.csv").write_text("path,label\na.jpg,crane\nb.jpg,n004\n")
    records = {r.sample_id: r for r in read_manifest(tmp_path / "m.csv", CRANES)}
    assert records["a"].problem.type == "BadLabel" and "n003 (class 2), n004 (class 3)" in records["a"].problem.message
    assert records["b"].label == 3 and records["b"].problem is None
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg", "label": "crane"}],
        "annotations": [{"image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5]}],
        "categories": [{"id": 7, "name": "crane"}],
    }
    (tmp_path / "c.json").write_text(json.dumps(coco))
    records = {r.sample_id: r for r in read_coco(tmp_path / "c.json", tmp_path, CRANES)}
    for sample_id in ("a", "b"):  # through the annotations' category, and through the image's label field
        problem = records[sample_id].problem
        assert problem.type == "BadLabel" and "ambiguous label crane" in problem.message and "n004" in problem.message


def test_case2_a_model_list_without_keys_names_the_indices():
    """torchvision's ImageNet categories (without timm's wnids) repeat ``crane`` as a key: no key can help."""
    classes = ClassList(("crane", "dog", "crane"), ("crane", "dog", "crane"))
    index, problem = classes.resolve("crane")
    assert index == -1 and "classes 0, 2" in problem and "data.classes" in problem
    assert classes.resolve("dog") == (1, None)
    assert "crane" not in classes.index() and classes.ambiguous() == {"crane": (0, 2)}


def test_manifest_digit_label_that_is_the_key_of_another_class_is_refused(tmp_path):
    """A class list keyed by COCO category ids (``1 person`` on line 0): the CSV label ``1`` is the key of class
    0 and the index of class 1; it was silently class 0."""
    classes = ClassList(("1", "2", "3"), ("person", "bicycle", "car"))
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.jpg").write_bytes(b"")
    (tmp_path / "m.csv").write_text("path,label\na.jpg,1\nb.jpg,bicycle\nc.jpg,3\n")
    records = {r.sample_id: r for r in read_manifest(tmp_path / "m.csv", classes)}
    assert records["a"].problem.type == "BadLabel" and "ambiguous label 1" in records["a"].problem.message
    assert records["b"].label == 1
    assert records["c"].label == 2  # '3' is only a key: there is no index 3
