"""samples.parquet is written once at the end of a run: the parts merged in id order in memory, the columns
known only over the whole run (triage, triage_reason, pred_strategy) appended, then one atomic write."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path
from pipeline.reports import finalize, parts
from pipeline.reports.parts import merged_table
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process

SCHEMA = pa.schema([("id", pa.string()), ("value", pa.int64())], metadata={b"kept": b"yes"})


def write_part(path: Path, ids: list[str], values: list[int]) -> Path:
    pq.write_table(pa.table({"id": ids, "value": values}, schema=SCHEMA.remove_metadata()), path)
    return path


def test_merged_table_puts_the_rows_in_id_order_stably_and_keeps_the_metadata(tmp_path):
    first = write_part(tmp_path / "samples-r0-000000.parquet", ["b", "d"], [1, 2])
    second = write_part(tmp_path / "samples-r1-000000.parquet", ["a", "b", "c"], [3, 4, 5])
    table = merged_table([first, second], SCHEMA, {"cam_audit.run": "x"})
    assert table.column("id").to_pylist() == ["a", "b", "b", "c", "d"]
    assert table.column("value").to_pylist() == [3, 1, 4, 5, 2]  # the two rows of "b" keep their parts' order
    assert table.schema.metadata == {b"kept": b"yes", b"cam_audit.run": b"x"}


def test_merged_table_of_no_parts_is_an_empty_table_of_the_schema():
    table = merged_table([], SCHEMA, {})
    assert table.num_rows == 0 and table.schema.names == ["id", "value"]


def test_a_run_writes_samples_parquet_once_with_its_findings_columns(tmp_path, monkeypatch):
    root, cache = tmp_path / "data", tmp_path / "cache"
    good_dataset(root, 12)
    written: list[str] = []

    def counting_atomic_path(path):
        written.append(Path(path).name)
        return atomic_path(path)

    monkeypatch.setattr(parts, "atomic_path", counting_atomic_path)
    run_in_process(base_overrides(root, cache), tmp_path / "run")
    assert written.count("samples.parquet") == 1
    frame = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    assert len(frame) == 12 and frame["id"].is_monotonic_increasing
    assert frame.columns[-3:].tolist() == ["triage", "triage_reason", "pred_strategy"]
    assert frame["triage"].notna().all()
    described = pq.read_schema(tmp_path / "run" / "samples.parquet").field("triage").metadata
    assert described[b"description"].decode() == finalize.TRIAGE_DESCRIPTIONS["triage"]
