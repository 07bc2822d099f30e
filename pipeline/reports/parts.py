"""Parquet written as the run goes: small atomic parts, merged at the end.

A run writes ``parts/<table>-r<rank>-<seq>.parquet``: each part is written to a temporary name and
renamed into place, so every file on disk is complete and readable at all times, a killed run loses at
most the rows it had not flushed, and a resumed run knows exactly which samples are done. Each rank of a
multi-process run writes its own parts (``rank`` in the name). ``merge_parts`` streams the parts into one
file, one row group per part, without holding the table in memory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PART_PATTERN = re.compile(r"^(?P<table>[a-z_]+)-r(?P<rank>\d+)-(?P<seq>\d+)\.parquet$")


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` through a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class PartWriter:
    """Buffers row batches (``pyarrow.Table``) and writes a part every ``rows_per_part`` rows."""

    def __init__(self, parts_dir: Path, table: str, schema: pa.Schema, rank: int = 0, rows_per_part: int = 512):
        self.parts_dir = parts_dir
        self.table = table
        self.schema = schema
        self.rank = rank
        self.rows_per_part = rows_per_part
        self._pending: list[pa.Table] = []
        self._buffered = 0
        parts_dir.mkdir(parents=True, exist_ok=True)
        existing = [int(m["seq"]) for p in parts_dir.iterdir() if (m := PART_PATTERN.match(p.name))
                    and m["table"] == table and int(m["rank"]) == rank]
        self._next_seq = max(existing, default=-1) + 1

    def add(self, rows: pa.Table) -> None:
        """Append rows; their columns must match the schema (cast where the types differ)."""
        self._pending.append(rows.select(self.schema.names).cast(self.schema))
        self._buffered += rows.num_rows
        if self._buffered >= self.rows_per_part:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one part (nothing when the buffer is empty)."""
        if not self._buffered:
            return
        table = pa.concat_tables(self._pending)
        write_table_atomic(table, self.parts_dir / f"{self.table}-r{self.rank:03d}-{self._next_seq:06d}.parquet")
        self._next_seq += 1
        self._pending = []
        self._buffered = 0


def list_parts(parts_dir: Path, table: str) -> list[Path]:
    """The complete parts of ``table``, in (rank, seq) order; temporary files are ignored."""
    if not parts_dir.is_dir():
        return []
    found = []
    for path in parts_dir.iterdir():
        match = PART_PATTERN.match(path.name)
        if match and match["table"] == table:
            found.append(((int(match["rank"]), int(match["seq"])), path))
    return [path for _, path in sorted(found)]


def read_column(parts: list[Path], column: str) -> list:
    """One column of every part (e.g. the ids already done, to resume)."""
    values: list = []
    for path in parts:
        values.extend(pq.read_table(path, columns=[column]).column(column).to_pylist())
    return values


def merge_parts(parts: list[Path], out: Path, schema: pa.Schema, metadata: dict[str, str]) -> int:
    """Stream ``parts`` into ``out`` (atomically), one row group per part, with ``metadata`` in the
    schema. Returns the row count."""
    schema = schema.with_metadata({**(schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}})
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    rows = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for path in parts:
            table = pq.read_table(path).select(schema.names).cast(schema)
            writer.write_table(table)
            rows += table.num_rows
        if not parts:
            writer.write_table(schema.empty_table())
    os.replace(tmp, out)
    return rows
