"""summary.json and every table say what made them: times, versions, checkpoint hash, dataset fingerprint."""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os

import pyarrow.parquet as pq
import pytest
import torch

from pipeline.data.records import SampleRecord
from pipeline.jsonio import write_json_atomic
from pipeline.provenance import dataset_fingerprint
from tests.helpers_corpus import CLASSES, base_overrides, good_dataset, run_in_process, write_classes
from tests.helpers_tiny_model import TinyNet


def strict_json(text: str):
    """json.loads that refuses NaN / Infinity (what strict parsers do)."""

    def refuse(constant):
        raise ValueError(f"bare {constant} in JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """6 images, 1,000 classes (the ImageNet case for table metadata), a checkpoint file."""
    tmp = tmp_path_factory.mktemp("provenance")
    good_dataset(tmp / "data", 6)
    write_classes(tmp / "data", CLASSES + tuple((f"k{i:04d}", f"class{i}") for i in range(997)))
    checkpoint = tmp / "tiny.pt"
    torch.save(TinyNet(num_classes=1000, seed=3).state_dict(), checkpoint)
    summary = run_in_process(
        base_overrides(tmp / "data", tmp / "cache", num_classes=1000, **{"+model.checkpoint": checkpoint}), tmp / "run"
    )
    return tmp, summary, checkpoint


def test_summary_names_times_versions_checkpoint_and_data(run):
    tmp, summary, checkpoint = run
    written = strict_json((tmp / "run" / "summary.json").read_text())
    origin = written["provenance"]
    started = datetime.datetime.strptime(origin["started_utc"], "%Y-%m-%dT%H:%M:%SZ")
    finished = datetime.datetime.strptime(origin["finished_utc"], "%Y-%m-%dT%H:%M:%SZ")
    assert started <= finished and (finished - started).total_seconds() <= written["total_seconds"] + 2
    assert origin["checkpoint"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert origin["dataset"]["samples"] == 6 and len(origin["dataset"]["sha256"]) == 64
    assert origin["tool_version"] and (origin["git"] is None or len(origin["git"]["commit"]) == 40)
    assert written["setup_seconds"] + written["seconds"] == pytest.approx(written["total_seconds"], abs=0.02)


def test_every_table_carries_provenance_and_the_empty_errors_table_is_small(run):
    tmp, summary, _ = run
    origin = summary["provenance"]
    for name in ("samples", "errors", "classes"):
        metadata = pq.read_schema(tmp / "run" / f"{name}.parquet").metadata
        assert json.loads(metadata[b"cam_audit.provenance"])["dataset"] == origin["dataset"], name
    assert len(json.loads(pq.read_schema(tmp / "run" / "samples.parquet").metadata[b"cam_audit.classes"])) == 1000
    assert (
        summary["errors"] == 0 and (tmp / "run" / "errors.parquet").stat().st_size < 16_000
    )  # was 69 KB with 1,000 classes


def test_summary_json_writes_null_for_nan(tmp_path):
    write_json_atomic(tmp_path / "s.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": math.nan}})
    assert strict_json((tmp_path / "s.json").read_text()) == {"a": None, "b": [1.0, None], "c": {"d": None}}


def test_dataset_fingerprint_changes_with_a_file_or_a_label(tmp_path):
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.jpg")
        files[-1].write_bytes(b"x" * (10 + i))
    records = [SampleRecord(f"id{i}", str(p), i % 2, torch.zeros(0, 4)) for i, p in enumerate(files)]
    first = dataset_fingerprint(records)
    assert dataset_fingerprint(list(reversed(records))) == first  # order of the index does not matter
    os.utime(files[1], ns=(0, 10**9))
    assert dataset_fingerprint(records)["sha256"] != first["sha256"]
    relabelled = records[:2] + [SampleRecord("id2", str(files[2]), 1, torch.zeros(0, 4))]  # was label 0
    os.utime(files[1], ns=(0, os.stat(files[0]).st_mtime_ns))
    assert dataset_fingerprint(relabelled)["sha256"] != dataset_fingerprint(records)["sha256"]
