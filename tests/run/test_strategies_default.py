"""Strategies on the built-in default (all 1,200 audit images): the planted marker shows as its own clusters.

The marker is drawn at a random place of each image, away from the object; the model takes it for
"triangle". Seen from the object (report.strategies.frame=object), triangle's maps that look at the triangle
gather in one cluster and those that look at the marker in others (by the marker's side of the object).
The whole audit split is needed: on the first 400 images triangle has 60 maps and stays one cluster.
"""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.reports.strategies import STRATEGY_COLUMN, StrategySettings, find_strategies
from pipeline.run import run_audit
from tests.helpers_corpus import DEFAULT_CACHE as CACHE

# a fresh clone generates the data and trains the model first (minutes on 2 cores), then 1,200 images: make test-all
pytestmark = [pytest.mark.timeout(1800), pytest.mark.slow]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, compose_config):
    run_dir = tmp_path_factory.mktemp("strategies") / "run"
    cfg = compose_config(
        [
            f"cache_dir={CACHE}",
            "runtime.progress=false",
            "report.overlays=none",
            "report.review_page=true",
            "faithfulness.confidence=false",
            "faithfulness.sample=0",
            "sanity.sample=0",
        ]
    )
    summary = run_audit(cfg, run_dir)
    return run_dir, pd.read_parquet(run_dir / "samples.parquet"), summary


def marker_driven(rows: pd.DataFrame) -> pd.Series:
    """The maps the marker drove: the image carries the marker and the map peaks off every box."""
    return (rows["marker_present"] == 1) & (rows["pred_pointing_hit"] == False)  # noqa: E712 (nullable boolean)


def test_triangle_splits_into_object_and_marker_clusters(default_run):
    _, frame, summary = default_run
    triangle = frame[frame["pred_name"] == "triangle"]
    assert triangle[STRATEGY_COLUMN].notna().all() and triangle[STRATEGY_COLUMN].nunique() >= 2
    driven = marker_driven(triangle)
    assert driven.sum() >= 50
    # the cluster holding most of the marker-driven maps is mostly marked images whose maps peak off the object
    top = triangle.loc[driven, STRATEGY_COLUMN].value_counts().index[0]
    members = triangle[triangle[STRATEGY_COLUMN] == top]
    assert top != 0  # not the class's largest cluster
    assert (members["marker_present"] == 1).mean() >= 0.8
    assert (members["pred_pointing_hit"] == False).mean() >= 0.6  # noqa: E712
    # and the largest cluster looks at the triangle
    largest = triangle[triangle[STRATEGY_COLUMN] == 0]
    assert (largest["pred_pointing_hit"] == True).mean() >= 0.9  # noqa: E712
    assert marker_driven(largest).mean() <= 0.1
    # over the suspects: most marker-driven maps are in clusters that look off the object
    [suspect] = [s for s in summary["strategies"]["suspects"] if s["name"] == "triangle"]
    in_suspects = triangle[STRATEGY_COLUMN].isin(suspect["clusters"])
    assert (driven & in_suspects).sum() >= 0.8 * driven.sum()
    assert suspect["groups"]["marker_present"]["1"] >= 0.8


def test_no_other_class_has_a_cluster_off_the_object(default_run):
    _, _, summary = default_run
    section = summary["strategies"]
    assert [s["name"] for s in section["suspects"]] == ["triangle"]
    assert {e["name"] for e in section["classes"]} == {
        "arrow",
        "crescent",
        "cross",
        "disc",
        "ring",
        "square",
        "star",
        "triangle",
    }
    for entry in section["classes"]:
        if entry["name"] != "triangle":
            assert all(c["off_object_peak_share"] < 0.1 for c in entry["clusters"]), entry["name"]


def test_the_run_writes_the_column_summary_picture_and_page(default_run):
    run_dir, frame, summary = default_run
    schema = pq.read_schema(run_dir / "samples.parquet")
    assert schema.field(STRATEGY_COLUMN).type == "int32"
    assert b"largest cluster" in schema.field(STRATEGY_COLUMN).metadata[b"description"]
    assert "triage" in schema.names  # one rewrite adds both
    section = summary["strategies"]
    assert section["seconds"] > 0 and "mean_map" not in json.dumps(section)
    [entry] = [e for e in section["classes"] if e["name"] == "triangle"]
    assert (run_dir / entry["picture"]).is_file()
    page = (run_dir / "review.html").read_text()
    assert 'id="strategies"' in page and entry["picture"] in page
    assert frame[STRATEGY_COLUMN].notna().all()  # every class has over 20 maps and every image a box


def test_the_same_rows_give_the_same_clusters(default_run):
    """A rerun of the clustering on the run's rows (shuffled, as another merge order would give them)."""
    _, frame, summary = default_run
    settings = StrategySettings(**summary["strategies"]["settings"])
    _, again = find_strategies(frame.sample(frac=1.0, random_state=0), settings, ["marker_present"])
    assert again.reindex(frame.index).tolist() == frame[STRATEGY_COLUMN].tolist()
