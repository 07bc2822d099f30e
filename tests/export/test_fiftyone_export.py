"""``cam-audit export fiftyone`` with FiftyOne itself (the ``fiftyone`` extra: ``make test-fiftyone``; skipped
where FiftyOne is not installed, and left out of the default suite by its marker)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.export.heatmaps import read_heatmap, stored_frame_maps
from pipeline.export.label_quality import hardness, mistakenness
from pipeline.export.samples import open_run
from tests.export.helpers import tiny_run
from tests.helpers_corpus import MAIN

pytestmark = pytest.mark.fiftyone


@pytest.fixture(scope="module")
def fo(tmp_path_factory):
    """FiftyOne on a database of its own (set before the first import: FiftyOne reads it then)."""
    os.environ["FIFTYONE_DATABASE_DIR"] = str(tmp_path_factory.mktemp("fiftyone-db"))
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    fiftyone = pytest.importorskip("fiftyone")
    fiftyone.list_datasets()  # starts the database: the exports in subprocesses connect to it
    return fiftyone


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    # with probabilities.parquet: the export gives each prediction logits = log p (FiftyOne's brain reads them)
    return tiny_run(tmp_path_factory.mktemp("fo-export"), **{"report.save_probabilities": "true"})


def export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "export", "fiftyone", *map(str, args), "--no-progress"],
        cwd=MAIN,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_run_becomes_one_sample_per_image_with_its_maps_and_scores(fo, run_dir):
    done = export(run_dir, "--name", "audit")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "12 samples" in done.stdout and "12 added, 0 updated" in done.stdout
    dataset = fo.load_dataset("audit")
    frame = open_run(run_dir).frame
    assert len(dataset) == 12 and sorted(dataset.values("audit_id")) == sorted(frame["id"])
    schema = dataset.get_field_schema()
    for name, kind in (
        ("hardness", fo.FloatField),
        ("mistakenness", fo.FloatField),
        ("triage", fo.StringField),
        ("triage_reason", fo.StringField),
        ("pred_strategy", fo.IntField),
        ("pred_pointing_hit", fo.BooleanField),
        ("shortcut_suspect_class", fo.BooleanField),
        ("strategy_looks_off_object", fo.BooleanField),
    ):
        assert isinstance(schema[name], kind), name
    sample = dataset.one(fo.ViewField("audit_id") == "wide_b")
    row = frame.loc["wide_b"]
    assert sample.ground_truth.label == row["label_name"] == "bird"
    assert [d.bounding_box for d in sample.ground_truth_boxes.detections] == [
        pytest.approx([1 / 60, 1 / 30, 14 / 60, 27 / 30]),
        pytest.approx([29 / 60, 4 / 30, 29 / 60, 21 / 30]),
    ]
    assert sample.prediction.label == row["pred_name"] and sample.prediction.confidence == pytest.approx(
        row["confidence"]
    )
    assert sample.hardness == pytest.approx(row["hardness"]) and sample.triage == row["triage"]
    assert sample.triage_reason == row["triage_reason"]
    # the heatmaps: 16-bit files with the stated range, the saved maps on the stored image
    maps = {r["id"]: r for r in pq.read_table(run_dir / "maps.parquet").to_pylist()}["wide_b"]
    signed = torch.tensor(np.asarray(maps["maps"], np.float32).reshape(maps["map_shape"]))[None]
    run = open_run(run_dir)
    (expected,) = stored_frame_maps(signed, [run.placement(60, 30)], run.input_size)
    for k, field in enumerate(("pred_heatmap", "true_heatmap")):
        heatmap = sample[field]
        assert isinstance(heatmap, fo.Heatmap) and list(heatmap.range) == [0, 65535]
        loaded = heatmap.get_map()  # FiftyOne's own reader
        assert loaded.dtype == np.uint16 and loaded.shape == expected[k].shape
        np.testing.assert_allclose(loaded / 65535.0, expected[k], atol=0.5 / 65535 + 1e-6)
        np.testing.assert_array_equal(loaded, np.rint(read_heatmap(heatmap.map_path) * 65535))  # the same codes
    boxes = [s.pred_map_box for s in dataset.select_fields("pred_map_box")]
    assert all(isinstance(b, fo.Detections) for b in boxes) and sum(len(b.detections) for b in boxes) >= 10


def test_exporting_again_updates_the_samples_instead_of_adding_them(fo, run_dir):
    assert export(run_dir, "--name", "again").returncode == 0
    dataset = fo.load_dataset("again")
    tampered = dataset.one(fo.ViewField("audit_id") == "img_00001")
    truth = tampered.triage
    tampered.triage, tampered.ground_truth_boxes = "tampered", None
    tampered.tags.append("reviewed")  # a reviewer's tag: kept, the sample is updated in place
    tampered.save()
    dataset.delete_samples(dataset.match(fo.ViewField("audit_id") == "img_00002"))
    stray = fo.Sample(filepath=str(run_dir / "stray.jpg"), audit_id="not_in_this_run")
    dataset.add_sample(stray)
    done = export(run_dir, "--name", "again")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 added, 11 updated, 1 removed" in done.stdout
    dataset.reload()
    ids = dataset.values("audit_id")
    assert len(dataset) == 12 and len(set(ids)) == 12 and "not_in_this_run" not in ids
    restored = dataset.one(fo.ViewField("audit_id") == "img_00001")
    assert restored.triage == truth and len(restored.ground_truth_boxes.detections) == 1
    assert restored.tags == ["reviewed"] and restored.id == tampered.id


def test_another_run_under_the_same_name_is_refused_unless_overwritten(fo, run_dir, tmp_path):
    assert export(run_dir, "--name", "taken").returncode == 0
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)  # a copy in another folder: another run for the export
    refused = export(other, "--name", "taken")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "--overwrite" in refused.stderr
    assert export(other, "--name", "taken", "--overwrite").returncode == 0
    assert fo.load_dataset("taken").info["cam_audit_run"] == str(other.resolve())


def test_hardness_and_mistakenness_equal_fiftyones_brain_on_the_same_logits(fo):
    import fiftyone.brain as fob

    rng = np.random.default_rng(3)
    logits = np.concatenate([rng.normal(0, 1, (30, 5)), rng.normal(0, 6, (30, 5))]).astype(np.float32)
    labels = rng.integers(0, 5, len(logits))
    names = [f"c{i}" for i in range(5)]
    dataset = fo.Dataset("brain-check")
    dataset.add_samples(
        [
            fo.Sample(
                filepath=f"/nonexistent/{i}.jpg",
                index=i,
                ground_truth=fo.Classification(label=names[labels[i]]),
                prediction=fo.Classification(label=names[int(row.argmax())], logits=row.tolist()),
            )
            for i, row in enumerate(logits)
        ]
    )
    fob.compute_hardness(dataset, "prediction", hardness_field="fo_hardness")
    fob.compute_mistakenness(
        dataset, "prediction", label_field="ground_truth", mistakenness_field="fo_mistakenness", use_logits=True
    )
    order = np.argsort(dataset.values("index"))
    theirs_h = np.asarray(dataset.values("fo_hardness"))[order]
    theirs_m = np.asarray(dataset.values("fo_mistakenness"))[order]
    ours_h = hardness(torch.tensor(logits))
    ours_m = mistakenness(ours_h, torch.tensor(logits.argmax(axis=1) == labels))
    np.testing.assert_allclose(ours_h.numpy(), theirs_h, atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(ours_m.numpy(), theirs_m, atol=2e-6, rtol=1e-5)
    assert (logits.argmax(axis=1) == labels).any() and (logits.argmax(axis=1) != labels).any()


def test_the_exported_hardness_and_mistakenness_are_what_fiftyones_brain_computes_from_the_run(fo, run_dir):
    import fiftyone.brain as fob

    assert export(run_dir, "--name", "brain-run").returncode == 0
    dataset = fo.load_dataset("brain-run")
    assert all(len(p.logits) == 3 for p in dataset.values("prediction"))  # log of probabilities.parquet
    fob.compute_hardness(dataset, "prediction", hardness_field="fo_hardness")
    fob.compute_mistakenness(
        dataset, "prediction", label_field="ground_truth", mistakenness_field="fo_mistakenness", use_logits=True
    )
    ours = np.array(dataset.values("hardness")), np.array(dataset.values("mistakenness"))
    theirs = np.array(dataset.values("fo_hardness")), np.array(dataset.values("fo_mistakenness"))
    np.testing.assert_allclose(ours[0], theirs[0], atol=1e-5)  # float32 on the device against float64
    np.testing.assert_allclose(ours[1], theirs[1], atol=1e-5)
    correct = np.array(dataset.values("correct"))
    assert ((ours[1] > 0.5) == ~correct).all()
