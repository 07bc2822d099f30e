"""A whole run with faithfulness and the sanity check: the columns of every row and of the sample, the
per-class means, summary.json, the printed summary, and the sample kept by a resume."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.errors import ConfigError
from pipeline.faithfulness.columns import SALT
from pipeline.faithfulness.sample import hash_sample
from pipeline.maps import methods
from pipeline.reports.schema import descriptions
from tests.faithfulness.test_sanity_planted import activation_sum
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process

CONFIDENCE = [f"{m}_{c}" for m in ("pred", "true") for c in ("masked_prob", "confidence_drop", "confidence_increase")]
CAUSAL = ["pred_deletion_auc", "pred_insertion_auc"]


def overrides(tmp_path, **extra):
    return base_overrides(
        tmp_path / "data",
        tmp_path / "cache",
        **{"faithfulness.sample": 10, "sanity.sample": 8, "report.rows_per_part": 8, **extra},
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("faithful")
    ids = good_dataset(tmp_path / "data", 24)
    summary = run_in_process(overrides(tmp_path), tmp_path / "run")
    return tmp_path, ids, summary


def test_confidence_columns_on_every_row_and_causal_ones_on_the_sample(finished):
    tmp_path, ids, _ = finished
    frame = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    assert len(frame) == 24
    for column in CONFIDENCE:
        assert frame[column].notna().all(), column
    assert str(frame["pred_confidence_increase"].dtype) == "boolean"
    assert ((frame["pred_confidence_drop"] >= 0) & (frame["pred_confidence_drop"] <= 1)).all()
    right = frame["correct"].astype(bool)
    assert (frame.loc[right, "true_masked_prob"] == frame.loc[right, "pred_masked_prob"]).all()  # one map, copied
    sample = hash_sample(ids, 10, SALT)
    in_sample = frame["id"].isin(sample) & ~frame["pred_empty"].astype(bool)
    for column in CAUSAL:
        assert frame.loc[in_sample, column].notna().all() and frame.loc[~in_sample, column].isna().all(), column
        assert frame[column].dropna().between(0, 1).all()
    described = descriptions(pq.read_schema(tmp_path / "run" / "samples.parquet"))
    assert all(described[c] for c in CONFIDENCE + CAUSAL)


def test_summary_classes_and_definitions(finished, capsys):
    tmp_path, _, summary = finished
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    frame = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    pred = written["faithfulness"]["confidence"]["pred"]
    assert pred["images"] == 24
    assert pred["average_drop"] == pytest.approx(frame["pred_confidence_drop"].mean(), abs=1e-6)
    assert pred["increase_in_confidence"] == pytest.approx(frame["pred_confidence_increase"].astype(float).mean())
    causal = written["faithfulness"]["deletion_insertion"]
    assert causal["images"] == frame["pred_deletion_auc"].notna().sum() > 0 and causal["steps"] == 16
    assert causal["deletion_auc"] == pytest.approx(frame["pred_deletion_auc"].mean(), abs=1e-6)
    per_class = {row["label_name"]: row for row in written["faithfulness"]["per_class"]}
    classes = pd.read_parquet(tmp_path / "run" / "classes.parquet")
    for row in classes.itertuples():
        members = frame[frame["label"] == row.label]
        assert row.pred_average_drop == pytest.approx(members["pred_confidence_drop"].mean(), abs=1e-6)
        assert per_class[row.label_name]["pred_average_drop"] == pytest.approx(row.pred_average_drop)
    check = written["sanity_check"]
    assert check["images"] == 8 and set(check["maps_depend_on_weights"]) >= {"passed", "value", "threshold"}
    assert check["seconds"] >= 0 and [s["name"] for s in check["stages"]] == ["fc", "features.2", "features.0"]
    definitions = json.loads(pq.read_schema(tmp_path / "run" / "samples.parquet").metadata[b"cam_audit.definitions"])
    assert "CausalMetric" in definitions["faithfulness_deletion_insertion"]
    assert "MPRT" in definitions["sanity_check"] and "Grad-CAM++" in definitions["faithfulness_confidence"]


def test_the_page_shows_faithfulness_and_the_sanity_check(finished):
    tmp_path, _, summary = finished
    page = (tmp_path / "run" / "review.html").read_text()
    section = page[page.index('<section id="faithfulness">') :]
    section = section[: section.index("</section>")]
    pred = summary["faithfulness"]["confidence"]["pred"]
    assert f"{pred['average_drop']:.3f}" in section and "deletion AUC" in section
    assert section.count("<tr>") == 3 + 1 + len(summary["sanity_check"]["stages"]) + 1  # headers, rows, class row
    assert "maps depend on the weights: <b>" in section
    if summary["sanity_check"]["passed"]:
        assert 'id="sanity-warning"' not in page


def test_a_resumed_run_keeps_the_sample(finished, tmp_path):
    """The parts of the first 8 rows are taken from the finished run; the resumed run audits the other 16 and
    must put the deletion / insertion AUCs on the same images (the sample is drawn from every id, not from
    those left to audit)."""
    source, ids, _ = finished
    parts = tmp_path / "run" / "parts"
    parts.mkdir(parents=True)
    first = sorted((source / "run" / "parts").glob("samples-*.parquet"))[0]
    shutil.copy(first, parts / first.name)
    shutil.copy(source / "run" / "parts" / "fingerprint.json", parts / "fingerprint.json")
    summary = run_in_process(overrides(source) + ["resume=true"], tmp_path / "run")  # the same data and options
    assert summary["images_scored_this_invocation"] == 16
    resumed = pd.read_parquet(tmp_path / "run" / "samples.parquet").set_index("id").sort_index()
    whole = pd.read_parquet(source / "run" / "samples.parquet").set_index("id").sort_index()
    pd.testing.assert_series_equal(resumed["pred_deletion_auc"], whole["pred_deletion_auc"], atol=1e-6)
    assert resumed["pred_insertion_auc"].notna().sum() == whole["pred_insertion_auc"].notna().sum() > 0


def test_a_failed_sanity_check_is_printed_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(  # cam=gradcam makes class-agnostic maps in this run
        methods.METHODS,
        "gradcam",
        methods.CamMethod("gradcam", activation_sum, needs_gradients=True, needs_head_weights=False),
    )
    good_dataset(tmp_path / "data", 8)
    summary = run_in_process(overrides(tmp_path), tmp_path / "run")
    printed = capsys.readouterr().out.strip().splitlines()
    assert summary["sanity_check"]["passed"] is False
    assert printed[0].startswith("WARNING: sanity check failed:") and "do not depend on the class" in printed[0]
    assert any(line.startswith("  sanity check (8 images") for line in printed)
    page = (tmp_path / "run" / "review.html").read_text()
    body = page[page.index("<body>") :]
    assert 'id="sanity-warning"' in body and "do not depend on the class" in body
    assert body.index('id="sanity-warning"') < body.index('id="headline"')  # shown first, before any number


def test_faithfulness_off_writes_no_columns(tmp_path):
    good_dataset(tmp_path / "data", 6)
    summary = run_in_process(
        overrides(tmp_path, **{"faithfulness.sample": 0, "faithfulness.confidence": "false", "sanity.sample": 0}),
        tmp_path / "run",
    )
    frame = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    assert not set(CONFIDENCE + CAUSAL) & set(frame.columns)
    assert summary["faithfulness"] is None and summary["sanity_check"] is None


@pytest.mark.parametrize(
    "option, value",
    [("faithfulness.blur_kernel", 10), ("faithfulness.steps", 0), ("sanity.max_weight_similarity", 2.0)],
)
def test_out_of_range_options_are_refused(tmp_path, option, value):
    good_dataset(tmp_path / "data", 2)
    with pytest.raises(ConfigError) as error:
        run_in_process(overrides(tmp_path, **{option: value}), tmp_path / "run")
    assert error.value.option == option
