"""A damaged part or a failed merge never leaves a traceback or a stray file (issue 11, cases 15 and 17)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from pipeline.errors import ConfigError
from pipeline.reports.parts import DamagedPart, merge_parts, read_column, write_table_atomic
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process


def test_truncated_part_then_resume_names_the_file_and_what_to_do(tmp_path):
    ids = good_dataset(tmp_path / "data", 6)
    overrides = base_overrides(
        tmp_path / "data", tmp_path / "cache", **{"report.rows_per_part": 2, "runtime.batch_size": 2}
    )
    run_dir = tmp_path / "run"
    run_in_process(overrides, run_dir)
    damaged = sorted((run_dir / "parts").glob("samples-*.parquet"))[1]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # a truncated copy
    with pytest.raises(ConfigError) as error:  # was pyarrow's ArrowInvalid traceback
        run_in_process(overrides + ["resume=true"], run_dir)
    assert error.value.option == "resume"
    assert str(damaged) in str(error.value) and "Move it out" in str(error.value) and "resume=true" in str(error.value)
    damaged.rename(tmp_path / damaged.name)  # what the message says to do
    summary = run_in_process(overrides + ["resume=true"], run_dir)
    assert (
        sorted(pd.read_parquet(run_dir / "samples.parquet")["id"]) == ids
        and summary["images_scored_this_invocation"] == 2
    )


def test_read_column_names_the_damaged_file(tmp_path):
    part = tmp_path / "samples-r000-000000.parquet"
    part.write_bytes(b"PAR1 not really")
    with pytest.raises(DamagedPart, match="samples-r000-000000.parquet cannot be read"):
        read_column([part], "id")


def test_a_failed_merge_leaves_no_temporary_file(tmp_path):
    schema = pa.schema([("id", pa.string()), ("neg_pred_empty", pa.bool_())])
    part = tmp_path / "parts" / "samples-r000-000000.parquet"
    part.parent.mkdir()
    write_table_atomic(pa.table({"id": ["a"]}), part)  # a part from a run without cam.negative
    with pytest.raises(KeyError):
        merge_parts([part], tmp_path / "samples.parquet", schema, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts"]  # no .samples.parquet.tmp-PID left


def test_resume_removes_a_half_merged_table_left_in_the_run_folder(tmp_path):
    good_dataset(tmp_path / "data", 4)
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache")
    run_in_process(overrides, tmp_path / "run")
    leftovers = [tmp_path / "run" / ".samples.parquet.tmp-4242", tmp_path / "run" / "overlays" / ".x.jpg.tmp-4242"]
    for leftover in leftovers:  # what a kill during the merge or an overlay write leaves
        leftover.parent.mkdir(exist_ok=True)
        leftover.write_bytes(b"half")
    run_in_process(overrides + ["resume=true"], tmp_path / "run")
    assert not any(leftover.exists() for leftover in leftovers)


def test_a_part_of_another_layout_is_refused_not_cast(tmp_path):
    # A part written by an older version (pointing hit as float 1 / 0 / NaN, now a nullable boolean): merging
    # would cast it silently, NaN becoming True. The resume names the column and the two types instead.
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    good_dataset(tmp_path / "data", 6)
    overrides = base_overrides(
        tmp_path / "data", tmp_path / "cache", **{"report.rows_per_part": 2, "runtime.batch_size": 2}
    )
    run_dir = tmp_path / "run"
    run_in_process(overrides, run_dir)
    older = sorted((run_dir / "parts").glob("samples-*.parquet"))[1]
    table = pq.read_table(older)
    column = table.schema.get_field_index("true_pointing_hit")
    as_float = pc.cast(table.column(column), pa.float32()).fill_null(float("nan"))
    write_table_atomic(table.set_column(column, pa.field("true_pointing_hit", pa.float32()), as_float), older)
    with pytest.raises(ConfigError) as error:
        run_in_process(overrides + ["resume=true"], run_dir)
    assert error.value.option == "resume"
    assert "true_pointing_hit: float -> bool" in str(error.value) and "another table layout" in str(error.value)
