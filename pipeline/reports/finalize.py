"""End of a run: merge the parts, write ``classes.parquet`` and ``summary.json``, print the summary.

Dataset-level numbers (docs/definitions.md):
- accuracy: share of scored images whose prediction is the true class;
- pointing-game accuracy: per class hits / (hits + misses) of the true-class map, then the mean over
  classes (TorchRay); images with an empty map or no box in the input are left out;
- GT-known localisation accuracy: share of images whose true-class map is localised (IoU >= 0.5 at the
  first tau); top-1 localisation accuracy: share correctly classified **and** localised (ILSVRC);
  images without a box in the input are left out of both;
- energy in box and energy lift: means over images with a box (1.0 lift = no better than uniform).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline import logs
from pipeline.atomic import write_text_atomic
from pipeline.faithfulness import summary as faithfulness_report
from pipeline.jsonio import dumps_strict, write_json_atomic
from pipeline.reports.headline import format_number, headline_line
from pipeline.reports.parts import list_parts, merge_parts, merged_table, write_table_atomic
from pipeline.reports.schema import ERRORS_SCHEMA, map_description, with_descriptions
from pipeline.reports.shortcuts import find_shortcuts, write_hot_spot_pictures
from pipeline.reports.strategies import (
    STRATEGY_COLUMN,
    cluster_backdrops,
    find_strategies,
    strategy_column,
    strategy_lines,
    write_strategy_pictures,
)
from pipeline.reports.triage import CATEGORIES, triage_counts, triage_rule_text, triage_with_reasons
from pipeline.scores import registry
from pipeline.scores.aggregates import (
    ACCURACY,
    ACCURACY_COLUMN,
    MAP_SHORT,
    aggregate_value,
    dataset_scores,
    display,
    group_columns,
    mean_defined,
    summary_aggregates,
)
from pipeline.scores.registry import tau_key
from pipeline.settings import ScoresSettings, Settings, TriageSettings

logger = logging.getLogger("pipeline.reports")


def definition_choices(settings: Settings, setup) -> dict:
    """Every choice behind the numbers, for the report metadata and the summary.

    ``setup`` (an :class:`~pipeline.setup.AuditSetup`) gives what was resolved at the start: the preprocessing
    (``auto`` values filled in from the model, with where each value came from and the normalisation used),
    the target layer, its layout and the precision.
    """
    scores = settings.scores
    return {
        "cam_method": settings.cam.method,
        "class_score": settings.cam.class_score,
        "map_postprocess": "ReLU at the layer's resolution, bilinear upsample (align_corners=False) to the network input, per-map min-max",
        "empty_map": "constant after ReLU: peak-based scores null (no peak), counted in empty_maps",
        "energy_in_box_map": "min-max normalised positive map",
        "relevance_mass_map": "raw signed upsampled map",
        "pointing_tolerance_px": float(scores.tolerance),
        "taus": [float(t) for t in scores.taus],
        "component_connectivity": 8,
        "localised_iou": float(scores.iou_threshold),
        "maxboxacc": (
            f"MaxBoxAccV2 of the true-class maps, {scores.maxboxacc.thresholds} thresholds, IoU 0.3/0.5/0.7, "
            "all contours incl. holes"
            if scores.maxboxacc.enabled
            else "off"
        ),
        "coordinate_space": coordinate_space(scores),
        "preprocess": resolved_preprocess(setup),
        "target_layer": setup.target_layer,
        "layout": setup.layout,
        "precision": str(setup.precision),
        "box_pixel_rule": "pixel (x, y) is in a box when x1 <= x + 0.5 < x2 and y1 <= y + 0.5 < y2",
        **faithfulness_report.definition_entries(settings),  # faithfulness.* and sanity.* protocols
    }


def resolved_preprocess(setup) -> dict:
    """The preprocessing as run: the resolved spec of ``setup``, its sources and mean/std."""
    out = dataclasses.asdict(setup.preprocess)
    out["sources"] = dict(setup.preprocess_sources or {})
    out["model_metadata_from"] = setup.model.preprocess_source
    out["mean"], out["std"] = [float(v) for v in setup.model.mean], [float(v) for v in setup.model.std]
    return out


def coordinate_space(scores: ScoresSettings) -> str:
    """What the box scores, boxes and peaks of the rows refer to (``scores.space``)."""
    if scores.space == "original":
        return (
            "original: stored-image pixels (pixel-edge); maps warped back from the network input (bilinear) and defined "
            "where the network saw the image (0 and ignored outside the crop; letterbox padding dropped), normalised there; "
            "pixel scores and the box area fraction over that region; IoU with the boxes as annotated (clipped to the image, "
            "not to the crop); scored on the stored image scaled by the larger resize factor (longest side at most "
            f"{scores.original_max_side} px); box and peak columns in stored pixels; pointing tolerance "
            "in scoring-grid pixels"
        )
    return "input: network-input pixels (pixel-edge); boxes transformed with the image and clipped to it"


def package_versions() -> dict[str, str]:
    import cv2
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pyarrow": pa.__version__,
        "pandas": pd.__version__,
        "opencv": cv2.__version__,
    }


def class_table(frame: pd.DataFrame, tau: str) -> pd.DataFrame:
    """Per true class: count, accuracy, mean confidence, then the registry's per-class aggregates of the
    true-class maps and of the predicted-class maps (``Aggregate.class_maps``)."""
    rows = []
    for (label, name), group in frame.groupby(["label", "label_name"], sort=True):
        rows.append(
            {
                "label": int(label),
                "label_name": name,
                "count": len(group),
                "accuracy": float(group["correct"].mean()),
                "mean_confidence": float(group["confidence"].mean()),
                **{
                    f"{m}_{k}": v
                    for m in ("true", "pred")
                    for k, v in dataset_scores(group, m, tau, class_table_only=True).items()
                },
            }
        )
    return pd.DataFrame(rows)


# What each aggregation kind does to the rows of a class (see pipeline.scores.registry.AggregationKind).
AGGREGATION_WORDS = {
    "mean": "mean over the class's images where defined of",
    "class_balanced_mean": "hits / (hits + misses) over the class's images where defined of",
    "share_with_box": "share of the class's images with a box (first tau) where it holds:",
    "share_with_box_and_correct": "share of the class's images with a box (first tau) correctly classified and where it holds:",
}


def class_descriptions(tau: str) -> dict[str, str]:
    """A one-line description of every column :func:`class_table` writes, from the score registry."""
    out = {
        "label": "true class: index into the model's outputs",
        "label_name": "true class name",
        "count": "images of this class scored",
        "accuracy": "share of them predicted correctly",
        "mean_confidence": "mean softmax probability of the prediction",
        "true_empty_maps": "true-class maps that are empty (constant after ReLU)",
        **faithfulness_report.CLASS_DESCRIPTIONS,  # with faithfulness.* (pipeline/faithfulness/summary.py)
    }
    for column, name, aggregate in summary_aggregates(tau):
        for map_name in aggregate.class_maps:
            out[f"{map_name}_{name}"] = (
                f"{AGGREGATION_WORDS[aggregate.kind]} {registry.describe(column)} ({map_description(map_name)})"
            )
    return out


def group_table(frame: pd.DataFrame, column: str) -> list[dict]:
    """Per value of a metadata column (e.g. marker_present): its images, accuracy, and the plain mean of
    each column of :func:`~pipeline.scores.aggregates.group_columns` (the registry's ``group_maps``)."""
    out = []
    for value, group in frame.groupby(column, dropna=False):
        out.append(
            {
                column: value.item() if hasattr(value, "item") else value,
                "count": len(group),
                ACCURACY.name: aggregate_value(group, ACCURACY_COLUMN, ACCURACY),
                **{name: mean_defined(group[name]) for name, _, _ in group_columns()},
            }
        )
    return out


@dataclass
class RunTimes:
    """How long the run took: ``images_scored`` in this invocation's loop of ``loop_seconds``, ``setup_seconds``
    (data generation, training, model load) within ``total_seconds``."""

    images_scored: int
    loop_seconds: float
    total_seconds: float
    setup_seconds: float = 0.0


def finalize_run(
    run_dir: Path,
    settings: Settings,
    config_yaml: str,
    setup,
    samples_schema: pa.Schema,
    images_scored: int,
    loop_seconds: float,
    total_seconds: float,
    setup_seconds: float = 0.0,
    provenance: dict | None = None,
    sanity_check: dict | None = None,
) -> dict:
    """Merge parts into the final tables, write the per-class table and the summary; returns the summary.

    ``settings`` are the run's typed settings; ``config_yaml`` its resolved configuration
    (:func:`pipeline.settings.resolved_config`), recorded in the samples and maps tables. ``setup_seconds``
    (data generation, training, model load) is part of ``total_seconds`` and reported apart; ``provenance``
    (:mod:`pipeline.provenance`: start time, versions, checkpoint hash, dataset fingerprint) gets the finish
    time and goes into the summary and every table's metadata. ``sanity_check`` is the explainer's sanity
    check (:func:`pipeline.faithfulness.sanity.run_sanity_check`), ``summary.json`` → ``sanity_check``.
    """
    origin = {**(provenance or {}), "finished_utc": logs.utc_now_iso(), "run_dir": str(run_dir)}
    choices = definition_choices(settings, setup)
    compact, metadata = table_metadata(origin, choices, config_yaml, setup)
    every_row, strategies = write_samples_table(run_dir, settings, samples_schema, metadata)
    n_rows, n_errors = len(every_row), merge_other_tables(run_dir, settings, compact, metadata)
    frame, n_non_finite = finite_rows(every_row, samples_schema)
    shortcuts = find_shortcuts(frame, settings.report.shortcuts)
    write_hot_spot_pictures(shortcuts, run_dir / "shortcuts", flagged_class_backdrops(frame, shortcuts, setup))
    write_strategy_pictures(strategies, run_dir / "strategies", cluster_backdrops(frame, strategies, setup))
    tau = tau_key(float(settings.scores.taus[0]))
    classes = write_class_table(run_dir, frame, tau, compact)
    summary = {
        "run_dir": str(run_dir),
        "images": n_rows,
        "errors": n_errors,
        "errors_by_stage": errors_by_stage(run_dir) if n_errors else [],
        **dataset_numbers(frame, settings, tau, n_non_finite),
        **timing(RunTimes(images_scored, loop_seconds, total_seconds, setup_seconds)),
        "provenance": origin,
        "maxboxacc_v2": maxboxacc_summary(frame, settings.scores.maxboxacc.thresholds) if len(frame) else None,
        "triage": triage_counts(frame["triage"]),
        "triage_rule": triage_rule_text(settings.report.triage),
        "shortcuts": shortcuts,
        "strategies": strategies,
        "confusions": confusion_pairs(frame),
        "groups": {c: group_table(frame, c) for c in settings.report.group_by if c in frame.columns},
        "model": setup.model.info,
        "target_layer": setup.target_layer,
        "definitions": choices,
        "faithfulness": faithfulness_report.faithfulness_summary(frame, settings.faithfulness) if len(frame) else None,
        "sanity_check": sanity_check,
    }
    summary["localisation_context"] = localisation_context(
        frame, summary, float(settings.scores.taus[0]), scored_area(frame, settings, setup)
    )
    publish(run_dir, summary, frame, classes, settings)
    return summary


def table_metadata(origin: dict, choices: dict, config_yaml: str, setup) -> tuple[dict, dict]:
    """The schema metadata of the tables: ``compact`` (provenance, definitions, versions, target layer) for
    every table, and ``compact`` plus the resolved config and class list for the samples and maps tables
    (1,000 ImageNet names would make an empty errors table 70 KB)."""
    compact = {
        "cam_audit.provenance": dumps_strict(origin),
        "cam_audit.definitions": json.dumps(choices),
        "cam_audit.versions": json.dumps(package_versions()),
        "cam_audit.target_layer": setup.target_layer,
    }
    full = {
        **compact,
        "cam_audit.config": config_yaml,
        "cam_audit.classes": json.dumps(list(setup.classes.names)),
        "cam_audit.class_keys": json.dumps(list(setup.classes.keys)),
    }
    return compact, full


def write_samples_table(
    run_dir: Path, settings: Settings, samples_schema: pa.Schema, metadata: dict
) -> tuple[pd.DataFrame, dict]:
    """``samples.parquet``, written once: the samples parts in id order, with the columns known only over the
    whole run appended (``triage``, ``triage_reason``; ``pred_strategy`` from the strategy clustering of
    :mod:`pipeline.reports.strategies`). Returns every row as a frame and the strategies section of the summary."""
    table = merged_table(list_parts(run_dir / "parts", "samples"), samples_schema, metadata)
    full = table.to_pandas()
    strategies, full[STRATEGY_COLUMN] = find_strategies(full, settings.report.strategies, settings.report.group_by)
    triage = triage_columns(full, settings.report.triage)
    full[["triage", "triage_reason"]] = triage
    appended = {
        **{name: (pa.array(triage[name].to_numpy(), pa.string()), TRIAGE_DESCRIPTIONS[name]) for name in triage},
        **strategy_column(full[STRATEGY_COLUMN]),
    }
    write_table_atomic(with_columns(table, appended), run_dir / "samples.parquet")
    return full, strategies


def merge_other_tables(run_dir: Path, settings: Settings, compact: dict, metadata: dict) -> int:
    """The parts merged into ``errors.parquet`` (and ``maps.parquet``, ``probabilities.parquet``); the error rows."""
    parts_dir = run_dir / "parts"
    n_errors = merge_parts(list_parts(parts_dir, "errors"), run_dir / "errors.parquet", ERRORS_SCHEMA, compact)
    if settings.cam.save_maps:
        from pipeline.reports.saved_maps import MAPS_SCHEMA

        merge_parts(list_parts(parts_dir, "maps"), run_dir / "maps.parquet", MAPS_SCHEMA, metadata)
    if settings.report.save_probabilities:
        from pipeline.export import probabilities

        schema = probabilities.probabilities_schema(
            len(json.loads(metadata["cam_audit.classes"])), settings.report.probabilities_dtype
        )
        merge_parts(list_parts(parts_dir, probabilities.TABLE), run_dir / "probabilities.parquet", schema, metadata)
    return n_errors


def write_class_table(run_dir: Path, frame: pd.DataFrame, tau: str, compact: dict) -> pd.DataFrame:
    """``classes.parquet`` (per true class, with the faithfulness means and column descriptions); returns it."""
    classes = class_table(frame, tau) if len(frame) else pd.DataFrame()
    classes = faithfulness_report.with_class_faithfulness(classes, frame)  # faithfulness.* per true class
    table = with_descriptions(pa.Table.from_pandas(classes, preserve_index=False), class_descriptions(tau))
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in compact.items()}}
    )
    write_table_atomic(table, run_dir / "classes.parquet")
    return classes


def errors_by_stage(run_dir: Path) -> list[dict]:
    """``errors.parquet`` counted by stage and error type."""
    errors = pd.read_parquet(run_dir / "errors.parquet")
    return errors.groupby(["stage", "error_type"]).size().rename("n").reset_index().to_dict("records")


def dataset_numbers(frame: pd.DataFrame, settings: Settings, tau: str, n_non_finite: int) -> dict:
    """The headline numbers over the finite rows: accuracy, both maps' scores, images without a box, boxes
    over ``data.max_boxes``, images whose outputs were not finite (left out of every number)."""
    if not len(frame):
        empty = {"accuracy": float("nan"), "true_class_maps": {}, "predicted_class_maps": {}}
        return {**empty, "images_without_box_in_input": 0, "boxes_over_cap": 0, "non_finite_images": n_non_finite}
    return {
        ACCURACY.name: aggregate_value(frame, ACCURACY_COLUMN, ACCURACY),
        "true_class_maps": dataset_scores(frame, "true", tau),
        "predicted_class_maps": dataset_scores(frame, "pred", tau),
        "images_without_box_in_input": int((frame["n_boxes"] == 0).sum()),
        "boxes_over_cap": int(frame["n_boxes_over_cap"].sum()),  # data.max_boxes: annotated, not scored
        "non_finite_images": n_non_finite,  # NaN/inf logits or maps: null prediction and scores, left out above
    }


def timing(times: RunTimes) -> dict:
    """The summary's speed and durations (the audit's own seconds without the set-up)."""
    loop = times.loop_seconds
    return {
        "images_per_second": times.images_scored / loop if loop > 0 else float("nan"),
        "images_scored_this_invocation": times.images_scored,
        "seconds": round(times.total_seconds - times.setup_seconds, 2),
        "setup_seconds": round(times.setup_seconds, 2),
        "total_seconds": round(times.total_seconds, 2),
    }


def publish(run_dir: Path, summary: dict, frame: pd.DataFrame, classes: pd.DataFrame, settings: Settings) -> None:
    """``summary.json``, the review page, the ``summary`` log event and (in text mode) the printed summary."""
    write_json_atomic(run_dir / "summary.json", summary)
    if settings.report.review_page:
        from pipeline.reports.review_page import render_review_page

        page = render_review_page(summary, frame, classes, run_dir / "overlays", settings.report.review_max_images)
        write_text_atomic(run_dir / "review.html", page)
    text = render_summary(summary)
    logs.event(
        logger,
        "summary",
        text,
        images=summary["images"],
        errors=summary["errors"],
        accuracy=summary["accuracy"],
        true_class_maps=summary["true_class_maps"],
        triage=summary["triage"],
        flagged_classes=summary["shortcuts"].get("flagged", []),
        localisation_context=summary["localisation_context"],
        run_dir=summary["run_dir"],
    )
    if settings.runtime.log_format != "json":  # in json mode the event above is the output
        print(text)


def scored_area(frame: pd.DataFrame, settings, setup) -> np.ndarray:
    """``[N]`` pixels of each row's scoring grid: the network input (``scores.space=input``) or the stored
    image reduced to ``scores.original_max_side`` (``original``)."""
    if settings.scores.space != "original":
        return np.full(len(frame), float(setup.preprocess.size) ** 2)
    width = frame["width"].to_numpy(dtype=np.float64)
    height = frame["height"].to_numpy(dtype=np.float64)
    scale = np.minimum(1.0, settings.scores.original_max_side / np.maximum(width, height))
    return np.round(width * scale) * np.round(height * scale)


def localisation_context(frame: pd.DataFrame, summary: dict, tau: float, area: np.ndarray) -> dict | None:
    """What the fixed-threshold localisation accuracy means for this run (true-class maps).

    ``median_box_to_object_area``: the median over images with a box and a non-empty map of
    ``area(thresholded-map box at tau) / area(annotated boxes)``, the latter ``box_area_fraction x`` the
    scoring grid's pixels (``area`` ``[N]``); above 1 the maps' boxes are wider than the objects, so a low
    GT-known accuracy measures the threshold as much as the model. ``best_tau`` and
    ``gt_known_at_best_tau``: the dataset-best threshold of MaxBoxAccV2 at IoU 0.5 and the box accuracy
    there (Choe et al. 2020; the best of the map's contour boxes), null when ``scores.maxboxacc.enabled``
    is off. ``reading``: one line for the printed summary and the page."""
    key = tau_key(tau)
    columns = [f"true_box_{c}_{key}" for c in ("x1", "y1", "x2", "y2")]
    if not len(frame) or any(c not in frame.columns for c in columns + ["true_box_area_fraction"]):
        return None
    x1, y1, x2, y2 = (pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64) for c in columns)
    fraction = pd.to_numeric(frame["true_box_area_fraction"], errors="coerce").to_numpy(dtype=np.float64)
    ratio = (x2 - x1) * (y2 - y1) / (fraction * area)
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    median = float(np.median(ratio)) if len(ratio) else float("nan")
    maxbox = summary.get("maxboxacc_v2") or {}
    at_tau = (summary.get("true_class_maps") or {}).get("gt_known_localisation_accuracy", float("nan"))
    context = {
        "tau": tau,
        "gt_known_at_tau": at_tau,
        "best_tau": maxbox.get("best_tau_iou50"),
        "gt_known_at_best_tau": maxbox.get("maxboxacc_iou50"),
        "median_box_to_object_area": median,
        "images": int(len(ratio)),
    }
    if not np.isfinite(median):
        context["reading"] = "no image has both a box and a non-empty true-class map"
        return context
    if median > 1.5:
        reading = (
            f"maps are wider than the objects: at tau {tau:g} the map's box is {median:.1f} x the object's (median)"
        )
    elif median < 1 / 1.5:
        reading = (
            f"maps are narrower than the objects: at tau {tau:g} the map's box is {median:.2f} x the object's (median)"
        )
    else:
        reading = f"at tau {tau:g} the map's box is about the object's size ({median:.2f} x, median)"
    if context["best_tau"] is not None and np.isfinite(context["gt_known_at_best_tau"]):
        reading += (
            f"; GT-known localisation {100 * at_tau:.1f} % at tau {tau:g}, "
            f"{100 * context['gt_known_at_best_tau']:.1f} % at the dataset-best tau {context['best_tau']:.2f} (MaxBoxAccV2)"
        )
    else:
        reading += "; the dataset-best tau needs scores.maxboxacc.enabled=true"
    context["reading"] = reading
    return context


def flagged_class_backdrops(frame: pd.DataFrame, shortcuts: dict, setup) -> dict:
    """The mean network input of each flagged predicted class's images (the hot-spot picture's backdrop)."""
    from pipeline.data.backdrop import mean_input

    backdrops = {}
    for name in shortcuts.get("flagged", []):
        paths = frame.loc[frame["pred_name"] == name, "path"].tolist()
        backdrop = mean_input(paths, setup.preprocess)
        if backdrop is not None:
            backdrops[name] = backdrop
    return backdrops


def finite_rows(frame: pd.DataFrame, schema: pa.Schema) -> tuple[pd.DataFrame, int]:
    """The rows whose model outputs were finite (every dataset number is over those) and how many were not.

    A non-finite row has null predictions and scores, so its boolean columns read as objects; the rows kept
    get their boolean dtype back."""
    if "non_finite_output" not in frame.columns:
        return frame, 0
    flagged = frame["non_finite_output"].astype(bool)
    kept = frame.loc[~flagged].copy()
    if flagged.any():
        for field in schema:
            if pa.types.is_boolean(field.type) and field.name in kept.columns and kept[field.name].dtype == object:
                kept[field.name] = kept[field.name].astype(bool)
    return kept.reset_index(drop=True), int(flagged.sum())


def maxboxacc_summary(frame: pd.DataFrame, thresholds: int) -> dict | None:
    """MaxBoxAccV2 of the true-class maps from the per-image state in the rows (None when off);
    ``thresholds`` is ``scores.maxboxacc.thresholds``."""
    if "true_maxboxacc_best_iou" not in frame.columns:
        return None
    from pipeline.scores.maxboxacc import maxboxacc_from_best_iou

    best = np.stack(frame["true_maxboxacc_best_iou"].to_numpy())
    return maxboxacc_from_best_iou(best, (frame["n_boxes"] > 0).to_numpy(), thresholds)


TRIAGE_DESCRIPTIONS = {
    "triage": "which images need a look, and why: "
    + ", ".join(CATEGORIES)
    + " (pipeline.reports.triage; added when the run finishes)",
    "triage_reason": "the evidence behind the triage category in one line (the judged map's pointing game and excess energy, or why it cannot be judged)",
}


def triage_columns(frame: pd.DataFrame, settings: TriageSettings) -> pd.DataFrame:
    """The ``triage`` category and ``triage_reason`` of every row (:mod:`pipeline.reports.triage`)."""
    if len(frame):
        return triage_with_reasons(frame, settings)
    return pd.DataFrame({"triage": pd.Series([], dtype=object), "triage_reason": pd.Series([], dtype=object)})


def with_columns(table: pa.Table, columns: dict[str, tuple[pa.Array, str]]) -> pa.Table:
    """``table`` with ``columns`` (name -> (values, description)) appended, each described in its field's
    metadata; a column of that name already there is replaced (its schema metadata kept)."""
    for name, (values, description) in columns.items():
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(pa.field(name, values.type, metadata={"description": description}), values)
    return table


def confusion_pairs(frame: pd.DataFrame, top: int = 10) -> list[dict]:
    """The most frequent (true -> predicted) confusions with the mean energy in box and excess energy of
    their predicted-class maps (low: the model looked elsewhere; high: it confused what it looked at)."""
    wrong = frame[~frame["correct"].astype(bool)] if len(frame) else frame
    if not len(wrong):
        return []
    grouped = wrong.groupby(["label_name", "pred_name"]).agg(
        images=("id", "size"),
        pred_energy_in_box=("pred_energy_in_box", "mean"),
        pred_excess_energy=("pred_excess_energy", "mean"),
    )
    grouped = (
        grouped.reset_index()
        .sort_values(["images", "label_name", "pred_name"], ascending=[False, True, True])
        .head(top)
    )
    return [
        {
            "true": str(r.label_name),
            "pred": str(r.pred_name),
            "images": int(r.images),
            "pred_energy_in_box": float(r.pred_energy_in_box),
            "pred_excess_energy": float(r.pred_excess_energy),
        }
        for r in grouped.itertuples()
    ]


def pct(value) -> str:
    """A share as a percentage with one decimal, ``n/a`` when undefined."""
    return "n/a" if value is None or value != value else f"{100 * value:.1f}%"


def render_summary(summary: dict) -> str:
    """A few lines a person reads at the end of the run (a failed sanity check first)."""
    lines = [
        f"Audit of {summary['images']} images in {summary['seconds']:.1f}s ({summary['images_per_second']:.1f} images/s scored), "
        f"{summary['errors']} skipped",
        headline_line(summary),
    ]
    lines += setup_lines(summary) + data_lines(summary) + findings_lines(summary)
    lines += strategy_lines(summary.get("strategies"))
    first, faithfulness = faithfulness_report.summary_lines(summary)  # a failed sanity check is printed first
    return "\n".join(first + lines + faithfulness + [f"  report: {summary['run_dir']}"])


def setup_lines(summary: dict) -> list[str]:
    """Random weights, the input geometry, the layer and the coordinate space."""
    lines = []
    if (summary.get("model") or {}).get("random_weights"):
        lines.append(
            f"  WARNING: model {summary['model'].get('name')} has random weights (model.allow_random_weights=true): "
            "its maps and scores describe no trained model"
        )
    definitions = summary.get("definitions") or {}
    pre = definitions.get("preprocess") or {}
    if pre:
        resize_crop = pre.get("mode") == "resize_crop"
        geometry = f"{pre.get('resize_size')} -> {pre.get('size')}" if resize_crop else str(pre.get("size"))
        from_model = sorted(k for k, v in (pre.get("sources") or {}).items() if v == "model")
        origin = f" ({', '.join(from_model)} from {pre.get('model_metadata_from')})" if from_model else ""
        space = str(definitions.get("coordinate_space", "input")).split(":")[0]
        lines.append(
            f"  input: {pre.get('mode')} {geometry}, {pre.get('interpolation')}{origin}; "
            f"layer {summary.get('target_layer')}; scores in {space} coordinates"
        )
    return lines


def data_lines(summary: dict) -> list[str]:
    """MaxBoxAccV2, boxes over the cap, non-finite images, skipped samples, the group breakdowns."""
    lines = []
    if summary.get("maxboxacc_v2"):
        box = summary["maxboxacc_v2"]
        lines.append(
            f"  MaxBoxAccV2 {100 * box['maxboxacc_v2']:.1f} (IoU 0.3/0.5/0.7: {100 * box['maxboxacc_iou30']:.1f} / "
            f"{100 * box['maxboxacc_iou50']:.1f} / {100 * box['maxboxacc_iou70']:.1f})"
        )
    if summary.get("boxes_over_cap"):
        lines.append(
            f"  {summary['boxes_over_cap']} annotated boxes beyond data.max_boxes were not scored (column n_boxes_over_cap)"
        )
    if summary.get("non_finite_images"):
        lines.append(
            f"  {summary['non_finite_images']} images gave non-finite logits or maps: no prediction, no scores "
            "(column non_finite_output), left out of every number above"
        )
    lines += [f"  skipped at {e['stage']}: {e['n']} x {e['error_type']}" for e in summary["errors_by_stage"]]
    for column, rows in summary["groups"].items():
        lines += [f"  {column}={row[column]}: {row['count']} images, {group_numbers(row)}" for row in rows]
    return lines


def group_numbers(row: dict) -> str:
    """One summary group's accuracy and means (:func:`group_table`), each with its map and label."""
    numbers = [f"accuracy {format_number(row.get(ACCURACY.name), ACCURACY)}"]
    for name, map_name, score in group_columns():
        shown = display(score)
        numbers.append(f"{MAP_SHORT[map_name]} {shown.label} {format_number(row.get(name), shown)}")
    return ", ".join(numbers)


def findings_lines(summary: dict) -> list[str]:
    """Localisation in context, triage and its rule, the shortcut finder's verdicts."""
    lines = []
    if summary.get("localisation_context"):
        lines.append(f"  localisation: {summary['localisation_context']['reading']}")
    if summary.get("triage"):
        lines.append("  triage: " + ", ".join(f"{name} {count}" for name, count in summary["triage"].items() if count))
        if summary.get("triage_rule"):
            lines.append(f"  triage rule: {summary['triage_rule']}")
    shortcuts = summary.get("shortcuts") or {}
    if shortcuts.get("collapse"):
        lines.append(f"  WARNING: {shortcuts['collapse']['message']}")
    for entry in (e for e in shortcuts.get("classes", []) if e["flagged"]):
        spot = entry.get("hot_spot") or {}
        where = f"; off-box evidence: {spot['verdict']}" if spot.get("verdict") else ""
        lines.append(
            f"  shortcut suspect: predicted {entry['pred_name']!r} ({entry['images']} images): "
            f"{pct(entry['off_object_peak_share'])} of its maps peak off the object against "
            f"{pct(entry['others_off_object_peak_share'])} for the other classes, "
            f"Holm-adjusted p {entry['p_holm']:.3g}{where}"
        )
    if shortcuts and not shortcuts.get("flagged"):
        lines.append(f"  shortcut finder: no predicted class flagged ({shortcuts.get('tested', 0)} tested)")
    return lines
