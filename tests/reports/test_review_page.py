"""review.html: written with every run, shows the misclassified overlays, escapes what comes from the data."""

from __future__ import annotations

import re

import pandas as pd

from pipeline.reports.overlays import safe_file_stem
from pipeline.reports.review_page import render_review_page
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process


def test_page_shows_every_misclassified_overlay_most_confident_first(tmp_path):
    good_dataset(tmp_path / "data", 12)
    summary = run_in_process(base_overrides(tmp_path / "data", tmp_path / "cache", **{"report.overlays": "misclassified"}), tmp_path / "run")
    page = (tmp_path / "run" / "review.html").read_text(encoding="utf-8")
    frame = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    wrong = frame[~frame["correct"]].sort_values("confidence", ascending=False)
    assert len(wrong) > 0
    shown = re.findall(r"<img loading=lazy src='overlays/([^']+)'", page)
    assert shown == [f"{safe_file_stem(i)}.jpg" for i in wrong["id"]]  # all of them, most confident first
    assert all((tmp_path / "run" / "overlays" / name).is_file() for name in shown)
    assert f"{100 * summary['accuracy']:.1f}%" in page


def test_values_from_the_data_are_escaped(tmp_path):
    frame = pd.DataFrame({"id": ["<script>x</script>"], "label_name": ["a&b"], "pred_name": ["<i>"], "correct": [False],
                          "confidence": [0.9], "true_energy_in_box": [0.5]})
    (tmp_path / f"{safe_file_stem('<script>x</script>')}.jpg").write_bytes(b"jpeg")
    classes = pd.DataFrame({"label_name": ["<b>cat</b>"], "count": [1], "accuracy": [0.0], "true_energy_in_box": [0.5],
                            "true_energy_lift": [0.8], "true_pointing_game_accuracy": [1.0]})
    page = render_review_page({"run_dir": "r", "images": 1, "errors": 0, "accuracy": 0.0}, frame, classes, tmp_path, 10)
    assert "<script>" not in page and "<b>cat</b>" not in page and "<i>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "&lt;b&gt;cat&lt;/b&gt;" in page and "a&amp;b" in page
    assert "<tr class=low>" in page  # lift 0.8 < 1: flagged


def test_float32_values_are_rounded_and_nan_reads_n_a(tmp_path):
    import numpy as np

    frame = pd.DataFrame({"id": ["a", "b"], "label_name": ["cat", "cat"], "pred_name": ["dog", "dog"], "correct": [False, False],
                          "confidence": np.array([0.123456789, 0.5], np.float32),
                          "true_energy_in_box": np.array([np.nan, 0.25], np.float32)})
    for sample_id in ("a", "b"):
        (tmp_path / f"{safe_file_stem(sample_id)}.jpg").write_bytes(b"jpeg")
    page = render_review_page({"run_dir": "r"}, frame, pd.DataFrame(), tmp_path, 10)
    assert "(12.3%); true-class energy in box n/a" in page and "energy in box 0.250" in page and "nan" not in page
