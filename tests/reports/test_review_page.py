"""review.html: written with every run; the first screen, galleries per triage category, escaping, n/a."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

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
    written = sorted(p.name for p in (tmp_path / "run" / "overlays").iterdir())
    assert written == sorted(f"{safe_file_stem(i)}.jpg" for i in needs_look["id"])  # report.overlays=needs_look
    shown = re.findall(r'<img loading="lazy" src="overlays/([^"]+)"', page)
    assert sorted(shown) == written  # every overlay written is on the page
    rows = re.findall(r'<tr class="image-row" data-id="([^"]+)"', page)
    assert sorted(rows) == sorted(needs_look["id"])
    order = [c for c in SEVERITY_ORDER if c in set(needs_look["triage"])]
    assert [m for m in re.findall(r'<h3 id="gallery-([a-z_]+)"', page)] == order  # most severe category first
    assert f"{100 * summary['accuracy']:.1f}%" in page and "Shortcut finder" in page and "nan" not in page


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
    assert "nan" not in page  # a float32 NaN is never printed raw (data attributes carry "NaN" for sorting)


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
