"""Issue 23, case 1: the ``<key>_`` file-name prefix of ImageNet (``n01440764_tench.JPEG``) matched readable
class names too and won over the XML, so ``cat_and_dog_001.jpg`` annotated ``dog`` was audited as a cat. The
prefix now only picks among the annotation's classes, or labels an image whose XML has no object; a prefix
that names a class none of the objects has is a ``BadLabel`` row naming both."""

from __future__ import annotations

import pytest

from pipeline.data.records import ClassList
from pipeline.data.voc import read_voc
from tests.data.audit_rows import audit_rows, error_row
from tests.helpers_corpus import add_sample, base_overrides, good_dataset, noise_image, run_in_process, voc_xml

CLASSES = ClassList(("n001", "n002", "n003"), ("cat", "dog", "bird"))


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("file_name_label")
    root = tmp / "data"
    good = good_dataset(root, 3)  # classes n001 cat, n002 dog, n003 bird
    add_sample(root, "cat_and_dog_001", noise_image(24, 24, 1), key="n002", boxes=[(3, 3, 20, 20)])  # named cat
    add_sample(root, "cat_001", noise_image(24, 24, 2), key="n001", boxes=[(3, 3, 20, 20)])  # name and XML agree
    add_sample(root, "dog_002", noise_image(24, 24, 3), key="n002", boxes=[])  # no object: the name labels it
    run_dir = tmp / "run"
    run_in_process(base_overrides(root, tmp / "cache", **{"runtime.max_error_fraction": 1.0}), run_dir)
    samples, errors = audit_rows(run_dir)
    return {"good": good, "samples": samples, "errors": errors}


def test_case1_file_name_prefix_never_overrides_the_annotation(audit):
    samples, errors = audit["samples"], audit["errors"]
    error = error_row(errors, "cat_and_dog_001")
    assert (error.stage, error.error_type) == ("index", "BadLabel")
    assert "'cat'" in error.message and "cat (n001)" in error.message and "dog (n002)" in error.message
    assert "cat_and_dog_001" not in samples.index
    assert samples.loc["cat_001", "label"] == 0
    assert samples.loc["dog_002", "label"] == 1 and samples.loc["dog_002", "n_boxes"] == 0
    assert set(audit["good"]) <= set(samples.index)


def test_prefix_picks_among_objects_of_several_classes(tmp_path):
    """An image with a cat and a dog whose name says dog is a dog, with the dog's box; without a name that
    says which, it cannot be decided."""
    pair = [("n001", (1, 1, 4, 4)), ("n002", (5, 5, 8, 8))]
    add_sample(tmp_path, "n002_pair", noise_image(8, 8, 0), xml=voc_xml("n002_pair.jpg", (8, 8), pair))
    add_sample(tmp_path, "pair", noise_image(8, 8, 1), xml=voc_xml("pair.jpg", (8, 8), pair))
    records = {r.sample_id: r for r in read_voc(tmp_path / "images", tmp_path / "annotations", CLASSES)}
    assert records["n002_pair"].label == 1 and records["n002_pair"].boxes.tolist() == [[4, 4, 8, 8]]
    assert records["pair"].problem.type == "BadLabel"
