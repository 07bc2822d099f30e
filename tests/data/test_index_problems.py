"""Problems found while indexing a dataset: typed by the reader that finds them (issue 9, "problems as
data"), and a configuration error only when they are systematic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.data.coco import read_coco
from pipeline.data.manifest import read_manifest
from pipeline.data.records import ClassList, Problem, SampleRecord, empty_boxes
from pipeline.data.sources import check_index_problems, mark_duplicates
from pipeline.data.voc import read_voc
from pipeline.errors import ConfigError
from tests.helpers_corpus import add_sample, noise_image

CLASSES = ClassList(("n001", "n002", "n003"), ("cat", "dog", "bird"))


def test_index_problems_stop_the_run_only_when_they_are_systematic():
    """One bad annotation is an error row; most labels unknown is a configuration error at start."""
    classes = ClassList(("n1", "n2"), ("cat", "dog"))
    label, junk = Problem("BadLabel", "unknown label fox"), Problem("BadAnnotation", "bad annotation a.xml: junk")

    def records(n_good: int, problems: list[Problem]) -> list[SampleRecord]:
        good = [SampleRecord(f"g{i}", "x.jpg", 0, empty_boxes()) for i in range(n_good)]
        return good + [SampleRecord(f"b{i}", "x.jpg", -1, empty_boxes(), problem=p) for i, p in enumerate(problems)]

    check_index_problems(records(57, [label] * 3), classes, "voc", 0.1, 50)  # 5 %: rows in errors.parquet
    check_index_problems(records(3, [label] * 2), classes, "voc", 0.1, 50)  # too few samples to judge
    with pytest.raises(ConfigError) as error:  # 17 % of 60, mostly label problems
        check_index_problems(records(50, [label] * 8 + [junk] * 2), classes, "voc", 0.1, 50)
    assert error.value.option == "data.classes" and "10 of 60" in str(error.value) and "'n1'" in str(error.value)
    with pytest.raises(ConfigError) as error:  # nothing usable at all, whatever the count
        check_index_problems(records(0, [junk] * 3), classes, "coco", 0.1, 50)
    assert error.value.option == "data.annotations"
    # the type decides, not the words: a bad annotation whose message mentions a label is not a label problem
    with pytest.raises(ConfigError) as error:
        check_index_problems(
            records(0, [Problem("BadAnnotation", "<label> tag unreadable")] * 3), classes, "voc", 0.1, 50
        )
    assert error.value.option == "data.annotations"


def test_a_problem_type_is_one_of_the_known_types():
    with pytest.raises(ValueError, match="unknown problem type"):
        Problem("Oops", "x")


def _types(records: list[SampleRecord]) -> dict[str, str | None]:
    return {r.sample_id: r.problem.type if r.problem else None for r in records}


def test_voc_reader_types_its_problems(tmp_path: Path):
    add_sample(tmp_path, "ok", noise_image(8, 8, 0), boxes=[(1, 1, 5, 5)])
    add_sample(tmp_path, "no_image", None, boxes=[(1, 1, 5, 5)], size=(8, 8))
    add_sample(tmp_path, "no_xml", noise_image(8, 8, 1), key=None)
    add_sample(tmp_path, "fox", noise_image(8, 8, 2), key="n999", boxes=[(1, 1, 5, 5)])
    add_sample(tmp_path, "broken", noise_image(8, 8, 3), xml="<annotation><object>")
    add_sample(tmp_path, "ok", noise_image(8, 8, 4), ext=".png", key=None)  # a second file with stem "ok"
    add_sample(tmp_path, "anim", None, boxes=[(1, 1, 5, 5)], size=(8, 8))
    noise_image(8, 8, 5).save(tmp_path / "images" / "anim.gif")
    records = mark_duplicates(read_voc(tmp_path / "images", tmp_path / "annotations", CLASSES))
    assert _types(records) == {
        "ok": None,
        "ok#dup1": "DuplicateId",
        "no_image": "MissingImage",
        "no_xml": "MissingAnnotation",
        "fox": "BadLabel",
        "broken": "BadAnnotation",
        "anim": "UnsupportedFormat",
    }


def test_coco_reader_types_its_problems(tmp_path: Path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.jpg").write_bytes(b"x")
    images = [
        {"id": 1, "file_name": "a.jpg"},
        {"id": 1, "file_name": "b.jpg"},
        {"id": 2, "file_name": "../c.jpg"},
        {"id": 3, "file_name": "gone.jpg"},
        {"id": 4, "file_name": "b.jpg"},
    ]
    annotations = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]},
        {"image_id": 4, "category_id": 9, "bbox": [0, 0, 2, 2]},
        {"image_id": 77, "category_id": 1, "bbox": [0, 0, 2, 2]},
    ]
    path = tmp_path / "coco.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "n001"}]})
    )
    records = read_coco(path, tmp_path, CLASSES)
    assert _types(records) == {
        "a": None,
        "1": "DuplicateId",
        "4": "BadLabel",
        "c": "PathOutsideRoot",
        "gone": "MissingImage",
        "image-id-77": "MissingImage",
    }


def test_manifest_reader_types_its_problems(tmp_path: Path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.jpg").write_bytes(b"x")
    lines = [
        "path,label,x1,y1,x2,y2",
        "a.jpg,cat,1,1,5,5",
        "b.jpg,zebra,1,1,5,5",
        "../out.jpg,cat,,,,",
        "gone.jpg,cat,,,,",
        "a.jpg,dog,,,,",
    ]
    path = tmp_path / "m.csv"
    path.write_text("\n".join(lines) + "\n")
    types = _types(read_manifest(path, CLASSES))
    assert types == {"a": "BadLabel", "b": "BadLabel", "out": "PathOutsideRoot", "gone": "MissingImage"}, types


def test_duplicate_suffix_skips_ids_the_dataset_has():
    """Case 4: ``a#dup1`` is a real sample, so the second ``a`` becomes ``a#dup2``."""
    records = [SampleRecord(i, f"{n}.jpg", 0, empty_boxes()) for n, i in enumerate(["a", "a", "a#dup1", "a"])]
    marked = mark_duplicates(records)
    assert [r.sample_id for r in marked] == ["a", "a#dup2", "a#dup1", "a#dup3"]
    assert [r.problem.type if r.problem else None for r in marked] == [None, "DuplicateId", None, "DuplicateId"]


def test_undecodable_file_name_bytes_are_written_as_backslash_escapes():
    """Case 11: the shown text of ``b"caf\\xe9"`` is ``caf\\xe9`` and encodes as UTF-8; valid text is unchanged."""
    import os

    from pipeline.data.records import printable_text

    assert printable_text(os.fsdecode(b"caf\xe9.jpg")) == "caf\\xe9.jpg"
    assert printable_text("chat_été_猫") == "chat_été_猫"
    assert printable_text("x\ud800").encode("utf-8") == b"x\\ud800"
