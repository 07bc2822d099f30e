"""Tests of the synthetic dataset: determinism, XML round trip, marker placement and frequency, boxes."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data.records import read_class_file
from pipeline.data.voc import read_voc
from pipeline.demo.synthetic import (
    SPLITS,
    SyntheticSpec,
    ensure_synthetic,
    generate_synthetic,
    is_complete,
    render_sample,
    sample_rng,
    split_plan,
)

# Small but not trivial: 12 images per class in each split, so two-instance images occur.
TINY = SyntheticSpec(n_train=96, n_audit=96)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated tiny dataset shared by the read-only tests of this module."""
    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "data", TINY)


def _files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _metadata(root: Path, split: str) -> list[dict[str, str]]:
    with open(root / split / "metadata.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_layout(dataset: Path) -> None:
    assert (dataset / "classes.txt").read_text().split() == list(TINY.class_names)
    for split, n in (("train", TINY.n_train), ("audit", TINY.n_audit)):
        assert len(list((dataset / split / "images").glob("*.jpg"))) == n
        assert len(list((dataset / split / "annotations").glob("*.xml"))) == n
        rows = _metadata(dataset, split)
        assert [row["id"] for row in rows] == [f"{split}_{i:06d}" for i in range(1, n + 1)]
    assert is_complete(dataset, TINY)
    # Atomic generation leaves no temporary sibling behind.
    assert sorted(p.name for p in dataset.parent.iterdir()) == ["data"]


def test_deterministic(dataset: Path, tmp_path: Path) -> None:
    again = generate_synthetic(tmp_path / "again", TINY)
    assert _files(again) == _files(dataset)
    other = generate_synthetic(tmp_path / "other", SyntheticSpec(n_train=8, n_audit=8, seed=1))
    assert (other / "train/images/train_000001.jpg").read_bytes() != (
        dataset / "train/images/train_000001.jpg"
    ).read_bytes()


def test_xml_round_trip_gives_drawn_boxes_and_labels(dataset: Path) -> None:
    classes = read_class_file(dataset / "classes.txt")
    for split in SPLITS:
        labels, flags = split_plan(TINY, split)
        records = read_voc(dataset / split / "images", dataset / split / "annotations", classes)
        assert len(records) == len(labels)
        for index, record in enumerate(records):
            assert record.problem is None
            assert record.sample_id == f"{split}_{index + 1:06d}"
            assert record.label == labels[index]
            drawn = render_sample(TINY, int(labels[index]), bool(flags[index]), sample_rng(TINY, split, index))
            np.testing.assert_array_equal(record.boxes, np.asarray(drawn.boxes, dtype=np.float32).reshape(-1, 4))
            height, width = drawn.image.shape[:2]
            assert record.annotated_size == (width, height)


def test_marker_keeps_its_margin_from_every_box(dataset: Path) -> None:
    classes = read_class_file(dataset / "classes.txt")
    for split in SPLITS:
        records = {
            r.sample_id: r for r in read_voc(dataset / split / "images", dataset / split / "annotations", classes)
        }
        for row in _metadata(dataset, split):
            if row["marker_present"] != "1":
                assert row["marker_x1"] == ""
                continue
            mx1, my1, mx2, my2 = (int(row[k]) for k in ("marker_x1", "marker_y1", "marker_x2", "marker_y2"))
            assert mx2 - mx1 == my2 - my1 == TINY.marker_side
            assert 0 < mx1 and mx2 < int(row["width"]) and 0 < my1 and my2 < int(row["height"])
            for x1, y1, x2, y2 in records[row["id"]].boxes.tolist():
                gap = max(x1 - mx2, mx1 - x2, y1 - my2, my1 - y2)  # > 0: separated along some axis
                assert gap >= TINY.marker_margin


def test_marker_frequency_per_split(dataset: Path) -> None:
    marker_class = TINY.marker_class
    counts: dict[tuple[str, str], list[int]] = {}
    for split in SPLITS:
        for row in _metadata(dataset, split):
            counts.setdefault((split, row["label"]), []).append(int(row["marker_present"]))
    for name in TINY.class_names:
        train, audit = counts[("train", name)], counts[("audit", name)]
        expected = round(TINY.marker_prob_train * len(train)) if name == marker_class else 0
        assert sum(train) == expected
        assert sum(audit) == round(TINY.marker_prob_audit * len(audit))
    assert sum(counts[("train", marker_class)]) > 0


def test_two_instance_images_exist(dataset: Path) -> None:
    classes = read_class_file(dataset / "classes.txt")
    records = read_voc(dataset / "train/images", dataset / "train/annotations", classes)
    doubles = [r for r in records if len(r.boxes) == 2]
    assert doubles
    rows = {row["id"]: row for row in _metadata(dataset, "train")}
    assert all(rows[r.sample_id]["n_instances"] == "2" for r in doubles)
    for record in doubles:  # the two instances never overlap
        (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = record.boxes.tolist()
        assert max(ax1, bx1) >= min(ax2, bx2) or max(ay1, by1) >= min(ay2, by2)


def test_boxes_are_tight_by_construction() -> None:
    for index in range(40):
        drawn = render_sample(TINY, index % len(TINY.class_names), index % 2 == 0, sample_rng(TINY, "audit", index))
        assert len(drawn.boxes) == len(drawn.masks)
        for (x1, y1, x2, y2), mask in zip(drawn.boxes, drawn.masks):
            inside = np.zeros_like(mask, dtype=bool)
            inside[y1:y2, x1:x2] = True
            assert not mask[~inside].any()  # nothing drawn outside the box
            # ... and every edge row/column of the box holds drawn pixels.
            assert mask[y1, x1:x2].any() and mask[y2 - 1, x1:x2].any()
            assert mask[y1:y2, x1].any() and mask[y1:y2, x2 - 1].any()


def test_object_colour_stays_in_box_in_the_jpeg(tmp_path: Path) -> None:
    """On a flat background, pixels that differ clearly from it lie in a box (or on the marker)."""
    spec = SyntheticSpec(n_train=8, n_audit=24, clutter=False)
    root = generate_synthetic(tmp_path / "clean", spec)
    classes = read_class_file(root / "classes.txt")
    rows = {row["id"]: row for row in _metadata(root, "audit")}
    for record in read_voc(root / "audit/images", root / "audit/annotations", classes):
        image = cv2.imread(record.image_path)[..., ::-1].astype(np.int32)
        background = np.median(image[[0, -1]].reshape(-1, 3), axis=0)
        different = np.abs(image - background).sum(axis=2) > 45
        allowed = np.zeros(different.shape, dtype=bool)
        # JPEG blurs edges by a pixel or two, so the box is widened by 2 px for this check.
        for x1, y1, x2, y2 in record.boxes.astype(int).tolist():
            allowed[max(0, y1 - 2) : y2 + 2, max(0, x1 - 2) : x2 + 2] = True
        row = rows[record.sample_id]
        if row["marker_present"] == "1":
            mx1, my1, mx2, my2 = (int(row[k]) for k in ("marker_x1", "marker_y1", "marker_x2", "marker_y2"))
            allowed[my1 - 2 : my2 + 2, mx1 - 2 : mx2 + 2] = True
        assert not (different & ~allowed).any(), record.sample_id
        for x1, y1, x2, y2 in record.boxes.astype(int).tolist():
            assert different[y1:y2, x1:x2].mean() > 0.2  # the object is really there


def test_ensure_synthetic_reuses_complete_and_replaces_partial(tmp_path: Path) -> None:
    spec = SyntheticSpec(n_train=8, n_audit=8)
    root = ensure_synthetic(tmp_path, spec)
    assert root == tmp_path / f"synthetic-{spec.short_hash()}"
    stamp = (root / "spec.json").stat().st_mtime_ns
    assert ensure_synthetic(tmp_path, spec) == root
    assert (root / "spec.json").stat().st_mtime_ns == stamp  # reused, not regenerated
    (root / "spec.json").unlink()  # looks like an interrupted generation
    (root / "train/images/train_000001.jpg").unlink()
    assert ensure_synthetic(tmp_path, spec) == root
    assert is_complete(root, spec) and (root / "train/images/train_000001.jpg").is_file()
    assert SyntheticSpec(seed=1).short_hash() != SyntheticSpec().short_hash()


def test_spec_rejects_bad_classes() -> None:
    with pytest.raises(ValueError):
        SyntheticSpec(class_names=("disc", "blob"))
    with pytest.raises(ValueError):
        SyntheticSpec(marker_class="hexagon")
