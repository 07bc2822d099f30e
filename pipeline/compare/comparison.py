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
- ``tests``: paired statistics on the common images (:mod:`pipeline.reports.paired_stats`): McNemar's exact
  test for accuracy, paired bootstrap confidence intervals for the true-class map numbers (:data:`METRICS`);
- ``gates``: for each ``--max-drop metric=value``, whether it tripped: the drop is beyond the threshold
  **and** significant (two-sided, level ``alpha``); per class (``--max-class-drop``) the same with Holm's
  step-down correction over the classes tested (those with at least ``min_class_images`` images), so that a
  class of three images never raises an alarm.
- ``coverage``: how much of its dataset each run audited and skipped, and how many of the baseline's audited
  images the current run audited again (:func:`coverage`); coverage gates (``--min-coverage``,
  ``--min-reference-coverage``, ``--max-skipped-rise``) compare these counts with thresholds: a night that
  audited 60 of 300 images is a failed night, not a smaller one;
- ``verdict``: ``pass`` or ``fail``, and ``tripped``: the gates that tripped, each with its numbers.
- ``data``: what :func:`check_same_data` found about the data (said first): the two runs must have audited
  the same data where their ids overlap. Different true labels of common ids, or different class lists, are a
  refusal (:class:`~pipeline.errors.ConfigError`, exit 2): every paired number would compare two datasets.
  The same classes in another order are aligned by key and name (and said); differing dataset fingerprints
  (``summary.json``) with agreeing labels are said, not refused (another ``data.limit``, an added image).
  A gate on a metric that cannot be computed for both runs is refused too, never "passed".
Everything is computed from ``samples.parquet`` (no model, no images), so it is cheap on any size of run.
:func:`write_comparison` writes ``compare.json``, ``samples_diff.parquet`` and ``classes_diff.parquet``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import ConfigError
from pipeline.reports.finalize import dataset_scores, write_json_atomic
from pipeline.reports.paired_stats import (
    class_mean_statistic,
    holm_adjusted,
    mcnemar_exact,
    mean_statistic,
    paired_bootstrap,
)
from pipeline.reports.parts import write_table_atomic
from pipeline.reports.schema import with_descriptions
from pipeline.scores import tau_key

# Definition choices that do not change what the numbers mean (where a value came from, not the value).
IGNORED_CHOICES = ("preprocess.sources", "preprocess.model_metadata_from")
# Definition texts reworded without a change of meaning: choice -> {old wording: new wording}. A run written
# before the rewording must not show "DEFINITIONS CHANGED" against every later night (a pinned reference).
REWORDED = {
    "empty_map": {
        "constant after ReLU: peak-based scores NaN": "constant after ReLU: peak-based scores null (no peak), "
        "counted in empty_maps",  # issue 20.6: the tables write null, not NaN
    },
}


def read_run(run_dir: Path) -> tuple[pd.DataFrame, dict]:
    """A finished run's rows and its definition choices (from the Parquet metadata)."""
    path = Path(run_dir) / "samples.parquet"
    if not path.is_file() or not (Path(run_dir) / "summary.json").is_file():
        raise FileNotFoundError(
            f"{run_dir} holds no samples.parquet and summary.json: not a finished audit (resume it first)"
        )
    metadata = pq.read_schema(path).metadata or {}
    definitions = json.loads(metadata.get(b"cam_audit.definitions", b"{}"))
    return pd.read_parquet(path), definitions


def run_identity(run_dir: Path) -> dict:
    """What a finished run says about its data: ``classes`` (``[(key, name), ...]`` in output order, from the
    samples table's metadata; None when absent) and ``dataset`` (``summary.json``'s dataset fingerprint; None
    when absent)."""
    metadata = pq.read_schema(Path(run_dir) / "samples.parquet").metadata or {}
    classes = None
    if b"cam_audit.classes" in metadata:
        names = json.loads(metadata[b"cam_audit.classes"])
        keys = json.loads(metadata.get(b"cam_audit.class_keys", b"null")) or names
        classes = [(str(key), str(name)) for key, name in zip(keys, names)]
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    except ValueError:
        summary = {}
    dataset = ((summary.get("provenance") or {}).get("dataset") or {}) if isinstance(summary, dict) else {}
    return {"classes": classes, "dataset": dataset or None}


def _realign(frame: pd.DataFrame, mapping: np.ndarray) -> pd.DataFrame:
    """``frame`` with its class indices (``label``, ``pred``, the top-k maps' ``*_class``) mapped through
    ``mapping`` (current index -> baseline index); nulls stay null."""
    frame = frame.copy()
    for column in [c for c in frame.columns if c in ("label", "pred") or c.endswith("_class")]:
        values = pd.to_numeric(frame[column], errors="coerce")
        known = values.notna()
        mapped = pd.Series(pd.NA, index=frame.index, dtype="Int64")
        mapped[known] = mapping[values[known].astype(np.int64).to_numpy()]
        frame[column] = mapped if not known.all() else mapped.astype(np.int64)
    return frame


def check_same_data(
    baseline_dir: Path, current_dir: Path, before: pd.DataFrame, after: pd.DataFrame
) -> tuple[list[str], pd.DataFrame]:
    """Whether the two runs audited the same data where their ids overlap; returns what to say first and the
    current rows (with class indices aligned to the baseline's when the same classes come in another order).

    Raises :class:`~pipeline.errors.ConfigError` naming the current run's ``samples.parquet`` when the class
    lists differ (other classes) or a common id has another true label.
    """
    notes: list[str] = []
    table = str(Path(current_dir) / "samples.parquet")
    first, second = run_identity(baseline_dir), run_identity(current_dir)
    if first["classes"] is not None and second["classes"] is not None and first["classes"] != second["classes"]:
        if sorted(first["classes"]) != sorted(second["classes"]) or len(set(first["classes"])) != len(first["classes"]):
            only_before = sorted({name for _, name in first["classes"]} - {name for _, name in second["classes"]})
            only_after = sorted({name for _, name in second["classes"]} - {name for _, name in first["classes"]})
            raise ConfigError(
                table,
                f"the two runs have different class lists ({len(first['classes'])} and {len(second['classes'])} "
                f"classes; only in the baseline: {', '.join(only_before[:5]) or '-'}; only in the current run: "
                f"{', '.join(only_after[:5]) or '-'}; or keys and names paired otherwise): their labels and "
                "predictions do not mean the same; compare runs made with the same class list",
            )
        position = {pair: index for index, pair in enumerate(first["classes"])}
        mapping = np.array([position[pair] for pair in second["classes"]], dtype=np.int64)
        after = _realign(after, mapping)
        moved = int((mapping != np.arange(len(mapping))).sum())
        notes.append(
            f"the class lists hold the same {len(mapping)} classes in another order ({moved} moved): the current "
            "run's class indices are aligned to the baseline's by key and name"
        )
    joined = before[["id", "label", "label_name"]].merge(after[["id", "label", "label_name"]], on="id")
    other = joined[
        (joined["label_x"].astype("int64") != joined["label_y"].astype("int64"))
        | (joined["label_name_x"] != joined["label_name_y"])
    ]
    if len(other):
        example = other.iloc[0]
        raise ConfigError(
            table,
            f"{len(other)} of {len(joined)} common ids have another true label (e.g. {example['id']!r}: "
            f"{example['label_name_x']!r} in the baseline, {example['label_name_y']!r} now): the runs audited "
            "different data under the same ids; every paired number would compare two datasets",
        )
    if first["dataset"] and second["dataset"] and first["dataset"].get("sha256") != second["dataset"].get("sha256"):
        notes.append(
            f"the dataset fingerprints differ (baseline {first['dataset'].get('samples', '?')} samples, "
            f"{str(first['dataset'].get('sha256'))[:12]}; current {second['dataset'].get('samples', '?')} samples, "
            f"{str(second['dataset'].get('sha256'))[:12]}): the runs audited different data (other images, a "
            f"different data.limit); only the {len(joined)} common ids, whose true labels agree, are compared"
        )
    return notes, after


def read_pair(baseline_dir: Path, current_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict, list[str]]:
    """Both runs' rows and definition choices, checked to be of the same data (:func:`check_same_data`),
    and what that check found."""
    before_all, before_definitions = read_run(baseline_dir)
    after_all, after_definitions = read_run(current_dir)
    notes, after_all = check_same_data(baseline_dir, current_dir, before_all, after_all)
    return before_all, after_all, before_definitions, after_definitions, notes


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
    """``[{choice, baseline, current}]`` for every definition choice that differs (a text only reworded,
    :data:`REWORDED`, does not)."""
    before, after = _flatten(baseline), _flatten(current)
    for choices in (before, after):
        for key, wordings in REWORDED.items():
            if isinstance(choices.get(key), str):
                choices[key] = wordings.get(choices[key], choices[key])
    return [
        {"choice": key, "baseline": before.get(key), "current": after.get(key)}
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key) and not key.startswith(IGNORED_CHOICES)
    ]


def sample_changes(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Per image in both runs (inner join on ``id``): prediction, correctness and true-class map changes."""
    columns = [
        "id",
        "label",
        "label_name",
        "pred",
        "pred_name",
        "correct",
        "true_energy_in_box",
        "true_energy_lift",
        "true_peak_row",
        "true_peak_col",
    ]
    joined = before[columns].merge(after[columns], on="id", suffixes=("_baseline", "_current"), validate="one_to_one")
    change = np.where(
        ~joined["correct_baseline"] & joined["correct_current"],
        "fixed",
        np.where(joined["correct_baseline"] & ~joined["correct_current"], "broke", "same"),
    )
    out = pd.DataFrame(
        {
            "id": joined["id"],
            "label": joined["label_baseline"],
            "label_name": joined["label_name_baseline"],
            "pred_baseline": joined["pred_name_baseline"],
            "pred_current": joined["pred_name_current"],
            "change": change,
            "true_energy_in_box_baseline": joined["true_energy_in_box_baseline"],
            "true_energy_in_box_current": joined["true_energy_in_box_current"],
            "true_energy_in_box_delta": joined["true_energy_in_box_current"] - joined["true_energy_in_box_baseline"],
            "true_energy_lift_delta": joined["true_energy_lift_current"] - joined["true_energy_lift_baseline"],
            "true_peak_shift_px": np.hypot(
                joined["true_peak_row_current"] - joined["true_peak_row_baseline"],
                joined["true_peak_col_current"] - joined["true_peak_col_baseline"],
            ),
        }
    )
    return out.sort_values("id").reset_index(drop=True)


SIDES = ("baseline", "current")
COLUMN_KINDS = ("baseline", "current", "delta")


def _numeric(values: pd.Series) -> np.ndarray:
    """A column as float64 with NaN for null (booleans as 0 / 1)."""
    return pd.to_numeric(values.astype("Float64"), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def class_changes(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Per true class over the common images (both frames sorted by id, the same ids): accuracy and mean
    true-class lift before and after, each over the images where the value is defined in both runs (an image
    without a prediction in one run is left out of both), so that the delta is the paired difference that the
    per-class tests (:func:`class_tests`) test and the same number as theirs."""
    frame = pd.DataFrame(
        {"label": before["label"].to_numpy(), "label_name": before["label_name"].to_numpy(), "id": before["id"]}
    )
    for column, name in (("correct", "accuracy"), ("true_energy_lift", "true_energy_lift")):
        x, y = _numeric(before[column]), _numeric(after[column])
        both = ~np.isnan(x) & ~np.isnan(y)
        frame[f"{name}_baseline"], frame[f"{name}_current"] = np.where(both, x, np.nan), np.where(both, y, np.nan)
    table = frame.groupby(["label", "label_name"]).agg(
        count=("id", "size"),
        **{f"{n}_{side}": (f"{n}_{side}", "mean") for n in ("accuracy", "true_energy_lift") for side in SIDES},
    )
    table = table.reset_index()
    for name in ("accuracy", "true_energy_lift"):
        table[f"{name}_delta"] = table[f"{name}_current"] - table[f"{name}_baseline"]
    order = ["label", "label_name", "count"] + [
        f"{n}_{c}" for n in ("accuracy", "true_energy_lift") for c in COLUMN_KINDS
    ]
    return table[order].sort_values(["accuracy_delta", "true_energy_lift_delta", "label"]).reset_index(drop=True)


def compare_runs(baseline_dir: Path, current_dir: Path) -> dict:
    """Compare two finished runs; see the module docstring for what comes back."""
    before_all, after_all, before_definitions, after_definitions, data_notes = read_pair(baseline_dir, current_dir)
    common = sorted(set(before_all["id"]) & set(after_all["id"]))
    before = before_all[before_all["id"].isin(common)].sort_values("id")
    after = after_all[after_all["id"].isin(common)].sort_values("id")
    samples = sample_changes(before, after)
    differences = definition_differences(before_definitions, after_definitions)
    if any(d["choice"].startswith(("coordinate_space", "preprocess.")) for d in differences):
        samples["true_peak_shift_px"] = np.nan  # peaks of two different pixel grids: no distance between them
    overall: dict = {
        "images_compared": len(common),
        "only_in_baseline": int((~before_all["id"].isin(common)).sum()),
        "only_in_current": int((~after_all["id"].isin(common)).sum()),
        "fixed": int((samples["change"] == "fixed").sum()),
        "broke": int((samples["change"] == "broke").sum()),
    }
    if common:
        for name, frame, definitions in (
            ("baseline", before, before_definitions),
            ("current", after, after_definitions),
        ):
            overall[name] = {
                "accuracy": float(frame["correct"].mean()),
                **dataset_scores(frame, "true", tau_key(float((definitions.get("taus") or [0.15])[0]))),
            }
        overall["delta"] = {key: overall["current"][key] - overall["baseline"][key] for key in overall["baseline"]}
    return {
        "baseline": str(baseline_dir),
        "current": str(current_dir),
        "data": data_notes,
        "definitions": differences,
        "overall": overall,
        "samples": samples,
        "classes": class_changes(before, after) if common else pd.DataFrame(),
    }


def render_comparison(result: dict, top: int = 5) -> str:
    """The lines a person reads: what differs in definitions, the headline deltas, who broke, which classes."""
    overall = result["overall"]
    lines = [
        f"Comparison: {result['baseline']} -> {result['current']} ({overall['images_compared']} common images, "
        f"{overall['only_in_baseline']} only in the baseline, {overall['only_in_current']} only in the current run)"
    ]
    for note in result.get("data", []):
        lines.append(f"  DATA: {note}")
    if result["definitions"]:
        lines.append("  DEFINITIONS CHANGED (score deltas mix the model's change with these):")
    for entry in result["definitions"]:
        lines.append(f"    {entry['choice']}: {entry['baseline']!r} -> {entry['current']!r}")
    if "delta" in overall:
        before, after = overall["baseline"], overall["current"]
        for key, label in (
            ("accuracy", "accuracy"),
            ("energy_in_box", "true-class energy in box"),
            ("energy_lift", "energy lift"),
            ("pointing_game_accuracy", "pointing game"),
            ("gt_known_localisation_accuracy", "GT-known loc."),
        ):
            lines.append(f"  {label}: {before[key]:.3f} -> {after[key]:.3f} ({after[key] - before[key]:+.3f})")
    lines.append(f"  {overall['broke']} images broke (right -> wrong), {overall['fixed']} fixed (wrong -> right)")
    samples = result["samples"]
    for _, row in samples[samples["change"] == "broke"].head(top).iterrows():
        lines.append(f"    broke: {row['id']} ({row['label_name']}) now predicted {row['pred_current']}")
    classes = result["classes"]
    if len(classes):
        for _, row in classes.head(top).iterrows():
            if row["accuracy_delta"] < 0 or row["true_energy_lift_delta"] < 0:
                lines.append(
                    f"    class {row['label_name']}: accuracy {row['accuracy_baseline']:.2f} -> {row['accuracy_current']:.2f}, "
                    f"lift {row['true_energy_lift_baseline']:.2f} -> {row['true_energy_lift_current']:.2f}"
                )
    return "\n".join(lines)


# Metrics that can be tested and gated: name -> (samples column, statistic). The column name holds
# ``{tau}`` where the first tau's key goes. accuracy is tested with McNemar's exact test (and also bootstrapped).
METRICS = {
    "accuracy": ("correct", mean_statistic),
    "true_energy_in_box": ("true_energy_in_box", mean_statistic),
    "true_energy_lift": ("true_energy_lift", mean_statistic),
    "true_excess_energy": ("true_excess_energy", mean_statistic),
    "true_pointing_game": ("true_pointing_hit", class_mean_statistic),
    "true_gt_known_localisation": ("true_localised_{tau}", mean_statistic),
    "pred_energy_in_box": ("pred_energy_in_box", mean_statistic),
}


def parse_max_drops(entries: list[str]) -> dict[str, float]:
    """``["accuracy=0.01", ...]`` -> ``{"accuracy": 0.01}``; ValueError naming a bad entry or metric."""
    out = {}
    for entry in entries or []:
        name, sep, value = entry.partition("=")
        if not sep or name not in METRICS:
            raise ValueError(f"--max-drop {entry!r}: use METRIC=VALUE with METRIC one of {', '.join(METRICS)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"--max-drop {entry!r}: {value!r} is not a number") from None
        if not out[name] >= 0:
            raise ValueError(f"--max-drop {entry!r}: the allowed drop must be >= 0")
    return out


def _paired_values(before: pd.DataFrame, after: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``before``/``after`` values of ``column`` and class indices on the images where both are defined
    (both frames sorted by id, same ids)."""
    x = pd.to_numeric(before[column].astype("Float64"), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    y = pd.to_numeric(after[column].astype("Float64"), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    both = ~np.isnan(x) & ~np.isnan(y)
    labels = np.unique(before["label"].to_numpy(), return_inverse=True)[1]
    return x[both], y[both], labels[both]


def normal_p(delta: float, standard_error: float) -> float:
    """Two-sided p of ``delta`` under a normal approximation with ``standard_error`` (bootstrap-z)."""
    if not standard_error > 0:
        return 1.0 if delta == 0 or delta != delta else 0.0
    return math.erfc(abs(delta) / standard_error / math.sqrt(2.0))


def paired_tests(before: pd.DataFrame, after: pd.DataFrame, tau: str, resamples: int, seed: int, alpha: float) -> dict:
    """Every metric's change on the common images: point delta, percentile CI at ``1 - alpha`` (paired
    bootstrap), and for accuracy McNemar's exact p. ``significant``: the CI excludes 0 (accuracy: p < alpha)."""
    tests = {}
    for name, (template, statistic) in METRICS.items():
        column = template.format(tau=tau)
        if column not in before.columns or column not in after.columns:
            continue
        x, y, labels = _paired_values(before, after, column)
        result = paired_bootstrap(x, y, labels, statistic, resamples=resamples, seed=seed, confidence=1 - alpha)
        result.update(
            baseline=float(statistic(x, labels, np.arange(len(x))[None])[0]) if len(x) else float("nan"),
            current=float(statistic(y, labels, np.arange(len(y))[None])[0]) if len(y) else float("nan"),
            significant=bool(result["high"] < 0 or result["low"] > 0),
            test="paired bootstrap, percentile interval",
        )
        if name == "accuracy":
            broke, fixed = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
            p = mcnemar_exact(broke, fixed)
            result.update(broke=broke, fixed=fixed, p=p, significant=bool(p < alpha), test="McNemar exact (two-sided)")
        tests[name] = result
    return tests


def class_tests(
    before: pd.DataFrame, after: pd.DataFrame, tau: str, metrics: list[str], resamples: int, seed: int, alpha: float
) -> pd.DataFrame:
    """Per true class, for each of ``metrics``: baseline, current, delta, CI at ``1 - alpha`` and a two-sided p
    (accuracy: McNemar exact; others: normal approximation with the bootstrap's standard error, so that a
    Holm-corrected p of many classes stays resolvable). One row per class."""
    rows = []
    for (label, name), index in before.groupby(["label", "label_name"]).groups.items():
        b, a = before.loc[index], after.loc[index]
        row = {"label": int(label), "label_name": name, "count": len(index)}
        for metric in metrics:
            column = METRICS[metric][0].format(tau=tau)
            x, y, labels = _paired_values(b, a, column)
            boot = paired_bootstrap(
                x,
                y,
                np.zeros(len(x), dtype=np.int64),
                mean_statistic,
                resamples=resamples,
                seed=seed,
                confidence=1 - alpha,
            )
            row.update(
                {
                    f"{metric}_baseline": float(x.mean()) if len(x) else float("nan"),
                    f"{metric}_current": float(y.mean()) if len(y) else float("nan"),
                    f"{metric}_delta": boot["delta"],
                    f"{metric}_low": boot["low"],
                    f"{metric}_high": boot["high"],
                    f"{metric}_n": boot["n"],
                }
            )
            if metric == "accuracy":
                broke, fixed = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
                row.update(broke=broke, fixed=fixed, accuracy_p=mcnemar_exact(broke, fixed))
            else:
                spread = (boot["high"] - boot["low"]) / (2 * 1.959963984540054) if len(x) > 1 else float("nan")
                row[f"{metric}_p"] = normal_p(boot["delta"], spread) if len(x) > 1 else 1.0
        rows.append(row)
    return pd.DataFrame(rows)


def add_holm(per_class: pd.DataFrame, metrics: list[str], min_class_images: int) -> pd.DataFrame:
    """``per_class`` with ``{metric}_p_holm`` for each of ``metrics``: Holm's adjusted p over the classes with at
    least ``min_class_images`` images (the family a per-class gate tests; :func:`holm_adjusted`), NaN for the
    smaller classes, which are reported but never gated."""
    if not len(per_class):
        return per_class
    per_class = per_class.copy()
    eligible = (per_class["count"] >= min_class_images).to_numpy()
    for metric in metrics:
        adjusted = np.full(len(per_class), np.nan)
        adjusted[eligible] = holm_adjusted(per_class.loc[eligible, f"{metric}_p"].to_numpy(dtype=np.float64))
        per_class[f"{metric}_p_holm"] = adjusted
    return per_class


def evaluate_gates(
    tests: dict,
    per_class: pd.DataFrame,
    max_drops: dict[str, float],
    max_class_drops: dict[str, float],
    alpha: float,
    min_class_images: int,
) -> list[dict]:
    """One entry per gate: tripped when the drop is beyond the threshold and significant (two-sided, ``alpha``;
    per class: Holm's adjusted p below ``alpha`` over the classes with ``min_class_images`` images (column
    ``{metric}_p_holm``, :func:`add_holm`), one entry per class that tripped and one summary entry per metric)."""
    gates = []
    for metric, allowed in max_drops.items():
        test = tests.get(metric)
        if test is None:
            gates.append(
                {
                    "metric": metric,
                    "scope": "overall",
                    "max_drop": allowed,
                    "tripped": False,
                    "reason": "not in both runs",
                }
            )
            continue
        drop = -test["delta"] + 0.0  # + 0.0: no "-0.0000" printed for no change
        tripped = bool(drop > allowed and test["significant"] and test["delta"] < 0)
        gates.append(
            {
                "metric": metric,
                "scope": "overall",
                "max_drop": allowed,
                "drop": drop,
                "significant": test["significant"],
                **({"p": test["p"]} if "p" in test else {"low": test["low"], "high": test["high"]}),
                "tripped": tripped,
            }
        )
    eligible = per_class[per_class["count"] >= min_class_images] if len(per_class) else per_class
    for metric, allowed in max_class_drops.items():
        tripped_classes = 0
        for _, row in eligible.iterrows():
            drop, p, p_holm = -row[f"{metric}_delta"] + 0.0, row[f"{metric}_p"], row[f"{metric}_p_holm"]
            if drop > allowed and p_holm < alpha:
                tripped_classes += 1
                gates.append(
                    {
                        "metric": metric,
                        "scope": f"class {row['label_name']}",
                        "max_drop": allowed,
                        "drop": float(drop),
                        "p": float(p),
                        "p_holm": float(p_holm),
                        "alpha": alpha,
                        "count": int(row["count"]),
                        "tripped": True,
                    }
                )
        gates.append(
            {
                "metric": metric,
                "scope": "per class",
                "max_drop": allowed,
                "alpha": alpha,
                "correction": "holm",
                "classes_tested": len(eligible),
                "classes_tripped": tripped_classes,
                "tripped": tripped_classes > 0,
            }
        )
    return gates


def run_coverage(run_dir: Path, rows: pd.DataFrame) -> dict:
    """How much of its dataset a finished run audited: ``audited`` (rows of ``samples.parquet``), ``skipped``
    (ids with an ``errors.parquet`` row at any stage but ``overlay``, not audited: unreadable, unannotated,
    duplicate...), ``dataset_size`` (``summary.json`` -> provenance.dataset.samples, the records indexed after
    ``data.limit``; ``audited + skipped`` when absent) and the two shares of ``dataset_size``."""
    skipped = 0
    errors_path = Path(run_dir) / "errors.parquet"
    if errors_path.is_file():
        errors = pd.read_parquet(errors_path, columns=["id", "stage"])
        failed = set(errors.loc[errors["stage"] != "overlay", "id"].astype(str))
        skipped = len(failed - set(rows["id"].astype(str)))
    audited = len(rows)
    size = (run_identity(run_dir)["dataset"] or {}).get("samples")
    size = int(size) if isinstance(size, (int, float)) and size > 0 else audited + skipped
    return {
        "audited": audited,
        "skipped": skipped,
        "dataset_size": size,
        "audited_fraction": audited / size if size else float("nan"),
        "skipped_fraction": skipped / size if size else float("nan"),
    }


def coverage(baseline_dir: Path, current_dir: Path, before_all: pd.DataFrame, after_all: pd.DataFrame) -> dict:
    """Both runs' :func:`run_coverage` and ``reference_coverage``: the share of the baseline's audited images
    that the current run audited too (``common`` of ``baseline.audited``)."""
    common = len(set(before_all["id"]) & set(after_all["id"]))
    first, second = run_coverage(baseline_dir, before_all), run_coverage(current_dir, after_all)
    return {
        "baseline": first,
        "current": second,
        "common": common,
        "reference_coverage": common / first["audited"] if first["audited"] else float("nan"),
    }


# Coverage gates: name (the option without --, underscores) -> what its value is.
COVERAGE_GATES = {
    "min_coverage": "images audited / the current run's dataset size (the rest were skipped)",
    "min_reference_coverage": "share of the baseline's audited images that the current run audited too",
    "max_skipped_rise": "share of the dataset skipped now minus the share skipped in the baseline",
}


def coverage_gates(
    found: dict, min_coverage: float | None, min_reference_coverage: float | None, max_skipped_rise: float | None
) -> list[dict]:
    """One entry per coverage gate asked for (None: off): ``{"metric", "scope": "coverage", "threshold",
    "value", "audited", "skipped", "dataset_size", "tripped", "means"}``. Counts, not estimates: no test."""
    current, baseline = found["current"], found["baseline"]
    gates = []
    for name, threshold, value, tripped_when in (
        ("min_coverage", min_coverage, current["audited_fraction"], "below"),
        ("min_reference_coverage", min_reference_coverage, found["reference_coverage"], "below"),
        (
            "max_skipped_rise",
            max_skipped_rise,
            current["skipped_fraction"] - baseline["skipped_fraction"],
            "above",
        ),
    ):
        if threshold is None:
            continue
        tripped = bool(value < threshold) if tripped_when == "below" else bool(value > threshold)
        gates.append(
            {
                "metric": name,
                "scope": "coverage",
                "threshold": threshold,
                "value": float(value) + 0.0,
                "audited": current["audited"],
                "skipped": current["skipped"],
                "dataset_size": current["dataset_size"],
                "baseline_audited": baseline["audited"],
                "baseline_skipped": baseline["skipped"],
                "common": found["common"],
                "tripped": tripped,
                "means": COVERAGE_GATES[name],
            }
        )
    return gates


def describe_gate(gate: dict) -> str:
    """One tripped gate as a few words with its numbers (for the verdict line)."""
    if gate["scope"] == "coverage":
        side = ">" if gate["metric"].startswith("max_") else "<"
        return f"{gate['metric']} {gate['value']:.4f} {side} {gate['threshold']}"
    where = "" if gate["scope"] == "overall" else f" {gate['scope']}"
    p = f", Holm p {gate['p_holm']:.3g}" if "p_holm" in gate else (f", p {gate['p']:.3g}" if "p" in gate else "")
    return f"{gate['metric']}{where} drop {gate.get('drop', float('nan')):.4f} > {gate['max_drop']}{p}"


def verdict_line(result: dict) -> str:
    """``verdict: pass`` or ``verdict: FAIL (<gate and numbers>; ...)``, naming the two runs."""
    names = f"{Path(result['baseline']).name} -> {Path(result['current']).name}"
    if result["verdict"] == "pass":
        return f"verdict: pass ({names}: every gate passed)"
    return f"verdict: FAIL ({names}: " + "; ".join(describe_gate(g) for g in result["tripped"]) + ")"


def verdict(gates: list[dict]) -> tuple[str, list[dict]]:
    """``("fail", tripped)`` when any gate tripped (the per-class summary entries left out of the list: each
    class that tripped has its own entry), else ``("pass", [])``."""
    tripped = [g for g in gates if g["tripped"] and g["scope"] != "per class"]
    return ("fail" if tripped else "pass"), tripped


def check_gated_metrics(
    before: pd.DataFrame,
    after: pd.DataFrame,
    tau: str,
    tests: dict,
    max_drops: dict[str, float],
    max_class_drops: dict[str, float],
    baseline_dir: Path,
    current_dir: Path,
) -> None:
    """Every gated metric must be computable on both runs: a column that one run lacks (another version, a
    score switched off) or that no common image defines in both would make its gate print "drop +nan ...
    passed". Raises :class:`~pipeline.errors.ConfigError` naming the option and the run instead."""
    for option, gated in (("--max-drop", max_drops), ("--max-class-drop", max_class_drops)):
        for metric in gated:
            column = METRICS[metric][0].format(tau=tau)
            lacking = [str(d) for d, frame in ((baseline_dir, before), (current_dir, after)) if column not in frame]
            if lacking:
                raise ConfigError(
                    option,
                    f"{metric}: {' and '.join(lacking)} {'has' if len(lacking) == 1 else 'have'} no column "
                    f"{column!r}: this gate cannot be evaluated; drop it, or compare runs that both have it",
                )
            if option == "--max-drop" and tests.get(metric, {}).get("n", 0) == 0:
                raise ConfigError(
                    option,
                    f"{metric}: no common image has {column!r} defined in both runs: this gate cannot be evaluated",
                )


def compare_with_statistics(
    baseline_dir: Path,
    current_dir: Path,
    max_drops: dict[str, float] | None = None,
    max_class_drops: dict[str, float] | None = None,
    alpha: float = 0.05,
    resamples: int = 2000,
    seed: int = 0,
    min_class_images: int = 10,
    min_coverage: float | None = None,
    min_reference_coverage: float | None = None,
    max_skipped_rise: float | None = None,
) -> dict:
    """:func:`compare_runs` plus the paired tests, the per-class tests, the coverage and the gates (see the
    module docstring); ``verdict`` (``pass`` / ``fail``) and ``tripped`` (the gates that tripped, with their
    numbers)."""
    result = compare_runs(baseline_dir, current_dir)
    before_all, after_all, definitions, _, _ = read_pair(baseline_dir, current_dir)
    common = set(before_all["id"]) & set(after_all["id"])
    before = before_all[before_all["id"].isin(common)].sort_values("id").reset_index(drop=True)
    after = after_all[after_all["id"].isin(common)].sort_values("id").reset_index(drop=True)
    tau = tau_key(float((definitions.get("taus") or [0.15])[0]))
    max_drops, max_class_drops = dict(max_drops or {}), dict(max_class_drops or {})
    tests = paired_tests(before, after, tau, resamples, seed, alpha) if common else {}
    if common:
        check_gated_metrics(before, after, tau, tests, max_drops, max_class_drops, baseline_dir, current_dir)
    metrics = sorted(set(max_class_drops) | {"accuracy", "true_energy_in_box"})
    per_class = class_tests(before, after, tau, metrics, resamples, seed, alpha) if common else pd.DataFrame()
    per_class = add_holm(per_class, metrics, min_class_images)
    found = coverage(baseline_dir, current_dir, before_all, after_all)
    gates = coverage_gates(found, min_coverage, min_reference_coverage, max_skipped_rise)
    gates += evaluate_gates(tests, per_class, max_drops, max_class_drops, alpha, min_class_images)
    outcome, tripped = verdict(gates)
    result.update(
        verdict=outcome,
        tripped=tripped,
        coverage=found,
        tests=tests,
        per_class=per_class,
        gates=gates,
        settings={
            "alpha": alpha,
            "resamples": resamples,
            "seed": seed,
            "min_class_images": min_class_images,
            "max_drop": max_drops,
            "max_class_drop": max_class_drops,
            "min_coverage": min_coverage,
            "min_reference_coverage": min_reference_coverage,
            "max_skipped_rise": max_skipped_rise,
        },
    )
    return result


def render_statistics(result: dict) -> str:
    """The tests and the gates, a line each."""
    settings = result["settings"]
    lines = [
        f"  paired tests on the common images (two-sided, alpha {settings['alpha']}; bootstrap {settings['resamples']} "
        f"resamples, seed {settings['seed']}):"
    ]
    for name, test in result["tests"].items():
        extra = (
            f", {test['broke']} broke / {test['fixed']} fixed, McNemar exact p = {test['p']:.3g}"
            if name == "accuracy"
            else ""
        )
        lines.append(
            f"    {name}: {test['baseline']:.4f} -> {test['current']:.4f} ({test['delta']:+.4f}, "
            f"{100 * test['confidence']:.0f}% CI {test['low']:+.4f} .. {test['high']:+.4f}, n {test['n']}{extra})"
            f"{' significant' if test['significant'] else ''}"
        )
    found = result.get("coverage")
    if found:
        current, baseline = found["current"], found["baseline"]
        lines.append(
            f"  coverage: {current['audited']} of {current['dataset_size']} images audited, {current['skipped']} skipped "
            f"(baseline {baseline['audited']} of {baseline['dataset_size']}, {baseline['skipped']} skipped); "
            f"{found['common']} of the baseline's {baseline['audited']} audited again"
        )
    for gate in result["gates"]:
        if gate["scope"] == "coverage":
            lines.append(
                f"  {'GATE' if gate['tripped'] else 'gate'} {gate['metric']} {gate['threshold']}: {gate['value']:.4f} "
                f"({gate['means']}): {'TRIPPED' if gate['tripped'] else 'passed'}"
            )
        elif gate["scope"].startswith("class "):
            lines.append(
                f"  GATE {gate['metric']} {gate['scope']} ({gate['count']} images): drop {gate['drop']:.4f} > "
                f"{gate['max_drop']} and Holm-adjusted p = {gate['p_holm']:.3g} < {gate['alpha']} (p = {gate['p']:.3g}): "
                "TRIPPED"
            )
        elif gate["scope"] == "per class":
            lines.append(
                f"  gate {gate['metric']} per class (max drop {gate['max_drop']}, {gate['classes_tested']} classes with >= "
                f"{settings['min_class_images']} images, Holm at {gate['alpha']}): "
                f"{'TRIPPED' if gate['tripped'] else 'passed'}"
            )
        else:
            drop = gate.get("drop", float("nan"))
            lines.append(
                f"  gate {gate['metric']} (max drop {gate['max_drop']}): drop {drop:+.4f}, "
                f"{'significant' if gate.get('significant') else 'not significant'}: {'TRIPPED' if gate['tripped'] else 'passed'}"
            )
    return "\n".join(lines)


# compare.json's keys, in order: the verdict first.
COMPARE_JSON_KEYS = (
    "verdict",
    "tripped",
    "baseline",
    "current",
    "data",
    "definitions",
    "coverage",
    "overall",
    "tests",
    "gates",
    "settings",
)


def compare_json(result: dict) -> dict:
    """What ``compare.json`` holds (and ``cam-audit compare --format json`` prints): :data:`COMPARE_JSON_KEYS`."""
    return {key: result[key] for key in COMPARE_JSON_KEYS if key in result}


# samples_diff.parquet's columns (Parquet field metadata ``description``, like the audit's tables).
SAMPLES_DIFF_COLUMNS = {
    "id": "sample id, in both runs",
    "label": "true class: index into the baseline's outputs (the current run's aligned to it by key and name)",
    "label_name": "true class name",
    "pred_baseline": "class the baseline predicted (name)",
    "pred_current": "class the current run predicted (name)",
    "change": "fixed: wrong in the baseline, right now; broke: right in the baseline, wrong now; same: neither",
    "true_energy_in_box_baseline": "share of the true-class map's energy inside the annotated boxes, baseline; "
    "null for an empty map or no box",
    "true_energy_in_box_current": "share of the true-class map's energy inside the annotated boxes, current run",
    "true_energy_in_box_delta": "true_energy_in_box_current - true_energy_in_box_baseline (negative: less energy "
    "on the object now)",
    "true_energy_lift_delta": "current - baseline of the true-class energy lift (energy in box / box area fraction)",
    "true_peak_shift_px": "distance between the true-class map's maxima of the two runs, pixels of the scoring grid; "
    "null for an empty map, or when the coordinate space or the preprocessing differ (two pixel grids)",
}

# What each gated metric measures, for the per-class columns' descriptions.
METRIC_MEANINGS = {
    "accuracy": "accuracy (share of the class's images predicted right)",
    "true_energy_in_box": "mean share of the true-class map's energy inside the boxes",
    "true_energy_lift": "mean true-class energy lift (energy in box / box area fraction)",
    "true_excess_energy": "mean true-class excess energy ((E - A) / (1 - A))",
    "true_pointing_game": "pointing-game accuracy of the true-class map",
    "true_gt_known_localisation": "GT-known localisation accuracy of the true-class map (first tau)",
    "pred_energy_in_box": "mean share of the predicted-class map's energy inside the boxes",
}


def classes_diff_descriptions(columns: list[str], alpha: float, min_class_images: int) -> dict[str, str]:
    """Each ``classes_diff.parquet`` column's description (``{metric}_{kind}`` columns from the metric's
    meaning and the kind's)."""
    confidence = f"{100 * (1 - alpha):g}%"
    fixed = {
        "label": "true class: index into the baseline's outputs",
        "label_name": "true class name",
        "count": "the class's images in both runs",
        "broke": "the class's images right in the baseline and wrong now",
        "fixed": "the class's images wrong in the baseline and right now",
    }
    kinds = {
        "baseline": "in the baseline, over the class's images where it is defined in both runs",
        "current": "in the current run, over the same images",
        "delta": "current - baseline (negative: fell)",
        "low": f"lower bound of the {confidence} paired bootstrap percentile interval of the delta (--alpha)",
        "high": f"upper bound of the {confidence} paired bootstrap percentile interval of the delta",
        "n": "images where it is defined in both runs (what the test uses)",
        "p": "two-sided p of the change, uncorrected (accuracy: McNemar's exact test on broke / fixed; others: "
        "normal approximation with the bootstrap's standard error)",
        "p_holm": f"p after Holm's correction over the classes with at least {min_class_images} images "
        "(--min-class-images); a --max-class-drop gate trips when this is below --alpha and the drop beyond its "
        "threshold; null for smaller classes: reported, never gated",
    }
    out = {}
    for column in columns:
        if column in fixed:
            out[column] = fixed[column]
            continue
        for metric, meaning in METRIC_MEANINGS.items():
            kind = column[len(metric) + 1 :] if column.startswith(f"{metric}_") else None
            if kind in kinds:
                out[column] = f"{meaning}: {kinds[kind]}"
                break
    return out


def classes_table(result: dict) -> pd.DataFrame:
    """``classes_diff.parquet``'s rows: :func:`class_changes`'s columns and the per-class tests' others (a column
    both have is the same number by construction: kept once)."""
    classes = result["classes"]
    if len(result.get("per_class", [])) and len(classes):
        tested = result["per_class"].drop(columns=[c for c in result["per_class"] if c in classes and c != "label"])
        classes = classes.merge(tested, on="label", how="left")
    return classes


def write_comparison(result: dict, out: Path) -> None:
    """``compare.json`` (:data:`COMPARE_JSON_KEYS`), ``samples_diff.parquet`` and ``classes_diff.parquet`` (per
    class: :func:`classes_table`) into ``out``, every table column with its ``description`` (field metadata)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "compare.json", compare_json(result))
    samples = pa.Table.from_pandas(result["samples"], preserve_index=False)
    write_table_atomic(with_descriptions(samples, SAMPLES_DIFF_COLUMNS), out / "samples_diff.parquet")
    classes = classes_table(result)
    settings = result.get("settings", {})
    described = classes_diff_descriptions(
        list(classes.columns), settings.get("alpha", 0.05), settings.get("min_class_images", 10)
    )
    table = with_descriptions(pa.Table.from_pandas(classes, preserve_index=False), described)
    write_table_atomic(table, out / "classes_diff.parquet")


def default_out(baseline: Path, current: Path) -> Path:
    """Beside the current run: ``<current>.compare/<baseline name>/`` (never inside a run folder)."""
    current = Path(current).absolute()
    return current.parent / f"{current.name}.compare" / Path(baseline).absolute().name
