"""End to end on a slice of the built-in default: synthetic data, the default CNN, the planted shortcut.

The default model is trained once on first use and cached under outputs/.cache (as `make audit` does),
so the first run of this file on a fresh clone includes generation and training.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.reports.overlays import safe_file_stem
from pipeline.reports.triage import NO_LOOK_NEEDED
from pipeline.run import run_audit
from tests.helpers_corpus import DEFAULT_CACHE as CACHE
from tests.helpers_corpus import MAIN as ROOT
from tests.helpers_corpus import base_overrides, good_dataset

LIMIT = 400
# Small parts so that the slice spans several: a part is written once whole batches reach ROWS_PER_PART
# rows, the rest at the end (400 rows in batches of 64 -> 128, 128, 128, 16).
ROWS_PER_PART, BATCH_SIZE = 128, 64
# The first run on a fresh clone generates the data and trains the model inside the fixture (a few minutes
# on 2 cores): allow for it beyond the suite's default per-test timeout. Every test of the default model is
# slow for that reason (make test-all); the command-line test also runs on the tiny model in the fast suite.
pytestmark = pytest.mark.timeout(1800)
DEFAULT_MODEL = pytest.mark.slow


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, compose_config):
    run_dir = tmp_path_factory.mktemp("default") / "run"
    cfg = compose_config(
        [
            f"data.limit={LIMIT}",
            f"cache_dir={CACHE}",
            "runtime.progress=false",
            f"report.rows_per_part={ROWS_PER_PART}",
            f"runtime.batch_size={BATCH_SIZE}",
        ]
    )
    summary = run_audit(cfg, run_dir)
    return run_dir, pd.read_parquet(run_dir / "samples.parquet"), summary


@DEFAULT_MODEL
def test_rows_schema_and_metadata(default_run):
    run_dir, frame, summary = default_run
    assert len(frame) == LIMIT and frame["id"].is_unique
    schema = pq.read_schema(run_dir / "samples.parquet")
    for column in (
        "id",
        "path",
        "label",
        "label_name",
        "pred",
        "pred_name",
        "confidence",
        "prob_true",
        "correct",
        "marker_present",
        "no_box_in_input",
    ):
        assert column in schema.names, column
    for map_name in ("pred", "true"):
        for score in (
            "energy_in_box",
            "box_area_fraction",
            "energy_lift",
            "pointing_hit",
            "iou_tau015",
            "localised_tau015",
            "peak_row",
            "peak_col",
            "map_max",
            "empty",
        ):
            assert f"{map_name}_{score}" in schema.names, f"{map_name}_{score}"
    metadata = schema.metadata
    assert (
        json.loads(metadata[b"cam_audit.classes"])
        == pd.read_parquet(run_dir / "classes.parquet")["label_name"].tolist()
    )
    assert b"torch" in metadata[b"cam_audit.versions"] and b"gradcam" in metadata[b"cam_audit.config"]
    assert summary["images"] == LIMIT and 0.5 < summary["accuracy"] < 1.0  # accurate but not perfect
    assert frame["confidence"].between(0, 1).all() and (frame["correct"] == (frame["pred"] == frame["label"])).all()
    # parts are written as the run goes, every ROWS_PER_PART rows, not once at the end
    parts = sorted((run_dir / "parts").glob("samples-*.parquet"))
    assert [pq.read_metadata(part).num_rows for part in parts] == [128, 128, 128, 16]


@DEFAULT_MODEL
def test_one_overlay_per_image_that_needs_a_look(default_run):
    run_dir, frame, summary = default_run
    needs_look = frame.loc[~frame["triage"].isin(NO_LOOK_NEEDED), "id"]
    assert (~frame["correct"]).sum() > 0 and set(frame.loc[~frame["correct"], "id"]) <= set(needs_look)
    assert sorted(p.name for p in (run_dir / "overlays").iterdir() if p.is_file()) == sorted(
        f"{safe_file_stem(i)}.jpg" for i in needs_look
    )
    assert sum(summary["triage"].values()) == len(frame) and summary["triage"]["ok"] == (frame["triage"] == "ok").sum()


@DEFAULT_MODEL
def test_planted_shortcut_is_visible(default_run):
    """Marker images' predicted-class maps sit off the object (they peak on the marker)."""
    _, frame, summary = default_run
    with_marker = frame[frame["marker_present"] == 1]
    without = frame[frame["marker_present"] == 0]
    assert with_marker["pred_energy_in_box"].mean() < without["pred_energy_in_box"].mean()
    assert with_marker["correct"].mean() < without["correct"].mean()
    # images of other classes that the marker turned into "triangle": the map looks at the marker
    flipped = with_marker[(with_marker["pred_name"] == "triangle") & (with_marker["label_name"] != "triangle")]
    assert len(flipped) >= 3
    assert flipped["pred_energy_in_box"].mean() < 0.25
    assert flipped["pred_energy_in_box"].mean() < flipped["true_energy_in_box"].mean() - 0.2
    groups = {row["marker_present"]: row for row in summary["groups"]["marker_present"]}
    assert groups[1]["pred_energy_in_box"] < groups[0]["pred_energy_in_box"]
    # the shortcut finder flags the marker class, and only it
    assert summary["shortcuts"]["flagged"] == ["triangle"]


@DEFAULT_MODEL
def test_shortcut_hot_spot_lies_on_the_marker(default_run):
    """Where the flagged class's off-box energy goes: each image's off-box peak cell is on its marker (the
    marker is drawn at a random place per image, so per image is where it can be checked), and so are
    the examples the summary names."""
    _, frame, summary = default_run
    entry = next(e for e in summary["shortcuts"]["classes"] if e["pred_name"] == "triangle")
    grid = summary["shortcuts"]["settings"]["grid"]
    marked = frame[
        (frame["pred_name"] == "triangle") & (frame["marker_present"] == 1) & frame["pred_excess_energy"].notna()
    ]
    assert len(marked) >= 10

    def on_marker(row, x: float, y: float) -> bool:  # normalised input coordinates; the default resizes the whole image
        slack = 1.0 / grid  # one cell
        return (
            row["marker_x1"] / row["width"] - slack <= x <= row["marker_x2"] / row["width"] + slack
            and row["marker_y1"] / row["height"] - slack <= y <= row["marker_y2"] / row["height"] + slack
        )

    hits = []
    for _, row in marked.iterrows():
        cell = int(np.argmax(row["pred_off_box_grid"]))
        hits.append(on_marker(row, (cell % grid + 0.5) / grid, (cell // grid + 0.5) / grid))
    assert np.mean(hits) >= 0.7, np.mean(hits)
    others = frame[(frame["pred_name"] != "triangle") & (frame["marker_present"] == 1)]
    other_hits = [
        on_marker(
            row,
            (int(np.argmax(row["pred_off_box_grid"])) % grid + 0.5) / grid,
            (int(np.argmax(row["pred_off_box_grid"])) // grid + 0.5) / grid,
        )
        for _, row in others.iterrows()
    ]
    assert np.mean(other_hits) < 0.2  # the other classes' maps do not go to the marker (1 % on the full default)
    by_id = frame.set_index("id")
    for example in entry["hot_spot"]["examples"]:
        row = by_id.loc[example["id"]]
        if row["marker_present"] == 1:
            assert on_marker(row, example["off_box_peak_x"], example["off_box_peak_y"]), example
    assert (Path(summary["run_dir"]) / entry["hot_spot"]["picture"]).is_file()
    # the marker moves from image to image: no fixed place to report, and the verdict says so
    assert entry["hot_spot"]["significant"] is False, entry["hot_spot"]["p_value"]
    assert entry["hot_spot"]["verdict"].startswith("no fixed location")


@DEFAULT_MODEL
def test_verdicts_agree_with_the_evidence(default_run):
    """No "off the object" row has a pointing hit on its judged map; every row not ok says why; the
    localisation numbers come with their context."""
    _, frame, summary = default_run
    judged_hit = np.where(
        frame["correct"], frame["true_pointing_hit"].fillna(False), frame["pred_pointing_hit"].fillna(False)
    ).astype(bool)
    off = frame["triage"].isin(["distracted", "right_for_wrong_reason"]).to_numpy()
    assert off.sum() >= 10 and not (off & judged_hit).any()
    assert frame.loc[frame["triage"] != "ok", "triage_reason"].str.len().gt(10).all()
    context = summary["localisation_context"]
    assert context["median_box_to_object_area"] > 1.5 and context["reading"].startswith("maps are wider")


@DEFAULT_MODEL
def test_classes_table(default_run):
    run_dir, frame, _ = default_run
    classes = pd.read_parquet(run_dir / "classes.parquet")
    assert classes["count"].sum() == len(frame)
    assert set(classes.columns) >= {
        "label_name",
        "count",
        "accuracy",
        "true_energy_in_box",
        "true_pointing_game_accuracy",
        "true_gt_known_localisation_accuracy",
    }
    expected = frame.groupby("label_name")["correct"].mean()
    for _, row in classes.iterrows():
        assert row["accuracy"] == pytest.approx(expected[row["label_name"]])


@pytest.mark.parametrize("model", [pytest.param("default", marks=DEFAULT_MODEL), "tiny"])
def test_command_line_prints_where_the_report_went(tmp_path, model):
    out = tmp_path / "cli-run"
    if model == "default":
        options = ["data.limit=48", f"cache_dir={CACHE}", "runtime.progress=false", "runtime.num_workers=0"]
    else:
        good_dataset(tmp_path / "data", 6)
        options = base_overrides(tmp_path / "data", tmp_path / "cache")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", f"hydra.run.dir={out}", *options],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"report: {out}" in result.stdout
    assert (out / "samples.parquet").is_file() and (out / ".hydra" / "config.yaml").is_file()
