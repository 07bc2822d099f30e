"""review.html: written with every run; the first screen, galleries per triage category, escaping, n/a."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from pipeline.reports.overlays import safe_file_stem
from pipeline.reports.review_page import CLASS_ROWS_SHOWN, render_review_page
from pipeline.reports.triage import NO_LOOK_NEEDED, SEVERITY_ORDER
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process


def test_page_links_every_overlay_and_lists_every_image_that_needs_a_look(tmp_path):
    good_dataset(tmp_path / "data", 12)
    summary = run_in_process(
        base_overrides(tmp_path / "data", tmp_path / "cache", **{"report.overlays": "needs_look"}), tmp_path / "run"
    )
    page = (tmp_path / "run" / "review.html").read_text(encoding="utf-8")
    frame = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    needs_look = frame[~frame["triage"].isin(NO_LOOK_NEEDED)]
    assert len(needs_look) > 0
    written = sorted(p.name for p in (tmp_path / "run" / "overlays").glob("*.jpg"))
    assert written == sorted(f"{safe_file_stem(i)}.jpg" for i in needs_look["id"])  # report.overlays=needs_look
    assert sorted(p.name for p in (tmp_path / "run" / "overlays" / "thumbs").iterdir()) == written
    # every overlay written is on the page: a card with its thumbnail, linked to the full picture
    cards = re.findall(
        r'<a href="overlays/([^"]+)" title="open the full overlay"><img loading="lazy" src="([^"]+)"', page
    )
    assert sorted(full for full, _ in cards) == written
    assert all(thumbnail == f"overlays/thumbs/{full}" for full, thumbnail in cards)
    rows = re.findall(r'<tr class="image-row" data-id="([^"]+)"', page)
    assert sorted(rows) == sorted(needs_look["id"])
    order = [c for c in SEVERITY_ORDER if c in set(needs_look["triage"])]
    assert [m for m in re.findall(r'<h3 id="gallery-([a-z_]+)"', page)] == order  # most severe category first
    assert f"{100 * summary['accuracy']:.1f}%" in page and "Shortcut finder" in page and not re.search(r"\bnan\b", page)


def _crafted(n_classes: int = 1):
    frame = pd.DataFrame(
        {
            "id": ["<script>x</script>", "b"],
            "label_name": ["a&b", "cat"],
            "pred_name": ["<i>", "dog"],
            "correct": [False, False],
            "confidence": np.array([0.123456789, 0.5], np.float32),
            "triage": ["distracted", "confused_on_object"],
            "pred_excess_energy": np.array([np.nan, 0.25], np.float32),
            "true_excess_energy": np.array([0.1, 0.2], np.float32),
        }
    )
    classes = pd.DataFrame(
        {
            "label_name": ["<b>cat</b>"] + [f"c{i:02d}" for i in range(n_classes - 1)],
            "count": 1,
            "accuracy": 0.0,
            "true_energy_in_box": 0.5,
            "true_energy_lift": 0.8,
            "true_excess_energy": [-0.1] + [0.01 * i for i in range(n_classes - 1)],
            "true_pointing_game_accuracy": 1.0,
        }
    )
    return frame, classes


def test_values_from_the_data_are_escaped(tmp_path):
    frame, classes = _crafted()
    (tmp_path / f"{safe_file_stem('<script>x</script>')}.jpg").write_bytes(b"jpeg")
    summary = {
        "run_dir": "r",
        "images": 2,
        "errors": 0,
        "accuracy": 0.0,
        "confusions": [
            {"true": "<u>t</u>", "pred": "p", "images": 1, "pred_energy_in_box": 0.1, "pred_excess_energy": 0.0}
        ],
    }
    page = render_review_page(summary, frame, classes, tmp_path, 10)
    for raw in ("<script>x", "<b>cat</b>", "<i>", "<u>t</u>"):
        assert raw not in page
    for escaped in ("&lt;script&gt;x&lt;/script&gt;", "&lt;b&gt;cat&lt;/b&gt;", "a&amp;b", "&lt;u&gt;t&lt;/u&gt;"):
        assert escaped in page
    assert '<tr class="low"><td>&lt;b&gt;cat&lt;/b&gt;' in page  # excess energy below 0: highlighted


def test_float32_values_are_rounded_and_nan_reads_n_a(tmp_path):
    frame, classes = _crafted()
    page = render_review_page({"run_dir": "r"}, frame, classes, tmp_path, 10)
    assert "<td>12.3%</td>" in page and "<td>n/a</td>" in page and "<td>0.250</td>" in page
    assert not re.search(
        r"\bnan\b", page
    )  # a float32 NaN is never printed raw (data attributes carry "NaN" for sorting)


def test_classes_without_a_score_sort_last_not_first_as_worst(tmp_path):
    frame, classes = _crafted(n_classes=4)
    classes.loc[classes["label_name"] == "c01", "true_excess_energy"] = np.nan  # e.g. no box in any input
    page = render_review_page({"run_dir": "r"}, frame, classes, tmp_path, 10)
    table = page.split('<table id="classes">')[1].split("</table>")[0]
    names = re.findall(r"<tr(?: class=\"low\")?><td>([^<]+)</td>", table)
    assert names == ["&lt;b&gt;cat&lt;/b&gt;", "c00", "c02", "c01"]  # -0.1, 0.0, 0.02, then n/a


def test_class_table_is_capped_and_the_rest_is_behind_a_toggle(tmp_path):
    frame, classes = _crafted(n_classes=CLASS_ROWS_SHOWN + 7)
    page = render_review_page({"run_dir": "r"}, frame, classes, tmp_path, 10)
    visible, hidden = page.split('<details id="more-classes">')
    assert len(re.findall(r"<td>c\d\d</td>", visible)) == CLASS_ROWS_SHOWN - 1  # the worst (<b>cat</b>) first, then 19
    assert len(re.findall(r"<td>c\d\d</td>", hidden.split("</details>")[0])) == 7
    assert "7 more classes" in page


def test_collapse_warning_in_summary_and_on_the_page(tmp_path):
    good_dataset(tmp_path / "data", 12)
    summary = run_in_process(
        base_overrides(
            tmp_path / "data", tmp_path / "cache", **{"model._target_": "tests.reports.collapsed_model.CollapsedNet"}
        ),
        tmp_path / "run",
    )
    collapse = summary["shortcuts"]["collapse"]
    assert collapse["pred_name"] == "cat" and collapse["share"] == 1.0
    page = (tmp_path / "run" / "review.html").read_text(encoding="utf-8")
    assert '<div class="warning" id="collapse-warning">' in page and "collapsed" in page


def _with_pictures(tmp_path, frame: pd.DataFrame, thumbnails: bool = True) -> None:
    (tmp_path / "thumbs").mkdir(exist_ok=True)
    for sample_id in frame["id"]:
        (tmp_path / f"{safe_file_stem(sample_id)}.jpg").write_bytes(b"jpeg")
        if thumbnails:
            (tmp_path / "thumbs" / f"{safe_file_stem(sample_id)}.jpg").write_bytes(b"jpeg")


SUMMARY = {
    "run_dir": "r",
    "provenance": {
        "started_utc": "2026-12-06T03:48:30Z",
        "git": {"commit": "26adc9b694561654f5a9d79cc4876ac4fecac1d5", "dirty": True},
        "checkpoint": {"path": "m.pt", "bytes": 1, "sha256": "4b044b55673ef55ad99bc22d5718784803e37df4"},
        "dataset": {"sha256": "4950f3791b0a1d9e9253c4220a47cd45abd377db", "samples": 1200, "bytes": 9},
    },
    "model": {"name": "resnet50", "random_weights": False},
    "target_layer": "layer4",
    "definitions": {"cam_method": "gradcam", "class_score": "logit", "taus": [0.15], "coordinate_space": "input: ..."},
}


def test_the_header_carries_the_runs_provenance(tmp_path):
    frame, classes = _crafted()
    page = render_review_page(SUMMARY, frame, classes, tmp_path, 10)
    header = page.split('<p class="muted" id="provenance">')[1].split("</p>")[0]
    for shown in ("2026-12-06 03:48:30 UTC", "26adc9b694 (uncommitted changes)", "resnet50", "4b044b55673e"):
        assert shown in header
    assert "1200 samples, fingerprint 4950f3791b0a" in header and "gradcam of the logit" in header
    assert "layer4" in header and "RANDOM" not in header
    random = render_review_page(
        {**SUMMARY, "model": {"name": "resnet50", "random_weights": True}}, frame, classes, tmp_path, 10
    )
    assert "RANDOM (model.allow_random_weights=true)" in random


def test_ids_link_to_their_cards_and_a_same_class_card_shows_one_map(tmp_path):
    frame, classes = _crafted()
    frame = pd.concat(
        [frame, frame.iloc[[1]].assign(id="c", pred_name="cat", correct=True, triage="right_for_wrong_reason")]
    )
    frame["triage_reason"] = "pred map: peak off every box"
    _with_pictures(tmp_path, frame)
    page = render_review_page(SUMMARY, frame, classes, tmp_path, 10)
    links = re.findall(r'<a class="card-link" href="#([^"]+)">', page)
    anchors = re.findall(r'<div class="card image-card" id="([^"]+)"', page)
    assert len(links) == 3 and sorted(links) == sorted(anchors)  # every id in the table jumps to its card
    card = page.split(f'id="card-{safe_file_stem("c")}"')[1].split('<div class="card')[0]
    assert "true = predicted: cat" in card and "true map" not in card and "pred. map" not in card
    other = page.split(f'id="card-{safe_file_stem("b")}"')[1].split('<div class="card')[0]
    assert "true cat, predicted dog" in other and "pred. map" in other and "true map" in other
    assert '<p class="reason">pred map: peak off every box</p>' in card


def test_the_legend_and_the_meaning_of_in_box_and_excess_are_on_the_page(tmp_path):
    frame, classes = _crafted()
    _with_pictures(tmp_path, frame)
    page = render_review_page(SUMMARY, frame, classes, tmp_path, 10)
    legend = page.split('<div class="legend" id="legend">')[1].split("</div>")[0]
    assert "annotated box" in legend and "thresholded at tau = 0.15" in legend and "peak" in legend
    assert 'title="share of the map&#39;s energy inside the annotated boxes">in box</abbr>' in page
    assert page.count('title="(in box - box area) / (1 - box area)') >= 3  # legend, table headers, cards


def test_the_confidence_filter_takes_percent_like_its_column(tmp_path):
    frame, classes = _crafted()
    page = render_review_page(SUMMARY, frame, classes, tmp_path, 10)
    assert 'id="filter-confidence" type="number" min="0" max="100"' in page
    values = [float(v) for v in re.findall(r'<tr class="image-row"[^>]* data-confidence="([^"]+)"', page)]
    assert values == pytest.approx([12.3456789, 50.0], rel=1e-6)  # the column reads 12.3%, 50.0%


def test_an_older_run_without_thumbnails_shows_its_overlays_instead(tmp_path):
    frame, classes = _crafted()
    _with_pictures(tmp_path, frame, thumbnails=False)
    page = render_review_page(SUMMARY, frame, classes, tmp_path, 10)
    sources = re.findall(r'<img loading="lazy" src="([^"]+)"', page)
    assert sorted(sources) == sorted(f"overlays/{safe_file_stem(i)}.jpg" for i in frame["id"])
