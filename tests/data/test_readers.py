"""COCO JSON and tabular manifest readers.

The real fixture (``/work/shared/data/imagenet-sample``: 42 ImageNet photos, ILSVRC XML boxes) is read
with ``read_voc``, rewritten as COCO JSON and as CSV / Parquet / JSONL manifests, and read back: every
reader must give the same ids, labels and boxes (exact float equality: all three formats hold the same
integer pixel edges). Small hand-made files cover the reported problems.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data.coco import coco_box, read_coco
from pipeline.data.manifest import read_manifest, unique_ids
from pipeline.data.records import ClassList, SampleRecord, read_class_file
from pipeline.data.voc import read_voc
from tests.helpers_corpus import REAL_PHOTO_SAMPLE

SAMPLE = REAL_PHOTO_SAMPLE
needs_sample = pytest.mark.real_photos

# a tiny class list for the hand-made cases: keys are what files use, names what people read
SMALL = ClassList(("n001", "n002", "n003"), ("cat", "dog", "bird"))


# --------------------------------------------------------------------------------------------------
# Real data: XML -> COCO / manifests -> the same records
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> tuple[ClassList, list[SampleRecord]]:
    classes = read_class_file(SAMPLE / "classes.txt")
    records = read_voc(SAMPLE / "images", SAMPLE / "annotations", classes)
    assert len(records) == 42 and all(r.problem is None for r in records)
    return classes, records


def _file_names() -> dict[str, str]:
    """sample id (file stem) -> image file name in the fixture."""
    return {p.stem: p.name for p in (SAMPLE / "images").iterdir()}


def _assert_same(records: list[SampleRecord], expected: list[SampleRecord]) -> None:
    """Same ids (sorted), labels and boxes (exact, float32 [N, 4]); every record good and on disk."""
    assert len(records) == len(expected) == 42
    assert [r.sample_id for r in records] == [e.sample_id for e in expected]
    for got, want in zip(records, expected):
        assert got.problem is None, (got.sample_id, got.problem)
        assert got.label == want.label, got.sample_id
        assert got.boxes.dtype == np.float32 and got.boxes.shape == want.boxes.shape, got.sample_id
        assert np.array_equal(got.boxes, want.boxes), got.sample_id
        assert Path(got.image_path).is_file()
    by_id = {r.sample_id: r for r in records}
    # multi-box images keep every box
    assert len(by_id["n01818515_macaw"].boxes) == 2
    assert len(by_id["n02437616_llama"].boxes) == 2
    assert len(by_id["n02007558_flamingo"].boxes) == 3


def _link_images(tmp_path: Path) -> None:
    """Make ``tmp_path/images`` point at the fixture's images, so manifest paths can be relative."""
    (tmp_path / "images").symlink_to(SAMPLE / "images", target_is_directory=True)


@needs_sample
def test_coco_round_trip_matches_voc(tmp_path: Path, sample) -> None:
    classes, expected = sample
    names = _file_names()
    images, annotations = [], []
    for number, record in enumerate(expected, start=1):
        width, height = record.annotated_size
        images.append({"id": number, "file_name": names[record.sample_id], "width": width, "height": height})
        for x1, y1, x2, y2 in record.boxes.tolist():
            bbox = [x1, y1, x2 - x1, y2 - y1]  # COCO [x, y, w, h], pixel edges
            annotations.append(
                {"id": len(annotations) + 1, "image_id": number, "category_id": record.label + 1, "bbox": bbox}
            )
    categories = [{"id": i + 1, "name": key} for i, key in enumerate(classes.keys)]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))

    records = read_coco(path, SAMPLE / "images", classes)
    _assert_same(records, expected)
    assert [r.annotated_size for r in records] == [e.annotated_size for e in expected]


@needs_sample
def test_manifest_csv_list_column_matches_voc(tmp_path: Path, sample) -> None:
    classes, expected = sample
    _link_images(tmp_path)
    names = _file_names()
    rows = [
        {"path": f"images/{names[r.sample_id]}", "label": classes.keys[r.label], "boxes": json.dumps(r.boxes.tolist())}
        for r in reversed(expected)  # the reader sorts by id, whatever the row order
    ]
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    _assert_same(read_manifest(path, classes), expected)


@needs_sample
def test_manifest_parquet_one_row_per_box_matches_voc(tmp_path: Path, sample) -> None:
    classes, expected = sample
    _link_images(tmp_path)
    names = _file_names()
    rows = []
    for record in expected:
        for x1, y1, x2, y2 in record.boxes.tolist():
            rows.append(
                {
                    "path": f"images/{names[record.sample_id]}",
                    "label": record.label,
                    "x1": x1,
                    "y1": y1,
                    "x2": x2,
                    "y2": y2,
                }
            )
    path = tmp_path / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(path)  # label by integer output index
    _assert_same(read_manifest(path, classes), expected)


@needs_sample
def test_manifest_jsonl_matches_voc(tmp_path: Path, sample) -> None:
    classes, expected = sample
    _link_images(tmp_path)
    names = _file_names()
    path = tmp_path / "manifest.jsonl"
    with path.open("w") as handle:
        for record in expected:
            row = {
                "path": f"images/{names[record.sample_id]}",
                "label": classes.names[record.label],
                "boxes": record.boxes.tolist(),
            }
            handle.write(json.dumps(row) + "\n")  # label by readable class name
    _assert_same(read_manifest(path, classes), expected)


# --------------------------------------------------------------------------------------------------
# COCO: hand-made cases
# --------------------------------------------------------------------------------------------------


def _touch(folder: Path, *names: str) -> None:
    """Empty image files: the readers only check existence, decoding comes later."""
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")


def _write_coco(path: Path, images: list, annotations: list, categories: list | None = None) -> Path:
    if categories is None:
        categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "n002"}, {"id": 7, "name": "unicorn"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _ann(image_id: int, category_id: int, bbox: list) -> dict:
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox}


def _by_id(records: list[SampleRecord]) -> dict[str, SampleRecord]:
    return {r.sample_id: r for r in records}


def test_coco_bbox_is_converted_to_pixel_edges(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg")
    path = _write_coco(
        tmp_path / "c.json",
        [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
        [_ann(1, 1, [10, 20, 30, 40])],
    )
    (record,) = read_coco(path, tmp_path, SMALL)
    assert record.problem is None
    assert record.sample_id == "a" and record.label == 0 and record.annotated_size == (100, 80)
    assert record.boxes.dtype == np.float32
    assert record.boxes.tolist() == [[10.0, 20.0, 40.0, 60.0]]
    assert record.image_path == str((tmp_path / "a.jpg").resolve())
    assert coco_box([1.5, 2, 0, 3]) == ((1.5, 2.0, 1.5, 5.0), None)
    assert coco_box([1, 2, -3, 4])[0] is None and coco_box([1, 2, 3])[0] is None


def test_coco_labels_shared_explicit_and_disagreeing(tmp_path: Path) -> None:
    _touch(tmp_path, "same.jpg", "mixed.jpg", "named.jpg", "byid.jpg", "bare.jpg", "onlylabel.jpg")
    images = [
        {"id": 1, "file_name": "same.jpg"},
        {"id": 2, "file_name": "mixed.jpg"},
        {"id": 3, "file_name": "named.jpg", "label": "n002"},  # category name, boxes of that class only
        {"id": 4, "file_name": "byid.jpg", "label": 1},  # category id
        {"id": 5, "file_name": "bare.jpg"},  # no annotation, no label
        {"id": 6, "file_name": "onlylabel.jpg", "label": "cat"},  # image-level label, no box
    ]
    annotations = [
        _ann(1, 1, [0, 0, 5, 5]),
        _ann(1, 1, [1, 1, 2, 2]),
        _ann(2, 1, [0, 0, 5, 5]),
        _ann(2, 2, [1, 1, 2, 2]),
        _ann(3, 1, [0, 0, 5, 5]),
        _ann(3, 2, [1, 1, 2, 2]),
        _ann(3, 2, [3, 3, 1, 1]),
        _ann(4, 1, [0, 0, 5, 5]),
        _ann(4, 2, [1, 1, 2, 2]),
    ]
    records = _by_id(read_coco(_write_coco(tmp_path / "c.json", images, annotations), tmp_path, SMALL))
    assert records["same"].label == 0 and records["same"].boxes.tolist() == [[0, 0, 5, 5], [1, 1, 3, 3]]
    assert records["mixed"].label == -1 and "disagree" in records["mixed"].problem.message
    assert records["named"].problem is None and records["named"].label == 1
    assert records["named"].boxes.tolist() == [[1, 1, 3, 3], [3, 3, 4, 4]]
    assert (
        records["byid"].problem is None
        and records["byid"].label == 0
        and records["byid"].boxes.tolist() == [[0, 0, 5, 5]]
    )
    assert "no annotations" in records["bare"].problem.message
    assert records["onlylabel"].problem is None and records["onlylabel"].boxes.shape == (0, 4)


def test_coco_custom_label_field(tmp_path: Path) -> None:
    _touch(tmp_path, "m.jpg")
    images = [{"id": 1, "file_name": "m.jpg", "true_class": "dog", "label": "ignored-here"}]
    annotations = [_ann(1, 1, [0, 0, 5, 5]), _ann(1, 2, [1, 1, 2, 2])]
    (record,) = read_coco(
        _write_coco(tmp_path / "c.json", images, annotations), tmp_path, SMALL, label_field="true_class"
    )
    assert record.problem is None and record.label == 1 and record.boxes.tolist() == [[1, 1, 3, 3]]


def _assert_unusable_records_are_alike(records: list[SampleRecord]) -> None:
    """Every record with a problem is built the one way (``unusable_record``): no label, no box."""
    unusable = [r for r in records if r.problem is not None]
    assert unusable
    for record in unusable:
        assert record.label == -1 and record.boxes.shape == (0, 4) and record.boxes.dtype == np.float32, record
        assert record.problem.type and record.problem.message


def test_coco_unknown_category_and_missing_file(tmp_path: Path) -> None:
    _touch(tmp_path, "u.jpg", "v.jpg", "w.jpg")
    images = [
        {"id": 1, "file_name": "u.jpg"},  # category 7 is not a class of the model
        {"id": 2, "file_name": "v.jpg"},  # category 99 is not in the file
        {"id": 3, "file_name": "w.jpg", "label": "zebra"},
        {"id": 4, "file_name": "gone.jpg"},
    ]
    annotations = [_ann(1, 7, [0, 0, 1, 1]), _ann(2, 99, [0, 0, 1, 1]), _ann(4, 1, [0, 0, 1, 1])]
    records = _by_id(read_coco(_write_coco(tmp_path / "c.json", images, annotations), tmp_path, SMALL))
    assert "unknown category unicorn" in records["u"].problem.message
    assert "unknown category id 99" in records["v"].problem.message
    assert "unknown category zebra" in records["w"].problem.message
    assert "has no image" in records["gone"].problem.message and records["gone"].image_path == ""
    assert all(r.label == -1 and r.boxes.shape == (0, 4) for r in records.values())


def test_coco_paths_outside_the_image_dir_are_rejected(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _touch(tmp_path, "secret.jpg", "root/sub/ok.jpg")
    images = [
        {"id": 1, "file_name": "../secret.jpg"},
        {"id": 2, "file_name": str(tmp_path / "secret.jpg")},
        {"id": 3, "file_name": "sub/ok.jpg"},
        {"id": 4, "file_name": str(root / "sub" / "ok.jpg")},  # absolute but inside: fine
    ]
    annotations = [_ann(i, 1, [0, 0, 1, 1]) for i in (1, 2, 3, 4)]
    path = _write_coco(tmp_path / "c.json", images, annotations)
    records = read_coco(path, root, SMALL)
    problems = {r.sample_id: r.problem and r.problem.message for r in records}
    # stems clash (secret x2, ok x2): those entries fall back to their COCO id
    assert set(problems) == {"1", "2", "3", "4"}
    assert "outside" in problems["1"] and "outside" in problems["2"]
    assert problems["3"] is None
    assert problems["4"] is not None and "duplicate file name" in problems["4"]  # same file as id 3
    _assert_unusable_records_are_alike(records)

    allowed = _by_id(read_coco(path, root, SMALL, allow_outside_root=True))
    assert allowed["1"].problem is None and allowed["1"].image_path == str((tmp_path / "secret.jpg").resolve())


def test_coco_duplicates_and_orphans(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg", "b.jpg", "a2/a.jpg")
    images = [
        {"id": 1, "file_name": "a.jpg"},
        {"id": 1, "file_name": "b.jpg"},  # repeated id
        {"id": 2, "file_name": "a.jpg"},  # repeated file
    ]
    annotations = [_ann(1, 1, [0, 0, 1, 1]), _ann(2, 1, [0, 0, 1, 1]), _ann(5, 1, [0, 0, 1, 1]), {"category_id": 1}]
    records = read_coco(_write_coco(tmp_path / "c.json", images, annotations), tmp_path, SMALL)
    assert len({r.sample_id for r in records}) == len(records) == 5
    problems = {r.sample_id: r.problem and r.problem.message for r in records}
    assert problems["1"] is None  # first a.jpg: stems clash, so ids fall back to the COCO id
    assert "duplicate image id" in problems["b"]
    assert "duplicate file name" in problems["2"]
    assert "image id 5" in problems["image-id-5"]
    assert "no usable image_id" in problems["annotations-3"]
    _assert_unusable_records_are_alike(records)


def test_coco_malformed_file_raises_value_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [')
    with pytest.raises(ValueError, match="broken.json") as caught:
        read_coco(bad, tmp_path, SMALL)
    assert "\n" not in str(caught.value)
    not_coco = tmp_path / "list.json"
    not_coco.write_text("[1, 2]")
    with pytest.raises(ValueError, match="list.json"):
        read_coco(not_coco, tmp_path, SMALL)


# --------------------------------------------------------------------------------------------------
# Manifest: hand-made cases
# --------------------------------------------------------------------------------------------------


def _csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def test_manifest_label_by_index_and_by_name(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg")
    path = _csv(
        tmp_path / "m.csv",
        """
path,label,boxes
a.jpg,2,"[[1, 2, 3, 4]]"
b.jpg,dog,"[]"
c.jpg,n001,
d.jpg,7,"[[0, 0, 1, 1]]"
e.jpg,zebra,
f.jpg,,
""",
    )
    records = _by_id(read_manifest(path, SMALL))
    assert records["a"].label == 2 and records["a"].boxes.tolist() == [[1, 2, 3, 4]]
    assert records["b"].label == 1 and records["b"].boxes.shape == (0, 4)
    assert records["c"].label == 0 and records["c"].problem is None
    assert "out of range" in records["d"].problem.message and records["d"].label == -1
    assert "unknown label zebra" in records["e"].problem.message
    assert "no label" in records["f"].problem.message


def test_manifest_one_row_per_box_grouping(tmp_path: Path) -> None:
    _touch(tmp_path, "img/a.jpg", "img/b.jpg", "img/c.jpg", "img/d.jpg")
    path = _csv(
        tmp_path / "m.csv",
        """
path,label,x1,y1,x2,y2
img/a.jpg,cat,0,0,10,10
img/b.jpg,dog,,,,
./img/a.jpg,cat,5.5,6,20,30
img/c.jpg,cat,1,1,2,2
img/c.jpg,dog,3,3,4,4
img/d.jpg,cat,1,,2,2
""",
    )
    records = _by_id(read_manifest(path, SMALL))
    assert set(records) == {"a", "b", "c", "d"}
    assert records["a"].problem is None and records["a"].boxes.tolist() == [[0, 0, 10, 10], [5.5, 6, 20, 30]]
    assert records["b"].problem is None and records["b"].label == 1 and records["b"].boxes.shape == (0, 4)
    assert "disagree on the label" in records["c"].problem.message and records["c"].label == -1
    assert "incomplete box" in records["d"].problem.message


def test_manifest_paths_ids_and_missing_files(tmp_path: Path) -> None:
    _touch(tmp_path, "secret.jpg", "data/x/cat.jpg", "data/y/cat.jpg", "data/z.jpg")
    rows = [
        {"path": "x/cat.jpg", "label": 0},
        {"path": "y/cat.jpg", "label": 0},  # same stem: made unique
        {"path": "../secret.jpg", "label": 0},
        {"path": str(tmp_path / "data" / "z.jpg"), "label": 1},  # absolute inside the folder: fine
        {"path": "nothere.jpg", "label": 1},
    ]
    path = tmp_path / "data" / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = read_manifest(path, SMALL)
    problems = {r.sample_id: r.problem and r.problem.message for r in records}
    assert problems["cat"] is None and problems["cat-2"] is None and problems["z"] is None
    assert "outside" in problems["secret"]
    assert "has no image" in problems["nothere"]
    _assert_unusable_records_are_alike(records)
    assert _by_id(read_manifest(path, SMALL, allow_outside_root=True))["secret"].problem is None


def test_manifest_explicit_ids_and_parquet_list_column(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg", "b.jpg")
    frame = pd.DataFrame(
        {
            "path": ["a.jpg", "b.jpg"],
            "label": ["cat", "bird"],
            "id": ["007", "008"],
            "boxes": [[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]], []],
        }
    )
    frame.to_parquet(tmp_path / "m.parquet")
    records = _by_id(read_manifest(tmp_path / "m.parquet", SMALL))
    assert records["007"].boxes.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]] and records["007"].label == 0
    assert records["008"].boxes.shape == (0, 4) and records["008"].label == 2


def test_manifest_missing_column_and_bad_file_raise(tmp_path: Path) -> None:
    path = _csv(tmp_path / "nolabel.csv", "path,boxes\na.jpg,[]")
    with pytest.raises(ValueError, match=r"nolabel\.csv.*'label'"):
        read_manifest(path, SMALL)
    path = _csv(tmp_path / "half.csv", "path,label,x1,y1,x2\na.jpg,cat,1,2,3")
    with pytest.raises(ValueError, match=r"half\.csv.*'y2'"):
        read_manifest(path, SMALL)
    with pytest.raises(ValueError, match="unknown suffix"):
        read_manifest(_csv(tmp_path / "m.txt", "path,label"), SMALL)
    with pytest.raises(ValueError, match=r"broken\.parquet"):
        read_manifest(_csv(tmp_path / "broken.parquet", "not parquet"), SMALL)


def test_unique_ids_never_takes_a_requested_id() -> None:
    assert unique_ids(["cat", "cat", "cat-2", "dog"]) == ["cat", "cat-3", "cat-2", "dog"]
