"""Bad samples never stop a run: every file of the bad-input corpus either gives a correct row or one
errors.parquet row, the summary says how many were skipped and why, and overlays get safe names.

The corpus (``bad_input_corpus`` in ``tests/conftest.py``) is audited once, in-process, with DataLoader
workers and every overlay, by the tiny seeded CNN at a 32-pixel input on the CPU.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.reports.overlays import safe_file_stem
from tests.helpers_corpus import SAFE_NAME, base_overrides, read_summary, run_in_process


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, bad_input_corpus):
    """One audit of the whole corpus (with DataLoader workers and every overlay), its stdout captured."""
    tmp = tmp_path_factory.mktemp("corpus")
    root, expected = bad_input_corpus
    run_dir = tmp / "run"
    overrides = base_overrides(
        root, tmp / "cache", **{"runtime.num_workers": 2, "report.overlays": "all", "runtime.max_error_fraction": 1.0}
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = run_in_process(overrides, run_dir)
    samples = pd.read_parquet(run_dir / "samples.parquet")
    errors = pd.read_parquet(run_dir / "errors.parquet")
    return {
        "root": root,
        "run_dir": run_dir,
        "expected": expected,
        "summary": summary,
        "printed": printed.getvalue(),
        "samples": samples.set_index("id", drop=False),
        "errors": errors.set_index("id", drop=False),
    }


def test_every_sample_is_a_row_or_an_error_exactly_once(corpus_run):
    expected, samples, errors = corpus_run["expected"], corpus_run["samples"], corpus_run["errors"]
    assert not samples.index.duplicated().any() and not errors.index.duplicated().any()
    assert set(samples.index).isdisjoint(errors.index)
    assert sorted(samples.index) == sorted(k for k, v in expected.items() if v["ok"])
    assert sorted(errors.index) == sorted(k for k, v in expected.items() if not v["ok"])


def test_decodable_oddities_give_correct_rows(corpus_run):
    samples, root = corpus_run["samples"], corpus_run["root"]
    for sample_id, want in corpus_run["expected"].items():
        if not want["ok"]:
            continue
        row = samples.loc[sample_id]
        assert (row.width, row.height) == (want["width"], want["height"]), sample_id
        assert row.label == want["label"] and row.label_name == "cat", sample_id
        assert (row.n_boxes, row.n_boxes_dropped) == (want["n_boxes"], want["dropped"]), sample_id
        assert Path(row.path).parent == (root / "images").resolve() and Path(row.path).stem == sample_id
        assert 0.0 <= row.confidence <= 1.0 and row.pred_name in ("cat", "dog", "bird"), sample_id
        if want["n_boxes"] == 0:  # no box left: flagged, and box scores are NaN (not 0)
            assert row.no_box_in_input and np.isnan(row.true_energy_in_box) and np.isnan(row.pred_energy_in_box), (
                sample_id
            )
        else:
            assert not row.no_box_in_input and 0.0 <= row.true_energy_in_box <= 1.0, sample_id


def test_bad_samples_become_error_rows_with_stage_type_and_message(corpus_run):
    errors, root = corpus_run["errors"], corpus_run["root"]
    assert list(errors.columns) == ["id", "path", "stage", "error_type", "message"]
    for sample_id, want in corpus_run["expected"].items():
        if want["ok"]:
            continue
        row = errors.loc[sample_id]
        assert (row.stage, row.error_type) == (want["stage"], want["error_type"]), (
            sample_id,
            row.stage,
            row.error_type,
            row.message,
        )
        assert want["text"] in row.message, (sample_id, row.message)
        if want["has_path"]:
            assert Path(row.path).parent == (root / "images").resolve(), sample_id
        else:
            assert row.path == "", sample_id


def test_summary_states_how_many_were_skipped_and_why(corpus_run):
    expected, errors, printed = corpus_run["expected"], corpus_run["errors"], corpus_run["printed"]
    summary = read_summary(corpus_run["run_dir"])
    n_ok = sum(v["ok"] for v in expected.values())
    assert summary["images"] == n_ok and summary["errors"] == len(expected) - n_ok
    counts = errors.groupby(["stage", "error_type"]).size()
    assert {(e["stage"], e["error_type"]): e["n"] for e in summary["errors_by_stage"]} == counts.to_dict()
    assert (
        counts[("index", "BadAnnotation")] == 1
        and counts[("index", "BadLabel")] == 1
        and counts[("decode", "UnidentifiedImageError")] == 2
    )
    assert f"{summary['errors']} skipped" in printed
    for (stage, error_type), n in counts.items():
        assert f"skipped at {stage}: {n} x {error_type}" in printed


def test_overlays_use_safe_names_inside_the_run_folder(corpus_run):
    run_dir = corpus_run["run_dir"]
    thumbnails = run_dir / "overlays" / "thumbs"  # one per overlay, same name
    written = [p for p in run_dir.rglob("*.jpg") if p.parent != thumbnails]
    assert written and all(p.parent == run_dir / "overlays" and SAFE_NAME.match(p.name) for p in written)
    assert sorted(p.name for p in thumbnails.iterdir()) == sorted(p.name for p in written)
    assert len(written) == len(corpus_run["samples"])  # report.overlays=all: one per scored image
    assert (run_dir / "overlays" / f"{safe_file_stem('chat_été_猫')}.jpg").is_file()
