"""``review.html``: one static page to review a run in a browser, next to its overlays.

Header: the run's provenance (date, git revision, checkpoint and dataset hashes, model, method). First
screen: headline numbers, triage counts, the shortcut finder's flags with their hot-spot pictures, the
``report.group_by`` tables and a warning when the predictions have collapsed onto one class. Then the most
frequent confusions, the classes worst first by true-class excess energy (n/a last; the worst
``CLASS_ROWS_SHOWN``, the rest behind a toggle), a table of the images that need a look (sortable by
clicking a column, filtered by class, triage and confidence in percent with a few lines of plain
JavaScript; each id links to its card) and one gallery per triage category, most severe first: a grid of
cards with the overlay's thumbnail (``overlays/thumbs/``) linking to the full overlay. A legend (the box
colours, the peak cross, "in box" and "excess") stays in the sticky filter bar. Rendered with Jinja2
(``templates/review.html.j2``) with autoescaping on, so no value from the data (ids, class names) is ever
read as HTML; pictures are linked by relative path, so the run folder can be copied or served as it is.
"""

from __future__ import annotations

import math
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from pipeline.faithfulness.review import review_context as faithfulness_context
from pipeline.reports.headline import headline_values
from pipeline.reports.overlays import EXCESS_MEANING, IN_BOX_MEANING, THUMB_DIR, safe_file_stem
from pipeline.reports.triage import CATEGORIES, MEANINGS, NO_LOOK_NEEDED, SEVERITY_ORDER
from pipeline.scores.aggregates import ACCURACY, MAP_SHORT, MAP_WORDS, Metric, display, group_columns

CLASS_ROWS_SHOWN = 20

# Within a gallery, most severe first: (column, ascending); a category not listed sorts by confidence.
GALLERY_ORDER = {
    "right_for_wrong_reason": ("true_excess_energy", True),
    "right_mixed_evidence": ("true_excess_energy", True),
    "ok": ("true_excess_energy", True),
}


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(float(value)))


def fmt(value, percent: bool = False, digits: int = 3) -> str:
    """A number for the page: missing/NaN (also float32) as ``n/a``, floats rounded or as a percentage."""
    if _is_missing(value):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{100 * float(value):.1f}%" if percent else f"{float(value):.{digits}f}"
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return str(value)


def _number(value) -> str:
    """A data attribute for sorting and filtering: the value, or NaN."""
    return "NaN" if _is_missing(value) else repr(float(value))


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
    )


def _headline_label(metric: Metric) -> str:
    """A headline row's name: the label, the map for a map's number, and what its values mean."""
    words = f"{MAP_WORDS[metric.map_name]} {metric.aggregate.label}" if metric.map_name else metric.aggregate.label
    return f"{words} ({metric.aggregate.reading})" if metric.aggregate.reading else words


def _headline(summary: dict) -> list[tuple[str, str]]:
    """The images, the skipped ones, each registry headline number (:func:`headline_values`), MaxBoxAccV2."""
    rows = [("images", fmt(summary.get("images"))), ("skipped (errors.parquet)", fmt(summary.get("errors")))]
    rows += [
        (_headline_label(metric), fmt(value, metric.aggregate.percent, metric.aggregate.digits))
        for metric, value in headline_values(summary)
    ]
    if summary.get("maxboxacc_v2"):
        rows.append(("MaxBoxAccV2", fmt(summary["maxboxacc_v2"]["maxboxacc_v2"], True)))
    return rows


def _overlay_link(overlay_dir: Path, sample_id: str) -> str | None:
    picture = overlay_dir / f"{safe_file_stem(str(sample_id))}.jpg"
    return f"overlays/{picture.name}" if picture.is_file() else None


def _thumbnail_link(overlay_dir: Path, sample_id: str) -> str | None:
    """The overlay's thumbnail (runs before thumbnails existed have none: the page scales the overlay)."""
    picture = overlay_dir / THUMB_DIR / f"{safe_file_stem(str(sample_id))}.jpg"
    return f"overlays/{THUMB_DIR}/{picture.name}" if picture.is_file() else None


def _short_hash(value) -> str:
    return str(value)[:12] if value else "n/a"


def _provenance(summary: dict) -> list[dict]:
    """The header's provenance fields ``{name, value, title}`` (``title``: the full value, on hover)."""
    origin = summary.get("provenance") or {}
    model = summary.get("model") or {}
    definitions = summary.get("definitions") or {}
    fields = []
    started = str(origin.get("started_utc") or "")
    fields.append({"name": "run", "value": started.replace("T", " ").replace("Z", " UTC") or "n/a", "title": started})
    git = origin.get("git") or {}
    commit = git.get("commit")
    fields.append(
        {
            "name": "git",
            "value": (commit[:10] + (" (uncommitted changes)" if git.get("dirty") else "")) if commit else "n/a",
            "title": commit or "not run from a git checkout",
        }
    )
    fields.append({"name": "model", "value": str(model.get("name", "n/a")), "title": ""})
    checkpoint = origin.get("checkpoint") or {}
    if model.get("random_weights"):
        fields.append({"name": "weights", "value": "RANDOM (model.allow_random_weights=true)", "title": ""})
    fields.append(
        {
            "name": "checkpoint sha256",
            "value": _short_hash(checkpoint.get("sha256")),
            "title": f"{checkpoint.get('sha256')} {checkpoint.get('path')}" if checkpoint else "no checkpoint file",
        }
    )
    dataset = origin.get("dataset") or {}
    fields.append(
        {
            "name": "dataset",
            "value": f"{fmt(dataset.get('samples'))} samples, fingerprint {_short_hash(dataset.get('sha256'))}",
            "title": str(dataset.get("sha256", "")),
        }
    )
    method = str(definitions.get("cam_method", "n/a"))
    if definitions.get("class_score"):
        method += f" of the {definitions['class_score']}"
    fields.append({"name": "method", "value": method, "title": ""})
    fields.append({"name": "layer", "value": str(summary.get("target_layer", "n/a")), "title": ""})
    fields.append(
        {"name": "scored in", "value": str(definitions.get("coordinate_space", "")).split(":")[0] or "n/a", "title": ""}
    )
    return fields


def _shortcut_context(shortcuts: dict, overlay_dir: Path) -> tuple[list[dict], list[dict]]:
    flagged, rows = [], []
    for entry in shortcuts.get("classes", []):
        row = {
            "pred_name": entry["pred_name"],
            "images": entry["images"],
            "off_peak": fmt(entry.get("off_object_peak_share"), True),
            "others_off_peak": fmt(entry.get("others_off_object_peak_share"), True),
            "mean": fmt(entry["mean_excess_energy"]),
            "others": fmt(entry["others_mean_excess_energy"]),
            "effect": fmt(entry["effect"]),
            "p": fmt(entry["p_holm"], digits=4),
            "flagged": entry["flagged"],
        }
        rows.append(row)
        if not entry["flagged"]:
            continue
        spot = entry.get("hot_spot")
        context = {**row, "picture": (spot or {}).get("picture"), "spot": None}  # a flagged class: its row and more
        if spot:
            context["spot"] = {
                "x": fmt(spot["x"], digits=2),
                "y": fmt(spot["y"], digits=2),
                "share": fmt(spot["share"], True),
                "uniform": fmt(spot["uniform_share"], True),
                "peaking": fmt(spot["images_peaking_there"], True),
                "significant": bool(spot.get("significant", True)),
                "verdict": spot.get("verdict", ""),
                "examples": [
                    {
                        "id": ex["id"],
                        "excess": fmt(ex["excess_energy"]),
                        "x": fmt(ex["off_box_peak_x"], digits=2),
                        "y": fmt(ex["off_box_peak_y"], digits=2),
                        "overlay": _overlay_link(overlay_dir, ex["id"]),
                    }
                    for ex in spot.get("examples", [])
                ],
            }
        flagged.append(context)
    return flagged, rows


def _strategy_context(strategies: dict, overlay_dir: Path) -> dict:
    """The strategies section: the rule, a headline, and each class with a picture (several clusters; the
    first ``report.strategies.max_pictures``) with one row per cluster (pipeline/reports/strategies.py)."""
    settings = strategies.get("settings") or {}
    by = "predicted" if settings.get("by", "pred") == "pred" else "true"
    classes = strategies.get("classes") or []
    several, small = strategies.get("several") or [], strategies.get("not_clustered") or []
    if classes:
        headline = f"{len(several)} of the {len(classes)} {by} classes clustered have several clusters of maps"
    else:
        headline = f"No {by} class has {settings.get('min_images')} usable maps: nothing was clustered"
    if small:
        headline += f"; {len(small)} classes with fewer than {settings.get('min_images')} maps were not clustered"
    suspects = {s["name"]: s for s in strategies.get("suspects") or []}
    shown = []
    for entry in classes:
        if not entry.get("picture"):
            continue
        rows = []
        for c in entry["clusters"]:
            groups = "; ".join(
                ", ".join(f"{column}={value} {fmt(share, True)}" for value, share in shares.items())
                for column, shares in (c.get("groups") or {}).items()
            )
            rows.append(
                {
                    "cluster": c["cluster"],
                    "images": c["images"],
                    "share": fmt(c["share"], True),
                    "accuracy": fmt(c["accuracy"], True),
                    "off": fmt(c["off_object_peak_share"], True),
                    "excess": fmt(c["mean_excess_energy"]),
                    "difference": fmt(c["difference"], digits=2),
                    "groups": groups,
                    "suspect": bool(c.get("looks_off_object")),
                    "examples": [{"id": i, "overlay": _overlay_link(overlay_dir, i)} for i in c["examples"]],
                }
            )
        suspect = suspects.get(entry["name"])
        shown.append(
            {
                "name": entry["name"],
                "images": entry["images"],
                "picture": entry["picture"],
                "rows": rows,
                "suspect": None
                if suspect is None
                else f"{len(suspect['clusters'])} of its {suspect['of_clusters']} clusters ({suspect['images']} images) "
                f"look off the object: {fmt(suspect['off_object_peak_share'], True)} of their maps peak off every box, "
                f"against {fmt(suspect['largest_off_object_peak_share'], True)} in the largest cluster",
            }
        )
    return {
        "rule": strategies.get("rule", ""),
        "headline": headline if settings.get("grid") else "",
        "by": by,
        "frame": settings.get("frame", "object"),
        "classes": shown,
        "left_out": max(0, len(several) - len(shown)),
    }


def _group_context(summary: dict) -> list[dict]:
    """One table per ``report.group_by`` column: images, accuracy and the registry's group means
    (:func:`~pipeline.scores.aggregates.group_columns`)."""
    columns = [(name, MAP_SHORT[map_name], display(score)) for name, map_name, score in group_columns()]
    out = []
    for column, rows in (summary.get("groups") or {}).items():
        headers = [column, "images", ACCURACY.label] + [f"{words} {shown.label}" for _, words, shown in columns]
        out.append(
            {
                "column": column,
                "headers": headers,
                "rows": [
                    [fmt(r[column]), fmt(r["count"]), fmt(r.get(ACCURACY.name), True)]
                    + [fmt(r.get(name), shown.percent, shown.digits) for name, _, shown in columns]
                    for r in rows
                ],
            }
        )
    return out


def _class_rows(classes: pd.DataFrame) -> list[dict]:
    if not len(classes):
        return []
    key = "true_excess_energy" if "true_excess_energy" in classes.columns else "true_energy_lift"
    worst = classes.sort_values(key, na_position="last", kind="stable")  # n/a is unknown, not worst
    rows = []
    for r in worst.to_dict("records"):
        excess = r.get("true_excess_energy")
        rows.append(
            {
                "name": str(r["label_name"]),
                "count": fmt(int(r["count"])),
                "accuracy": fmt(r["accuracy"], True),
                "energy": fmt(r.get("true_energy_in_box")),
                "excess": fmt(excess),
                "lift": fmt(r.get("true_energy_lift")),
                "pointing": fmt(r.get("true_pointing_game_accuracy"), True),
                "low": not _is_missing(excess) and excess <= 0,
            }
        )
    return rows


def _image_row(r: dict, overlay_dir: Path) -> dict:
    confidence = r["confidence"]
    return {
        "id": str(r["id"]),
        "anchor": f"card-{safe_file_stem(str(r['id']))}",
        "true": str(r["label_name"]),
        "pred": str(r["pred_name"]),
        # a right prediction: its predicted- and true-class maps are one map (one panel, one set of scores)
        "same": bool(r["correct"])
        if not _is_missing(r.get("correct"))
        else str(r["label_name"]) == str(r["pred_name"]),
        "triage": str(r.get("triage", "")),
        "reason": "" if _is_missing(r.get("triage_reason")) else str(r.get("triage_reason", "")),
        "confidence": fmt(confidence, True),
        # in percent, as the column shows it and the filter takes it
        "confidence_value": _number(None if _is_missing(confidence) else 100 * float(confidence)),
        "pred_in_box": fmt(r.get("pred_energy_in_box")),
        "true_in_box": fmt(r.get("true_energy_in_box")),
        "pred_excess": fmt(r.get("pred_excess_energy")),
        "pred_excess_value": _number(r.get("pred_excess_energy")),
        "true_excess": fmt(r.get("true_excess_energy")),
        "true_excess_value": _number(r.get("true_excess_energy")),
        "overlay": _overlay_link(overlay_dir, r["id"]),
        "thumbnail": _thumbnail_link(overlay_dir, r["id"]),
    }


def _images_context(frame: pd.DataFrame, overlay_dir: Path, max_images: int) -> tuple[list[dict], list[dict], int]:
    """The image table (every image that needs a look, or has an overlay, most severe category first) and
    one gallery per category with the overlays written for it."""
    if not len(frame):
        return [], [], 0
    if "triage" not in frame.columns:  # a run from before triage existed: the misclassified ones
        frame = frame.assign(triage=np.where(frame["correct"].astype(bool), "ok", "distracted"))
    image_rows: list[dict] = []
    galleries: list[dict] = []
    left_out = 0
    for category in SEVERITY_ORDER:
        members = frame[frame["triage"] == category]
        if not len(members):
            continue
        column, ascending = GALLERY_ORDER.get(category, ("confidence", False))
        if column not in members.columns:
            column, ascending = "confidence", False
        members = members.sort_values(column, ascending=ascending, na_position="last", kind="stable")
        rows = [_image_row(r, overlay_dir) for r in members.to_dict("records")]
        if category in NO_LOOK_NEEDED:
            rows = [
                r for r in rows if r["overlay"]
            ]  # correct and on the object: only those drawn (report.overlays=all)
        room = max(0, max_images - len(image_rows))
        left_out += max(0, len(rows) - room)
        rows = rows[:room]
        image_rows += rows
        cards = [r for r in rows if r["overlay"]]
        if cards:
            galleries.append(
                {
                    "name": category,
                    "cards": cards,
                    "left_out": len(members) - len(cards),
                    "order": ("most confident first" if column == "confidence" else "least on the object first"),
                }
            )
    return image_rows, galleries, left_out


def render_review_page(
    summary: dict, frame: pd.DataFrame, classes: pd.DataFrame, overlay_dir: Path, max_images: int
) -> str:
    """The page as a string; ``frame`` is ``samples.parquet`` (with ``triage``), ``classes`` is ``classes.parquet``."""
    definitions = summary.get("definitions") or {}
    shortcuts = summary.get("shortcuts") or {}
    flagged, shortcut_rows = _shortcut_context(shortcuts, overlay_dir)
    image_rows, galleries, left_out = _images_context(frame, overlay_dir, max_images)
    triage = summary.get("triage") or {}
    context = {
        "run_dir": str(summary.get("run_dir", "")),
        "provenance": _provenance(summary),
        "random_weights": bool((summary.get("model") or {}).get("random_weights")),
        "tau": fmt((definitions.get("taus") or [None])[0], digits=2),
        "in_box_meaning": IN_BOX_MEANING.split(": ", 1)[1],
        "excess_meaning": EXCESS_MEANING.split(": ", 1)[1],
        "model_name": str((summary.get("model") or {}).get("name", "")),
        "target_layer": str(summary.get("target_layer", "")),
        "cam_method": str(definitions.get("cam_method", "")),
        "space": str(definitions.get("coordinate_space", "")).split(":")[0],
        "collapse": shortcuts.get("collapse"),
        "headline": _headline(summary),
        "triage_rows": [
            {"name": name, "count": int(triage.get(name, 0)), "meaning": MEANINGS[name]}
            for name in SEVERITY_ORDER
            if name in triage or not triage
        ],
        "triage_rule": summary.get("triage_rule", ""),
        "localisation_reading": (summary.get("localisation_context") or {}).get("reading", ""),
        "shortcut_rule": shortcuts.get("rule", "the shortcut finder did not run"),
        "flagged": flagged,
        "shortcut_rows": shortcut_rows,
        "shortcuts_tested": shortcuts.get("tested", 0),
        "strategies": _strategy_context(summary.get("strategies") or {}, overlay_dir),
        "groups": _group_context(summary),
        "confusions": [
            {
                "true": c["true"],
                "pred": c["pred"],
                "images": c["images"],
                "energy": fmt(c["pred_energy_in_box"]),
                "excess": fmt(c["pred_excess_energy"]),
            }
            for c in summary.get("confusions") or []
        ],
        "class_rows": _class_rows(classes),
        "class_rows_shown": CLASS_ROWS_SHOWN,
        "image_rows": image_rows,
        "galleries": galleries,
        "images_left_out": left_out,
        "gallery_names": {g["name"] for g in galleries},
        "filter_classes": sorted({r["true"] for r in image_rows} | {r["pred"] for r in image_rows}),
        "filter_triage": [c for c in CATEGORIES if any(r["triage"] == c for r in image_rows)],
        **faithfulness_context(summary),  # faithfulness and the sanity check (a failed check: a warning first)
    }
    return _environment().get_template("review.html.j2").render(**context)
