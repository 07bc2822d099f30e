"""Tonight's audit against last night's: what changed, on the images both runs scored.

``compare_runs(baseline, current)`` reads two finished run folders and returns:
- ``definitions``: every definition choice that differs (method, class score, coordinate space,
  preprocessing, taus, ...): when any differs, score deltas measure the change of definition as much as the
  change of the model, and the report says so first;
- ``samples``: one row per image in both runs: prediction before and after, ``change`` (``fixed``: wrong ->
  right, ``broke``: right -> wrong, ``same``), the true-class map's energy in box and lift before, after and
  their difference, and how far its peak moved (pixels of the scoring grid; NaN when either map is empty, or
  when the coordinate space or the preprocessing differ);
- ``classes``: per true class, accuracy and mean true-class energy lift before and after, sorted by the
  largest drop in accuracy, then in lift;
- ``overall``: the dataset numbers of ``finalize.dataset_scores`` for both runs on the common images, and
  their differences; counts of images only in one run.
Everything is computed from ``samples.parquet`` (no model, no images), so it is cheap on any size of run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.reports.finalize import dataset_scores
from pipeline.scores import tau_key

# Definition choices that do not change what the numbers mean (where a value came from, not the value).
IGNORED_CHOICES = ("preprocess.sources", "preprocess.model_metadata_from")


def read_run(run_dir: Path) -> tuple[pd.DataFrame, dict]:
    """A finished run's rows and its definition choices (from the Parquet metadata)."""
    path = Path(run_dir) / "samples.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} holds no samples.parquet: not a finished audit (resume it first)")
    metadata = pq.read_schema(path).metadata or {}
    definitions = json.loads(metadata.get(b"cam_audit.definitions", b"{}"))
    return pd.read_parquet(path), definitions


def _flatten(choices: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in choices.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def definition_differences(baseline: dict, current: dict) -> list[dict]:
    """``[{choice, baseline, current}]`` for every definition choice that differs."""
    before, after = _flatten(baseline), _flatten(current)
    return [{"choice": key, "baseline": before.get(key), "current": after.get(key)}
            for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key) and not key.startswith(IGNORED_CHOICES)]


def sample_changes(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Per image in both runs (inner join on ``id``): prediction, correctness and true-class map changes."""
    columns = ["id", "label", "label_name", "pred", "pred_name", "correct", "true_energy_in_box", "true_energy_lift",
               "true_peak_row", "true_peak_col"]
    joined = before[columns].merge(after[columns], on="id", suffixes=("_baseline", "_current"), validate="one_to_one")
    change = np.where(~joined["correct_baseline"] & joined["correct_current"], "fixed",
                      np.where(joined["correct_baseline"] & ~joined["correct_current"], "broke", "same"))
    out = pd.DataFrame({
        "id": joined["id"], "label": joined["label_baseline"], "label_name": joined["label_name_baseline"],
        "pred_baseline": joined["pred_name_baseline"], "pred_current": joined["pred_name_current"], "change": change,
        "true_energy_in_box_baseline": joined["true_energy_in_box_baseline"],
        "true_energy_in_box_current": joined["true_energy_in_box_current"],
        "true_energy_in_box_delta": joined["true_energy_in_box_current"] - joined["true_energy_in_box_baseline"],
        "true_energy_lift_delta": joined["true_energy_lift_current"] - joined["true_energy_lift_baseline"],
        "true_peak_shift_px": np.hypot(joined["true_peak_row_current"] - joined["true_peak_row_baseline"],
                                       joined["true_peak_col_current"] - joined["true_peak_col_baseline"]),
    })
    return out.sort_values("id").reset_index(drop=True)


def class_changes(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Per true class over the common images: accuracy and mean true-class lift, before and after."""
    def per_class(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.groupby(["label", "label_name"]).agg(count=("id", "size"), accuracy=("correct", "mean"),
                                                          true_energy_lift=("true_energy_lift", "mean"))

    table = per_class(before).merge(per_class(after), left_index=True, right_index=True, suffixes=("_baseline", "_current")).reset_index()
    table["accuracy_delta"] = table["accuracy_current"] - table["accuracy_baseline"]
    table["true_energy_lift_delta"] = table["true_energy_lift_current"] - table["true_energy_lift_baseline"]
    table = table.drop(columns=["count_current"]).rename(columns={"count_baseline": "count"})
    return table.sort_values(["accuracy_delta", "true_energy_lift_delta", "label"]).reset_index(drop=True)


def compare_runs(baseline_dir: Path, current_dir: Path) -> dict:
    """Compare two finished runs; see the module docstring for what comes back."""
    before_all, before_definitions = read_run(baseline_dir)
    after_all, after_definitions = read_run(current_dir)
    common = sorted(set(before_all["id"]) & set(after_all["id"]))
    before = before_all[before_all["id"].isin(common)].sort_values("id")
    after = after_all[after_all["id"].isin(common)].sort_values("id")
    samples = sample_changes(before, after)
    differences = definition_differences(before_definitions, after_definitions)
    if any(d["choice"].startswith(("coordinate_space", "preprocess.")) for d in differences):
        samples["true_peak_shift_px"] = np.nan  # peaks of two different pixel grids: no distance between them
    overall: dict = {"images_compared": len(common), "only_in_baseline": int((~before_all["id"].isin(common)).sum()),
                     "only_in_current": int((~after_all["id"].isin(common)).sum()),
                     "fixed": int((samples["change"] == "fixed").sum()), "broke": int((samples["change"] == "broke").sum())}
    if common:
        for name, frame, definitions in (("baseline", before, before_definitions), ("current", after, after_definitions)):
            overall[name] = {"accuracy": float(frame["correct"].mean()), **dataset_scores(frame, "true", tau_key(float((definitions.get("taus") or [0.15])[0])))}
        overall["delta"] = {key: overall["current"][key] - overall["baseline"][key] for key in overall["baseline"]}
    return {"baseline": str(baseline_dir), "current": str(current_dir),
            "definitions": differences,
            "overall": overall, "samples": samples, "classes": class_changes(before, after) if common else pd.DataFrame()}


def render_comparison(result: dict, top: int = 5) -> str:
    """The lines a person reads: what differs in definitions, the headline deltas, who broke, which classes."""
    overall = result["overall"]
    lines = [f"Comparison: {result['baseline']} -> {result['current']} ({overall['images_compared']} common images, "
             f"{overall['only_in_baseline']} only in the baseline, {overall['only_in_current']} only in the current run)"]
    if result["definitions"]:
        lines.append("  DEFINITIONS CHANGED (score deltas mix the model's change with these):")
    for entry in result["definitions"]:
        lines.append(f"    {entry['choice']}: {entry['baseline']!r} -> {entry['current']!r}")
    if "delta" in overall:
        before, after = overall["baseline"], overall["current"]
        for key, label in (("accuracy", "accuracy"), ("energy_in_box", "true-class energy in box"), ("energy_lift", "energy lift"),
                           ("pointing_game_accuracy", "pointing game"), ("gt_known_localisation_accuracy", "GT-known loc.")):
            lines.append(f"  {label}: {before[key]:.3f} -> {after[key]:.3f} ({after[key] - before[key]:+.3f})")
    lines.append(f"  {overall['broke']} images broke (right -> wrong), {overall['fixed']} fixed (wrong -> right)")
    samples = result["samples"]
    for _, row in samples[samples["change"] == "broke"].head(top).iterrows():
        lines.append(f"    broke: {row['id']} ({row['label_name']}) now predicted {row['pred_current']}")
    classes = result["classes"]
    if len(classes):
        for _, row in classes.head(top).iterrows():
            if row["accuracy_delta"] < 0 or row["true_energy_lift_delta"] < 0:
                lines.append(f"    class {row['label_name']}: accuracy {row['accuracy_baseline']:.2f} -> {row['accuracy_current']:.2f}, "
                             f"lift {row['true_energy_lift_baseline']:.2f} -> {row['true_energy_lift_current']:.2f}")
    return "\n".join(lines)
