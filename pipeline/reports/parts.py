"""Parquet written as the run goes: small atomic parts, merged at the end.

A run writes ``parts/<table>-r<rank>-<seq>.parquet``: each part is written to a temporary name and
renamed into place, so every file on disk is complete and readable at all times, a killed run loses at
most the rows it had not flushed, and a resumed run knows exactly which samples are done. Each rank of a
multi-process run writes its own parts (``rank`` in the name); each shard of a sharded run (``runtime.shards``,
:mod:`pipeline.shards`) writes into its own folder ``parts/shard-<NNN>/``, and :func:`list_parts` of ``parts/``
lists those too. ``merge_parts`` writes the parts into one file in id order: streamed, one row group per part,
without holding the table in memory when the parts are in id order already (one process); sorted in memory
when they are not (ranks and shards interleave the ids), so that every way of running gives the same table.
The samples table is merged in memory instead (:func:`merged_table`): the run's end appends the columns known
only over every row (triage, strategies) and writes ``samples.parquet`` once.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path

PART_PATTERN = re.compile(r"^(?P<table>[a-z_]+)-r(?P<rank>\d+)-(?P<seq>\d+)\.parquet$")
SHARD_FOLDER = re.compile(r"^shard-(?P<shard>\d+)$")  # parts/shard-003/: the parts of shard 3 (pipeline.shards)
SORTED_ROWS_PER_GROUP = 16384  # row groups of a table merge_parts had to sort


class DamagedPart(Exception):
    """A part file on disk cannot be read (truncated or overwritten): the message names it and what to do."""

    def __init__(self, path: Path, error: BaseException):
        super().__init__(
            f"{path} cannot be read ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
            f"it was damaged after it was written (a truncated copy, a full disk). Move it out of "
            f"{path.parent} and resume again (resume=true): the samples it held are audited again"
        )
        self.path = path


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` through a temporary file and an atomic rename; a failed write (a full
    disk) leaves neither the temporary file nor a partial ``path``."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


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
        existing = [
            int(m["seq"])
            for p in parts_dir.iterdir()
            if (m := PART_PATTERN.match(p.name)) and m["table"] == table and int(m["rank"]) == rank
        ]
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
    """The complete parts of ``table`` in ``parts_dir`` and in its shard folders (``shard-<NNN>/``), in
    (shard, rank, seq) order, ``parts_dir``'s own first; temporary files are ignored."""
    if not parts_dir.is_dir():
        return []
    found = []
    for path in parts_dir.iterdir():
        match = PART_PATTERN.match(path.name)
        if match and match["table"] == table:
            found.append(((-1, int(match["rank"]), int(match["seq"])), path))
        shard = SHARD_FOLDER.match(path.name)
        if shard and path.is_dir():
            for inner in path.iterdir():
                match = PART_PATTERN.match(inner.name)
                if match and match["table"] == table:
                    found.append(((int(shard["shard"]), int(match["rank"]), int(match["seq"])), inner))
    return [path for _, path in sorted(found)]


def read_column(parts: list[Path], column: str) -> list:
    """One column of every part (e.g. the ids already done, to resume)."""
    values: list = []
    for path in parts:
        values.extend(read_part(path, [column]).column(column).to_pylist())
    return values


def layout_differences(parts: list[Path], schema: pa.Schema) -> list[str]:
    """Columns of ``schema`` that some part lacks or stores with another type (``"name: stored -> wanted"``).

    A resume casts every part to the run's schema when it merges them; a part written by another version of
    the tool (``true_pointing_hit`` as float 1 / 0 / NaN where it is now a boolean) would be cast silently and
    wrongly (NaN becomes true), so a resume checks this first. A damaged part is a :class:`DamagedPart`.
    """
    differing: dict[str, str] = {}
    for path in parts:
        try:
            stored = pq.read_schema(path)
        except (pa.ArrowException, OSError) as error:
            raise DamagedPart(path, error) from error
        for field in schema:
            if field.name in differing:
                continue
            if field.name not in stored.names:
                differing[field.name] = f"{field.name}: missing -> {field.type}"
            elif stored.field(field.name).type != field.type:
                differing[field.name] = f"{field.name}: {stored.field(field.name).type} -> {field.type}"
    return list(differing.values())


def read_part(path: Path, columns: list[str] | None = None) -> pa.Table:
    """One part (or ``columns`` of it); a damaged file is a :class:`DamagedPart` naming it."""
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as error:
        raise DamagedPart(path, error) from error


def sort_order(ids: pa.Array | pa.ChunkedArray) -> pa.Array | None:
    """The positions that put ``ids`` in order, stable (rows of one id keep their order); None when they are in
    order already (one process writes its parts in the index's id order)."""
    if len(ids) < 2 or pc.all(pc.less_equal(ids[:-1], ids[1:])).as_py():
        return None
    return pc.sort_indices(ids)


def id_order(parts: list[Path], column: str = "id") -> pa.Array | None:
    """:func:`sort_order` of the ``column`` of ``parts`` (concatenated), read from the files alone."""
    return sort_order(pa.chunked_array([read_part(path, [column]).column(column) for path in parts], pa.string()))


def with_metadata(schema: pa.Schema, metadata: dict[str, str]) -> pa.Schema:
    """``schema`` with ``metadata`` added to its own."""
    return schema.with_metadata({**(schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}})


def merged_table(parts: list[Path], schema: pa.Schema, metadata: dict[str, str]) -> pa.Table:
    """``parts`` as one in-memory table with ``metadata`` in its schema, rows in ``id`` order (stable). For the
    samples table: the columns it still lacks (triage, strategies) are known only over every row, so it is
    merged in memory, completed and written once."""
    schema = with_metadata(schema, metadata)
    if not parts:
        return schema.empty_table()
    table = pa.concat_tables([read_part(path).select(schema.names).cast(schema) for path in parts])
    order = sort_order(table.column("id"))
    return (table if order is None else table.take(order)).replace_schema_metadata(schema.metadata)


def merge_parts(parts: list[Path], out: Path, schema: pa.Schema, metadata: dict[str, str]) -> int:
    """Write ``parts`` into ``out`` (atomically) with ``metadata`` in the schema, in id order when the schema
    has an ``id`` column (:func:`id_order`): streamed one row group per part when they are in that order
    already, sorted in memory otherwise (the rows of several ranks or shards). Returns the row count."""
    schema = with_metadata(schema, metadata)
    order = id_order(parts) if parts and "id" in schema.names else None
    rows = 0
    # whatever fails (a damaged part, a full disk), the temporary file does not stay in the run folder
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        if order is None:
            for path in parts:
                table = read_part(path).select(schema.names).cast(schema)
                writer.write_table(table)
                rows += table.num_rows
        else:
            table = pa.concat_tables([read_part(path).select(schema.names).cast(schema) for path in parts])
            for start in range(0, len(order), SORTED_ROWS_PER_GROUP):
                writer.write_table(table.take(order[start : start + SORTED_ROWS_PER_GROUP]))
            rows = table.num_rows
        if not parts:
            writer.write_table(schema.empty_table())
    return rows


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete the temporary files an interrupted run left: half-written parts (``parts/.*.tmp-PID``), a
    half-merged table (``.samples.parquet.tmp-PID``), half-written overlays and thumbnails
    (``overlays/.*.tmp-PID``, ``overlays/thumbs/.*.tmp-PID``) and hot-spot pictures (``shortcuts/``).
    None of them is ever complete; call it only while holding the run folder (resume, the merge of a sharded
    run: its shards' folders ``parts/shard-<NNN>/`` too). Returns them."""
    removed = []
    shard_folders = sorted((run_dir / "parts").glob("shard-*"))
    for folder in (
        run_dir,
        run_dir / "parts",
        *shard_folders,
        run_dir / "overlays",
        run_dir / "overlays" / "thumbs",
        run_dir / "shortcuts",
    ):
        if folder.is_dir():
            for leftover in folder.glob(".*.tmp-*"):
                if leftover.is_file():
                    leftover.unlink(missing_ok=True)
                    removed.append(leftover)
    return removed
