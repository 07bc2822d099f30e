"""Reading two finished runs, and checking that they audited the same data where their ids overlap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.errors import ConfigError
from pipeline.scores import tau_key


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


def _class_order(first: list, second: list, table: str) -> np.ndarray:
    """current class index -> baseline class index when the two lists hold the same (key, name) pairs;
    :class:`~pipeline.errors.ConfigError` naming ``table`` when they do not."""
    if sorted(first) != sorted(second) or len(set(first)) != len(first):
        only_before = sorted({name for _, name in first} - {name for _, name in second})
        only_after = sorted({name for _, name in second} - {name for _, name in first})
        raise ConfigError(
            table,
            f"the two runs have different class lists ({len(first)} and {len(second)} "
            f"classes; only in the baseline: {', '.join(only_before[:5]) or '-'}; only in the current run: "
            f"{', '.join(only_after[:5]) or '-'}; or keys and names paired otherwise): their labels and "
            "predictions do not mean the same; compare runs made with the same class list",
        )
    position = {pair: index for index, pair in enumerate(first)}
    return np.array([position[pair] for pair in second], dtype=np.int64)


def _check_labels(before: pd.DataFrame, after: pd.DataFrame, table: str) -> int:
    """How many ids the runs share; :class:`~pipeline.errors.ConfigError` when a common id has another true
    label."""
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
    return len(joined)


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
        mapping = _class_order(first["classes"], second["classes"], table)
        after = _realign(after, mapping)
        moved = int((mapping != np.arange(len(mapping))).sum())
        notes.append(
            f"the class lists hold the same {len(mapping)} classes in another order ({moved} moved): the current "
            "run's class indices are aligned to the baseline's by key and name"
        )
    common = _check_labels(before, after, table)
    if first["dataset"] and second["dataset"] and first["dataset"].get("sha256") != second["dataset"].get("sha256"):
        notes.append(
            f"the dataset fingerprints differ (baseline {first['dataset'].get('samples', '?')} samples, "
            f"{str(first['dataset'].get('sha256'))[:12]}; current {second['dataset'].get('samples', '?')} samples, "
            f"{str(second['dataset'].get('sha256'))[:12]}): the runs audited different data (other images, a "
            f"different data.limit); only the {common} common ids, whose true labels agree, are compared"
        )
    return notes, after


# read_pair's answer: (baseline rows, current rows, baseline definitions, current definitions, same-data notes)
RunPair = tuple[pd.DataFrame, pd.DataFrame, dict, dict, list[str]]


def read_pair(baseline_dir: Path, current_dir: Path) -> RunPair:
    """Both runs' rows and definition choices, checked to be of the same data (:func:`check_same_data`),
    and what that check found."""
    before_all, before_definitions = read_run(baseline_dir)
    after_all, after_definitions = read_run(current_dir)
    notes, after_all = check_same_data(baseline_dir, current_dir, before_all, after_all)
    return before_all, after_all, before_definitions, after_definitions, notes


def common_rows(before_all: pd.DataFrame, after_all: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of the ids both runs scored, each frame sorted by id (so row i is the same image in both)."""
    common = set(before_all["id"]) & set(after_all["id"])
    before = before_all[before_all["id"].isin(common)].sort_values("id").reset_index(drop=True)
    after = after_all[after_all["id"].isin(common)].sort_values("id").reset_index(drop=True)
    return before, after


def first_tau(definitions: dict) -> str:
    """The key of the run's first threshold (``scores.taus[0]``; 0.15 for a run that records none)."""
    return tau_key(float((definitions.get("taus") or [0.15])[0]))
