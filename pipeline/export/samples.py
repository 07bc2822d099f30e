"""A finished run as plain per-sample records, ready for a viewer (FiftyOne: :mod:`pipeline.export.to_fiftyone`).

One record per row of ``samples.parquet``, a dict of plain values; a label is a dict with a ``_type`` key
(``Classification``, ``Detections``, ``Detection``, ``Heatmap``) that the adapter turns into the viewer's class:

- ``filepath`` (the image), ``audit_id`` (the row's ``id``: the key a re-export updates by);
- ``ground_truth`` (Classification, the true class) and ``ground_truth_boxes`` (Detections: the annotated boxes
  read again from the run's dataset, relative ``[x, y, w, h]`` of the stored image);
- ``prediction`` (Classification with ``confidence``; with ``logits`` = log of the saved probabilities when the
  run wrote ``probabilities.parquet``, so FiftyOne's brain can recompute hardness and mistakenness); None for a
  row whose logits were not finite;
- ``pred_heatmap``, ``true_heatmap`` (Heatmap: a 16-bit PNG per map and its ``range``, :mod:`.heatmaps`; a right
  prediction's two maps are one map and share a file) and ``pred_map_box``, ``true_map_box`` (Detections: the
  box of the thresholded map at the first ``scores.taus``, with its IoU against the boxes);
- every scalar column of ``samples.parquet`` under its own name (scores, ``hardness``, ``mistakenness``,
  ``triage``, ``triage_reason``, ``pred_strategy``, metadata columns; null as None; the per-image vectors such as
  ``pred_map_grid`` are left out), a name FiftyOne reserves (``tags``, ``metadata``...) prefixed ``audit_``;
- review flags from ``summary.json`` (:func:`review_flags`): ``shortcut_suspect_class``,
  ``shortcut_peak_off_object``, ``shortcut_peak_in_hot_spot``, ``strategy_looks_off_object``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from omegaconf import OmegaConf

from pipeline.data.geometry import Placement, plan_placement
from pipeline.data.records import SampleRecord
from pipeline.export.boxes import map_box_in_stored, relative_xywh
from pipeline.export.checks import ExportError, check_run_folder
from pipeline.export.heatmaps import DEFAULT_MAX_SIDE, HEATMAP_RANGE, stored_frame_maps, write_heatmap
from pipeline.reports.shortcuts import GRID_COLUMN, image_peaks, off_object_peaks
from pipeline.reports.strategies import GROUP_COLUMNS, STRATEGY_COLUMN
from pipeline.scores.registry import tau_key

EXPORTED_MAPS = ("pred", "true")  # the maps that become heatmaps and map boxes
# Sample fields FiftyOne reserves or this export sets itself: a samples.parquet column of that name is
# exported as audit_<name>.
RESERVED = {"id", "_id", "filepath", "tags", "metadata", "media_type", "created_at", "last_modified_at"}
OWN_FIELDS = {"audit_id", "ground_truth", "ground_truth_boxes", "prediction", "probabilities"} | {
    f"{m}_{kind}" for m in EXPORTED_MAPS for kind in ("heatmap", "map_box")
}
FLAG_FIELDS = (
    "shortcut_suspect_class",
    "shortcut_peak_off_object",
    "shortcut_peak_in_hot_spot",
    "strategy_looks_off_object",
)
SKIPPED_COLUMNS = {"id", "path"}  # id -> audit_id, path -> filepath


@dataclass
class RunForExport:
    """What the export reads from a finished run folder (:func:`open_run`)."""

    run_dir: Path
    frame: pd.DataFrame  # samples.parquet, indexed by id
    schema: pa.Schema  # samples.parquet's Arrow schema (the columns' types: pandas reads an int with nulls as float)
    classes: list[str]
    class_keys: list[str]
    config: dict  # the resolved run configuration (cam_audit.config)
    definitions: dict  # cam_audit.definitions (the resolved preprocessing)
    summary: dict
    maps_path: Path
    probabilities_path: Path | None = None
    records: dict[str, SampleRecord] = field(default_factory=dict)

    @property
    def input_size(self) -> tuple[int, int]:
        size = int(self.definitions["preprocess"]["size"])
        return size, size

    def placement(self, width: int, height: int) -> Placement:
        pre = self.definitions["preprocess"]
        resize = pre.get("resize_size")
        return plan_placement(int(width), int(height), pre["mode"], int(pre["size"]), int(resize) if resize else None)

    @property
    def space(self) -> str:
        return str(self.config.get("scores", {}).get("space", "input"))

    @property
    def tau(self) -> str:
        taus = self.config.get("scores", {}).get("taus") or [0.15]
        return tau_key(float(taus[0]))

    @property
    def provenance(self) -> dict:
        return dict(self.summary.get("provenance") or {})


def recorded_config(text: str, samples_path: Path) -> dict:
    """The run configuration recorded in ``samples_path``'s metadata (YAML ``text``) as a plain dict; ``{}``
    when none was recorded. :class:`ExportError` when it is not a mapping (the run writes its composed config)."""
    if not text:
        return {}
    config = OmegaConf.to_container(OmegaConf.create(text))
    if not isinstance(config, dict):
        raise ExportError(f"{samples_path}: the recorded run configuration (cam_audit.config) is not a mapping")
    return config


def open_run(run_dir: Path) -> RunForExport:
    """Read a finished run for export; :class:`ExportError` when it is not one or has no saved maps."""
    run_dir = Path(run_dir)
    check_run_folder(run_dir)
    samples_path, maps_path = run_dir / "samples.parquet", run_dir / "maps.parquet"
    table = pq.read_table(samples_path)
    meta = table.schema.metadata or {}

    def meta_json(key: str, default):
        raw = meta.get(f"cam_audit.{key}".encode())
        return json.loads(raw) if raw else default

    config = recorded_config(meta.get(b"cam_audit.config", b"").decode(), samples_path)
    definitions = meta_json("definitions", {})
    if "preprocess" not in definitions:
        raise ExportError(f"{samples_path} does not record the run's preprocessing (cam_audit.definitions)")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    frame = table.to_pandas().set_index("id", drop=False)
    frame.index.name = None
    probabilities = run_dir / "probabilities.parquet"
    return RunForExport(
        run_dir=run_dir,
        frame=frame,
        schema=table.schema,
        classes=meta_json("classes", []),
        class_keys=meta_json("class_keys", []),
        config=config,
        definitions=definitions,
        summary=summary,
        maps_path=maps_path,
        probabilities_path=probabilities if probabilities.is_file() else None,
    )


def load_annotations(run: RunForExport) -> dict[str, SampleRecord]:
    """The run's dataset read again with its recorded configuration (for the annotated boxes in stored-image
    pixels), by id. :class:`ExportError` when it cannot be read (moved, deleted)."""
    from pipeline.data.sources import load_records
    from pipeline.errors import ConfigError

    data = OmegaConf.create(run.config.get("data") or {})
    cache_dir = Path(str(run.config.get("cache_dir") or run.run_dir))
    model_classes = (tuple(run.class_keys), tuple(run.classes)) if run.classes else None
    try:
        records, _, _ = load_records(data, cache_dir, model_classes=model_classes)
    except (ConfigError, OSError, ValueError) as error:
        raise ExportError(f"the run's dataset cannot be read again for its boxes: {error}") from error
    return {record.sample_id: record for record in records}


def review_flags(frame: pd.DataFrame, summary: dict) -> pd.DataFrame:
    """Per row (``frame`` = samples rows), from the summary's shortcut finder and strategy clustering:

    - ``shortcut_suspect_class``: the predicted class is one the shortcut finder flags;
    - ``shortcut_peak_off_object``: the predicted-class map peaks off every box (None: undefined);
    - ``shortcut_peak_in_hot_spot``: for a flagged class with a significant hot spot, the image's own off-box
      peak lies in it (None elsewhere);
    - ``strategy_looks_off_object``: the row's strategy cluster is one that looks off the object (None when
      the row was not clustered).
    """
    out = pd.DataFrame(index=frame.index)
    shortcuts = summary.get("shortcuts") or {}
    flagged = set(shortcuts.get("flagged") or [])
    pred_name = frame["pred_name"] if "pred_name" in frame else pd.Series(None, index=frame.index, dtype=object)
    out["shortcut_suspect_class"] = pred_name.isin(flagged).to_numpy() & pred_name.notna().to_numpy()
    off = off_object_peaks(frame) if "pred_pointing_hit" in frame else np.full(len(frame), np.nan)
    out["shortcut_peak_off_object"] = [None if math.isnan(v) else bool(v) for v in off]
    in_spot = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    for entry in shortcuts.get("classes") or []:
        spot = entry.get("hot_spot") or {}
        if not (entry.get("flagged") and spot.get("significant") and GRID_COLUMN in frame):
            continue
        members = np.flatnonzero((pred_name == entry["pred_name"]).to_numpy() & frame[GRID_COLUMN].notna().to_numpy())
        if not len(members):
            continue
        grids = np.stack(frame[GRID_COLUMN].iloc[members].to_numpy()).astype(np.float64)
        size = int(round(math.sqrt(grids.shape[1])))
        peaks = image_peaks(grids.reshape(len(grids), size, size))
        r0, c0, r1, c1 = spot["cells"]
        inside = (peaks[:, 0] >= r0) & (peaks[:, 0] < r1) & (peaks[:, 1] >= c0) & (peaks[:, 1] < c1)
        in_spot.iloc[members] = [bool(v) for v in inside]
    out["shortcut_peak_in_hot_spot"] = in_spot
    strategies = summary.get("strategies") or {}
    group = GROUP_COLUMNS.get((strategies.get("settings") or {}).get("by", "pred"), "pred_name")
    suspects = {(s["name"], int(c)) for s in strategies.get("suspects") or [] for c in s.get("clusters", [])}
    looks_off: list[bool | None] = [None] * len(frame)
    if STRATEGY_COLUMN in frame and group in frame:
        for i, (name, cluster) in enumerate(zip(frame[group], frame[STRATEGY_COLUMN])):
            if cluster is not None and not pd.isna(cluster):
                looks_off[i] = (str(name), int(cluster)) in suspects
    out["strategy_looks_off_object"] = looks_off
    return out


def field_name(column: str) -> str:
    """The sample field of a samples.parquet column: as named, ``.`` and a leading ``$`` or ``_`` replaced
    (MongoDB keys), a reserved or export-own name prefixed ``audit_``."""
    name = column.replace(".", "_")
    if name.startswith(("$", "_")):
        name = "audit" + name if name.startswith("_") else "audit_" + name[1:]
    return f"audit_{name}" if name in RESERVED or name in OWN_FIELDS or name in FLAG_FIELDS else name


def scalar_columns(frame: pd.DataFrame) -> list[str]:
    """The columns exported as fields: every column but the id, the path and per-image vectors."""
    out = []
    for column in frame.columns:
        if column in SKIPPED_COLUMNS:
            continue
        values = frame[column].dropna()
        if len(values) and isinstance(values.iloc[0], (list, tuple, np.ndarray, dict)):
            continue
        out.append(column)
    return out


def field_types(run: RunForExport) -> dict[str, str]:
    """Field -> ``bool``, ``int``, ``float`` or ``str`` for every scalar field an export sets (from the samples
    table's Arrow types), so the viewer can declare them before any value arrives (a column that is null in
    every row, such as ``pred_strategy`` of a small run, is still a typed field)."""
    arrow = run.schema
    kinds = {}
    for column in scalar_columns(run.frame):
        dtype = arrow.field(column).type if column in arrow.names else pa.string()
        if pa.types.is_boolean(dtype):
            kinds[field_name(column)] = "bool"
        elif pa.types.is_integer(dtype):
            kinds[field_name(column)] = "int"
        elif pa.types.is_floating(dtype):
            kinds[field_name(column)] = "float"
        else:
            kinds[field_name(column)] = "str"
    return {**kinds, **dict.fromkeys(FLAG_FIELDS, "bool"), "audit_id": "str"}


def plain_records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts of plain Python values, null (NaN, NA, None) as None."""
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [{key: plain(value) for key, value in row.items()} for row in records]


def plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def classification(label: str | None, **extra) -> dict | None:
    return None if label is None else {"_type": "Classification", "label": str(label), **extra}


def detections(items: list[dict]) -> dict:
    return {"_type": "Detections", "detections": [{"_type": "Detection", **item} for item in items]}


def heatmap_file(folder: Path, sample_id: str, map_name: str) -> Path:
    from pipeline.reports.overlays import safe_file_stem

    return folder / f"{safe_file_stem(sample_id)}_{map_name}.png"


def build_samples(
    run: RunForExport,
    rows: pd.DataFrame,
    maps: dict[str, np.ndarray] | None,
    heatmap_dir: Path,
    probabilities: dict[str, np.ndarray] | None = None,
) -> list[dict]:
    """The records of ``rows`` (samples rows; ``maps``: id -> ``[K, gh, gw]`` stored-frame maps in the order of
    :data:`EXPORTED_MAPS`, None or a missing id: no heatmap; ``probabilities``: id -> ``[C]``). Heatmap files are
    written into ``heatmap_dir``."""
    flags = review_flags(rows, run.summary)
    columns = scalar_columns(rows)
    names = {column: field_name(column) for column in columns}
    kinds = field_types(run)
    cast = {"bool": bool, "int": int, "float": float, "str": str}
    out = []
    for row, flag in zip(plain_records(rows), plain_records(flags)):
        sample_id = str(row["id"])
        record = run.records.get(sample_id)
        width, height = int(row["width"]), int(row["height"])
        label_name = row.get("label_name")
        sample = {
            "filepath": str(Path(record.image_path if record is not None else row["path"]).absolute()),
            "audit_id": sample_id,
            "ground_truth": classification(label_name),
        }
        if record is not None:
            from pipeline.data.dataset import boxes_in_pixels

            boxes = relative_xywh(boxes_in_pixels(record, width, height), width, height)
            sample["ground_truth_boxes"] = detections([{"label": str(label_name), "bounding_box": b} for b in boxes])
        extra = {}
        if probabilities is not None and sample_id in probabilities:
            p = np.asarray(probabilities[sample_id], dtype=np.float64)
            extra["logits"] = np.log(np.maximum(p, np.finfo(np.float32).tiny)).tolist()
        confidence = row.get("confidence")
        sample["prediction"] = classification(
            row.get("pred_name"), **({} if confidence is None else {"confidence": float(confidence)}), **extra
        )
        stored = maps.get(sample_id) if maps else None
        placement = run.placement(width, height)
        for k, map_name in enumerate(EXPORTED_MAPS):
            if stored is not None:
                path = heatmap_file(heatmap_dir, sample_id, map_name)
                if map_name == "true" and row.get("correct") is True:  # the same class: the same map
                    path = heatmap_file(heatmap_dir, sample_id, "pred")
                else:
                    write_heatmap(path, stored[k])
                sample[f"{map_name}_heatmap"] = {
                    "_type": "Heatmap",
                    "map_path": str(path.absolute()),
                    "range": list(HEATMAP_RANGE),
                }
            x1, y1, x2, y2 = (row.get(f"{map_name}_box_{edge}_{run.tau}") for edge in ("x1", "y1", "x2", "y2"))
            box = map_box_in_stored((x1, y1, x2, y2), run.space, placement)
            class_name = row.get("pred_name" if map_name == "pred" else "label_name")
            items = []
            if box is not None and class_name is not None:
                items = [
                    {"label": str(class_name), "bounding_box": b, "iou": row.get(f"{map_name}_iou_{run.tau}")}
                    for b in relative_xywh(box, width, height)
                ]
            sample[f"{map_name}_map_box"] = detections(items)
        for column in columns:
            value = row[column]
            sample[names[column]] = None if value is None else cast[kinds[names[column]]](value)
        sample.update(flag)
        out.append(sample)
    return out


def read_probabilities(path: Path | None, ids: list[str]) -> dict[str, np.ndarray] | None:
    """``probabilities.parquet`` rows of ``ids`` (id -> ``[C]``), or None without the file."""
    if path is None:
        return None
    table = pq.read_table(path, filters=[("id", "in", ids)]) if ids else None
    if table is None:
        return {}
    values = table.column("probabilities").combine_chunks()
    flat = values.flatten().to_numpy(zero_copy_only=False).reshape(len(table), -1)
    return dict(zip(table.column("id").to_pylist(), flat))


def iter_sample_batches(
    run: RunForExport, heatmap_dir: Path, batch_size: int = 256, max_side: int = DEFAULT_MAX_SIDE
) -> Iterator[list[dict]]:
    """Every row of the run as records, ``batch_size`` at a time, in the order of ``maps.parquet`` (streamed),
    then the rows without a maps row (no heatmap). Writes the heatmap files into ``heatmap_dir``."""
    heatmap_dir.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for batch in pq.ParquetFile(run.maps_path).iter_batches(batch_size=batch_size):
        ids = [i for i in batch.column("id").to_pylist() if i in run.frame.index and i not in seen]
        if not ids:
            continue
        seen.update(ids)
        yield build_samples(run, run.frame.loc[ids], stored_maps(run, batch, ids), heatmap_dir, run_probs(run, ids))
    rest = [i for i in run.frame.index if i not in seen]
    for start in range(0, len(rest), batch_size):
        ids = rest[start : start + batch_size]
        yield build_samples(run, run.frame.loc[ids], None, heatmap_dir, run_probs(run, ids))


def run_probs(run: RunForExport, ids: list[str]) -> dict[str, np.ndarray] | None:
    return read_probabilities(run.probabilities_path, ids)


def stored_maps(run: RunForExport, batch: pa.RecordBatch, ids: list[str]) -> dict[str, np.ndarray]:
    """The pred and true maps of ``ids`` from one ``maps.parquet`` record batch, on their stored images."""
    rows = batch.to_pydict()
    position = {sample_id: i for i, sample_id in enumerate(rows["id"])}
    names = rows["map_names"][0]
    chosen = [names.index(name) for name in EXPORTED_MAPS]
    arrays, placements = [], []
    for sample_id in ids:
        i = position[sample_id]
        arrays.append(np.asarray(rows["maps"][i], dtype=np.float32).reshape(rows["map_shape"][i])[chosen])
        row = run.frame.loc[sample_id]
        placements.append(run.placement(int(row["width"]), int(row["height"])))
    shapes = {a.shape for a in arrays}
    out = {}
    for shape in shapes:  # one shape per run; grouped anyway
        members = [j for j, a in enumerate(arrays) if a.shape == shape]
        signed = torch.from_numpy(np.stack([arrays[j] for j in members]))
        warped = stored_frame_maps(signed, [placements[j] for j in members], run.input_size)
        out.update({ids[j]: maps for j, maps in zip(members, warped)})
    return out
