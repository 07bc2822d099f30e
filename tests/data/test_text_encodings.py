"""Text files as other tools write them (issue 23, "break the data layer"): a byte-order mark, Windows line
endings, Latin-1 instead of UTF-8, a key listed twice. Each is read as meant, or refused naming the file."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.data.coco import read_coco
from pipeline.data.manifest import read_manifest
from pipeline.data.records import ClassList, read_class_file
from pipeline.errors import ConfigError
from tests.data.audit_rows import audit_rows
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process

CLASSES = ClassList(("n001", "n002", "n003"), ("cat", "dog", "bird"))


def test_classes_file_with_a_byte_order_mark_keeps_its_first_key(tmp_path):
    """A BOM (Windows Notepad) made the first key ``\\ufeffn001``: every label of class 0 was unknown."""
    path = tmp_path / "classes.txt"
    path.write_bytes(b"\xef\xbb\xbfn001 cat\r\nn002 dog\r\n\r\nn003 bird\r\n")
    classes = read_class_file(path)
    assert classes.keys == ("n001", "n002", "n003") and classes.names == ("cat", "dog", "bird")


def test_latin1_classes_file_is_a_config_error_naming_the_file_and_line(tmp_path):
    good_dataset(tmp_path / "data", 2)
    (tmp_path / "data" / "classes.txt").write_bytes(b"n001 cat\nn002 caf\xe9\nn003 bird\n")
    with pytest.raises(ConfigError) as error:
        run_in_process(base_overrides(tmp_path / "data", tmp_path / "cache"), tmp_path / "run")
    message = str(error.value)
    assert error.value.option == "data.classes" and "classes.txt is not UTF-8" in message and "line 2" in message


def test_classes_file_listing_a_key_twice_names_both_lines(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("n001 cat\n# a comment\nn002 dog\nn001 cat again\n")
    with pytest.raises(ValueError, match=r"'n001' on lines 1 and 4"):
        read_class_file(path)


def test_manifest_with_crlf_line_endings_and_a_byte_order_mark_gives_the_same_rows(tmp_path):
    root = tmp_path / "data"
    good = good_dataset(root, 3)
    lines = ["path,label,x1,y1,x2,y2"] + [f"images/{stem}.jpg,{i},3,4,19,22" for i, stem in enumerate(good)]
    (root / "unix.csv").write_text("\n".join(lines) + "\n")
    (root / "windows.csv").write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(lines) + "\r\n").encode())
    columns = ["id", "label", "n_boxes", "true_energy_in_box", "true_box_area_fraction", "pred"]
    rows = {}
    for name in ("unix", "windows"):
        run_in_process(base_overrides(root, tmp_path / "cache", manifest=root / f"{name}.csv"), tmp_path / name)
        samples, errors = audit_rows(tmp_path / name)
        assert not len(errors) and len(samples) == 3, name
        rows[name] = samples[columns].sort_index()
    pd.testing.assert_frame_equal(rows["windows"], rows["unix"])


def test_coco_file_and_jsonl_manifest_with_a_byte_order_mark_are_read(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "label": "dog"}], "annotations": [], "categories": []}
    (tmp_path / "c.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(coco).encode())
    (record,) = read_coco(tmp_path / "c.json", tmp_path, CLASSES)
    assert record.label == 1 and record.problem is None
    (tmp_path / "m.jsonl").write_bytes(b'\xef\xbb\xbf{"path": "a.jpg", "label": "dog"}\n')
    (record,) = read_manifest(tmp_path / "m.jsonl", CLASSES)
    assert record.label == 1 and record.problem is None
