"""``review.html``: one static page to review a run in a browser, next to its overlays.

Headline numbers, the classes sorted worst first (lowest true-class energy lift), the predicted classes
whose maps sit least on the object (shortcut suspects), and the overlays of the misclassified images,
the most confidently wrong first. Plain HTML with inline CSS, pictures linked by relative path, so the run
folder can be copied or served as it is. Every value from the data (ids, class names) is escaped.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.reports.overlays import safe_file_stem

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}td:first-child,th:first-child{text-align:left}
.gallery{display:flex;flex-wrap:wrap;gap:1em}.card{width:480px}.card img{width:100%}.low{background:#fde2e2}"""


def _fmt(value, percent: bool = False) -> str:
    """A number for the page: NaN (also float32) as n/a, floats to 3 decimals or as a percentage."""
    if value is None or (isinstance(value, (float, np.floating)) and value != value):
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return f"{100 * float(value):.1f}%" if percent else f"{float(value):.3f}"
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[str]], low_rows: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(f"<tr{' class=low' if i in low_rows else ''}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for i, row in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


def render_review_page(summary: dict, frame: pd.DataFrame, classes: pd.DataFrame, overlay_dir: Path, max_images: int) -> str:
    """The page as a string; ``frame`` is ``samples.parquet``, ``classes`` is ``classes.parquet``."""
    true = summary.get("true_class_maps") or {}
    definitions = summary.get("definitions") or {}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>cam-audit review</title><style>{STYLE}</style></head><body>",
             f"<h1>Audit review</h1><p>{html.escape(str(summary.get('run_dir', '')))} &middot; model "
             f"{html.escape(str((summary.get('model') or {}).get('name', '')))} &middot; layer {html.escape(str(summary.get('target_layer', '')))}"
             f" &middot; {html.escape(str(definitions.get('cam_method', '')))} &middot; "
             f"{html.escape(str(definitions.get('coordinate_space', '')).split(':')[0])} coordinates</p>"]
    headline = [["images", _fmt(summary.get("images"))], ["skipped (errors.parquet)", _fmt(summary.get("errors"))],
                ["accuracy", _fmt(summary.get("accuracy"), True)], ["true-class energy in box", _fmt(true.get("energy_in_box"))],
                ["energy lift (1 = uniform)", _fmt(true.get("energy_lift"))],
                ["pointing game", _fmt(true.get("pointing_game_accuracy"), True)],
                ["GT-known localisation", _fmt(true.get("gt_known_localisation_accuracy"), True)],
                ["top-1 localisation", _fmt(true.get("top1_localisation_accuracy"), True)]]
    if summary.get("maxboxacc_v2"):
        headline.append(["MaxBoxAccV2", _fmt(summary["maxboxacc_v2"]["maxboxacc_v2"], True)])
    parts.append("<h2>Headline</h2>" + _table(["", "value"], headline))
    if len(classes):
        worst = classes.sort_values("true_energy_lift", na_position="first")
        rows = [[html.escape(str(r.label_name)), _fmt(int(r.count)), _fmt(r.accuracy, True), _fmt(r.true_energy_in_box),
                 _fmt(r.true_energy_lift), _fmt(r.true_pointing_game_accuracy, True)] for r in worst.itertuples()]
        low = {i for i, r in enumerate(worst.itertuples()) if r.true_energy_lift == r.true_energy_lift and r.true_energy_lift < 1.0}
        parts.append("<h2>Classes, lowest energy lift first</h2><p>Highlighted: the map of the true class is no better than a "
                     "uniform map (lift below 1).</p>"
                     + _table(["class", "images", "accuracy", "energy in box", "lift", "pointing game"], rows, low))
    suspects = summary.get("lowest_energy_predicted_classes") or []
    if suspects:
        rows = [[html.escape(str(s["pred_name"])), _fmt(int(s["count"])), _fmt(float(s["pred_energy_lift"]))] for s in suspects]
        parts.append("<h2>Predictions whose maps sit least on the object</h2>" + _table(["predicted class", "images", "lift"], rows))
    wrong = frame[~frame["correct"].astype(bool)].sort_values("confidence", ascending=False) if len(frame) else frame
    cards = []
    for row in wrong.head(max_images).itertuples():
        picture = overlay_dir / f"{safe_file_stem(str(row.id))}.jpg"
        if not picture.is_file():
            continue
        cards.append(f"<div class=card><a href='overlays/{html.escape(picture.name)}'><img loading=lazy src='overlays/"
                     f"{html.escape(picture.name)}' alt='{html.escape(str(row.id))}'></a><br>{html.escape(str(row.id))}: "
                     f"true {html.escape(str(row.label_name))}, predicted {html.escape(str(row.pred_name))} "
                     f"({_fmt(row.confidence, True)}); true-class energy in box {_fmt(row.true_energy_in_box)}</div>")
    shown = f"{len(cards)} of {len(wrong)}" if len(wrong) > len(cards) else f"{len(cards)}"
    parts.append(f"<h2>Misclassified images, most confident first ({shown})</h2><div class=gallery>{''.join(cards)}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
