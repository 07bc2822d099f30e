"""The export's plain records (:mod:`pipeline.export.samples`) as a FiftyOne dataset (the ``fiftyone`` extra).

``cam-audit export fiftyone RUN``: one sample per audited image, keyed by ``audit_id`` (the run's sample id,
a unique index): exporting the same run again updates its samples in place (every field set again, None
included), adds the new ones and deletes those the run no longer has, so the dataset never holds an image
twice. The dataset records the run folder in ``info["cam_audit_run"]``; exporting another run into it is
refused unless ``--overwrite`` (which deletes it first). The samples go in batches (``--batch-size``) with a
tqdm progress bar on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from pipeline.export.checks import ExportError, import_fiftyone
from pipeline.export.heatmaps import DEFAULT_MAX_SIDE
from pipeline.export.samples import RunForExport, field_types, iter_sample_batches

KEY_FIELD = "audit_id"


def to_label(value):
    """A record's value as FiftyOne's: a dict with ``_type`` becomes that label class, recursively."""
    import fiftyone as fo

    if isinstance(value, dict) and "_type" in value:
        kind = value["_type"]
        if kind == "Detections":
            return fo.Detections(detections=[to_label(item) for item in value["detections"]])
        if kind not in ("Classification", "Detection", "Heatmap"):
            raise ValueError(f"unknown label type {kind!r}")
        return getattr(fo, kind)(**{key: to_label(v) for key, v in value.items() if key != "_type"})
    return value


def to_sample(record: dict):
    """A record as an ``fo.Sample`` (None-valued fields left unset)."""
    import fiftyone as fo

    fields = {key: to_label(value) for key, value in record.items() if key != "filepath" and value is not None}
    return fo.Sample(filepath=record["filepath"], **fields)


def default_name(run_dir: Path) -> str:
    """``cam-audit-<parent>-<folder>`` of the run folder (Hydra's ``outputs/<date>/<time>``)."""
    resolved = Path(run_dir).resolve()
    return f"cam-audit-{resolved.parent.name}-{resolved.name}"


def open_dataset(name: str, run: RunForExport, overwrite: bool, persistent: bool):
    """The dataset ``name`` for ``run``: created, or the one an earlier export of the same run made."""
    fo = import_fiftyone()
    owner = str(run.run_dir.resolve())
    if fo.dataset_exists(name):
        if overwrite:
            fo.delete_dataset(name)
        else:
            dataset = fo.load_dataset(name)
            held = dataset.info.get("cam_audit_run")
            if held != owner:
                raise ExportError(
                    f"the FiftyOne dataset {name!r} holds {'another run' if held else 'samples of no cam-audit run'}"
                    f"{f' ({held})' if held else ''}: choose another --name, or --overwrite to replace it"
                )
            dataset.persistent = persistent
            return dataset
    dataset = fo.Dataset(name)
    dataset.persistent = persistent
    dataset.info["cam_audit_run"] = owner
    dataset.save()
    return dataset


def upsert(dataset, records: list[dict]) -> tuple[int, int]:
    """Add the records whose ``audit_id`` the dataset lacks and set every field of those it has. Returns
    ``(added, updated)``."""
    ids = [record[KEY_FIELD] for record in records]
    present = set(dataset.select_by(KEY_FIELD, ids).values(KEY_FIELD))
    new = [to_sample(record) for record in records if record[KEY_FIELD] not in present]
    if new:
        dataset.add_samples(new, progress=False)
    if present:
        by_id = {record[KEY_FIELD]: record for record in records if record[KEY_FIELD] in present}
        for sample in dataset.select_by(KEY_FIELD, list(by_id)).iter_samples(autosave=True, progress=False):
            for key, value in by_id[sample[KEY_FIELD]].items():
                if key != KEY_FIELD and (value is not None or dataset.has_field(key)):
                    sample[key] = to_label(value)
    return len(new), len(present)


def export_run(
    run: RunForExport,
    name: str | None = None,
    heatmap_dir: Path | None = None,
    batch_size: int = 256,
    max_side: int = DEFAULT_MAX_SIDE,
    overwrite: bool = False,
    persistent: bool = True,
    progress: bool = True,
) -> dict:
    """Export ``run`` (records loaded: :func:`pipeline.export.samples.load_annotations`) into the FiftyOne
    dataset ``name``; returns counts and where things went."""
    import_fiftyone()
    name = name or default_name(run.run_dir)
    heatmap_dir = Path(heatmap_dir or run.run_dir / "fiftyone" / "heatmaps")
    fo = import_fiftyone()
    dataset = open_dataset(name, run, overwrite, persistent)
    kinds = {"bool": fo.BooleanField, "int": fo.IntField, "float": fo.FloatField, "str": fo.StringField}
    for field, kind in field_types(run).items():  # typed before any value: an all-null column is a field too
        if not dataset.has_field(field):
            dataset.add_sample_field(field, kinds[kind])
    dataset.create_index(KEY_FIELD, unique=True)
    added = updated = 0
    with tqdm(total=len(run.frame), unit="img", desc="export", disable=not progress, file=sys.stderr) as bar:
        for records in iter_sample_batches(run, heatmap_dir, batch_size, max_side):
            new, old = upsert(dataset, records)
            added, updated = added + new, updated + old
            bar.update(len(records))
    stale = dataset.exclude_by(KEY_FIELD, [str(i) for i in run.frame.index])
    removed = len(stale)
    if removed:
        dataset.delete_samples(stale)
    dataset.info.update(
        cam_audit_run=str(run.run_dir.resolve()),
        cam_audit_provenance=run.provenance,
        cam_audit_heatmaps=f"16-bit PNG in {heatmap_dir}; code / 65535 = the min-max normalised map (ReLU), on the stored image",
    )
    dataset.save()
    return {
        "dataset": name,
        "samples": len(dataset),
        "added": added,
        "updated": updated,
        "removed": removed,
        "heatmaps": str(heatmap_dir),
    }
