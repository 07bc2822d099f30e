"""The reports query cleanly in pandas, DuckDB and Polars: the same averages, counts and boolean filters.

A tiny run with every kind of trouble a query meets: undefined scores (an image whose box lies outside the
centre crop, so its box scores are null), flags with nulls, ``cam.top_k=3``, and metadata with zero-padded
numeric ids, a text, an integer-with-gaps, a boolean and an all-empty column, one id without a row.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.errors import ConfigError
from tests.helpers_corpus import CLASSES, add_sample, base_overrides, noise_image, run_in_process, write_classes

duckdb = pytest.importorskip("duckdb")
pl = pytest.importorskip("polars")

IDS = [f"{i:012d}" for i in range(1, 10)]  # COCO-style: zero-padded, looks like a number


def make_data(root):
    for i, stem in enumerate(IDS):
        box = (1, 1, 2, 2) if i == 0 else (3, 4, 19, 22)  # the first: in the margin the centre crop cuts away
        add_sample(root, stem, noise_image(24, 24, i), key=CLASSES[i % 3][0], boxes=[box])
    write_classes(root)
    rows = ["id,camera,iso,flash,blank"] + [
        f"{stem},{['canon', 'nikon', ''][i % 3]},{'' if i % 4 == 0 else 100 * i},{'true' if i % 2 else 'false'},"
        for i, stem in enumerate(IDS[:-1])
    ]
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")  # the last id has no metadata row


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("query")
    make_data(tmp / "data")
    overrides = base_overrides(
        tmp / "data",
        tmp / "cache",
        **{
            "data.metadata": tmp / "data" / "metadata.csv",
            "cam.top_k": 3,
            "report.group_by": "[camera,iso,flash,blank]",
        },
    )
    summary = run_in_process(overrides, tmp / "run")
    return tmp, overrides, summary


def test_duckdb_and_polars_agree_with_pandas(run):
    tmp, _, _ = run
    path = tmp / "run" / "samples.parquet"
    frame = pd.read_parquet(path)
    assert (
        frame["true_energy_in_box"].isna().sum() == 1 and frame["true_pointing_hit"].isna().sum() >= 1
    )  # the cropped-away box
    con = duckdb.connect()
    for column in ("true_energy_in_box", "true_energy_lift", "pred_relevance_rank_accuracy", "confidence"):
        avg, count = con.execute(f"select avg({column}), count({column}) from read_parquet('{path}')").fetchone()
        assert avg == pytest.approx(frame[column].mean()) and count == frame[column].notna().sum(), column
        polars = pl.read_parquet(path)[column]
        assert (
            polars.mean() == pytest.approx(frame[column].mean()) and polars.null_count() == frame[column].isna().sum()
        ), column
    for flag in ("true_pointing_hit", "true_localised_tau015", "correct", "pred_empty"):
        hits = int((frame[flag] == True).sum())  # noqa: E712 -- nullable boolean: NA is not a hit
        assert con.execute(f"select count(*) from read_parquet('{path}') where {flag}").fetchone()[0] == hits, flag
        assert pl.read_parquet(path).filter(pl.col(flag)).height == hits, flag
        assert con.execute(f"select avg({flag}::int) from read_parquet('{path}')").fetchone()[0] == pytest.approx(
            frame[flag].mean()
        )
    grouped = con.execute(
        f"select camera, count(*), avg(true_energy_in_box) from read_parquet('{path}') group by camera"
    ).fetchall()
    expected = frame.groupby("camera", dropna=False).agg(n=("id", "size"), e=("true_energy_in_box", "mean"))
    assert len(grouped) == len(expected)
    for camera, n, energy in grouped:
        row = (
            expected.loc[pd.NA if camera is None else camera]
            if camera is not None
            else expected[expected.index.isna()].iloc[0]
        )
        assert n == row["n"] and (energy == pytest.approx(row["e"]) if energy is not None else pd.isna(row["e"]))


def test_types_nulls_and_top_k(run):
    tmp, _, _ = run
    table = pq.read_table(tmp / "run" / "samples.parquet")
    schema = table.schema
    for name in ("true_pointing_hit", "pred_localised_tau015", "correct", "true_empty", "flash"):
        assert schema.field(name).type == pa.bool_(), name
    for name in ("label", "pred", "top2_class", "top3_class"):
        assert pa.types.is_integer(schema.field(name).type), name
    for field in schema:  # a missing number is null, never NaN
        if pa.types.is_floating(field.type):
            assert pc.sum(pc.is_nan(table.column(field.name))).as_py() in (0, None), field.name
    frame = table.to_pandas()
    assert str(frame["true_pointing_hit"].dtype) == "boolean"  # pandas: NA, not an object column of None
    names = dict(CLASSES)
    keys = [key for key, _ in CLASSES]
    for k in (2, 3):
        assert (frame[f"top{k}_class_name"] == frame[f"top{k}_class"].map(lambda c: names[keys[c]])).all()
        assert (frame[f"top{k}_prob"] <= frame["confidence"] + 1e-6).all() and (frame[f"top{k}_prob"] > 0).all()
    assert (frame["top2_class"] != frame["pred"]).all() and (frame["top3_prob"] <= frame["top2_prob"] + 1e-6).all()


def test_every_column_of_every_table_is_described(run):
    tmp, _, _ = run
    for name in ("samples", "errors", "classes"):
        for field in pq.read_schema(tmp / "run" / f"{name}.parquet"):
            assert (field.metadata or {}).get(b"description"), (name, field.name)


def test_metadata_columns_keep_their_kinds_and_group(run):
    tmp, _, summary = run
    frame = pd.read_parquet(tmp / "run" / "samples.parquet").set_index("id")
    assert sorted(frame.index) == IDS  # zero-padded ids stay text
    schema = pq.read_schema(tmp / "run" / "samples.parquet")
    assert schema.field("camera").type == pa.string() and schema.field("iso").type == pa.int64()
    assert schema.field("blank").type == pa.string() and frame["blank"].isna().all()
    assert (
        frame.loc[IDS[1], "camera"] == "nikon" and frame.loc[IDS[1], "iso"] == 100 and bool(frame.loc[IDS[1], "flash"])
    )
    assert pd.isna(frame.loc[IDS[0], "iso"]) and pd.isna(frame.loc[IDS[-1], "camera"])  # a gap; no metadata row
    written = json.loads((tmp / "run" / "summary.json").read_text())
    for column in ("camera", "iso", "flash", "blank"):
        groups = written["groups"][column]
        assert sum(g["count"] for g in groups) == len(IDS), column
    assert {g["camera"] for g in written["groups"]["camera"]} == {"canon", "nikon", None}


def test_unmatched_metadata_warns_or_fails(run, tmp_path, caplog):
    from pipeline.data.records import SampleRecord
    from pipeline.setup import check_metadata_coverage

    tmp, overrides, _ = run
    with pytest.raises(ConfigError, match="data.metadata_missing.*1 of 9 ids"):
        run_in_process(overrides + ["data.metadata_missing=fail"], tmp_path / "fail")
    metadata = pd.DataFrame({"camera": ["canon"]}, index=pd.Index(["000000000001"], name="id"))
    records = [SampleRecord(i, "", 0, None) for i in ("000000000001", "000000000002")]
    with caplog.at_level("WARNING", logger="pipeline.run"):
        check_metadata_coverage(metadata, records, "warn")
    assert any("no row for 1 of 2 ids" in r.getMessage() and "'000000000002'" in r.getMessage() for r in caplog.records)
    caplog.clear()
    check_metadata_coverage(metadata, records[:1], "warn")
    assert not caplog.records


def test_metadata_with_conflicting_rows_for_an_id_is_refused(tmp_path):
    from pipeline.data.sources import read_metadata

    path = tmp_path / "meta.csv"
    path.write_text("id,camera\n001,canon\n002,nikon\n001,canon\n")  # a repeated identical row is harmless
    assert read_metadata(path)["camera"].to_dict() == {"001": "canon", "002": "nikon"}
    path.write_text("id,camera\n001,canon\n002,nikon\n001,nikon\n")  # was: the first row kept silently
    with pytest.raises(ConfigError, match="id '001' has rows with different values") as error:
        read_metadata(path)
    assert error.value.option == "data.metadata"


def test_a_metadata_column_named_like_a_report_column_is_left_out_with_a_warning(run, tmp_path, caplog):
    tmp, overrides, _ = run
    rows = ["id,correct,lens"] + [f"{stem},maybe,{i}" for i, stem in enumerate(IDS)]
    (tmp_path / "meta.csv").write_text("\n".join(rows) + "\n")
    changed = [o for o in overrides if not o.startswith(("data.metadata=", "report.group_by="))]
    with caplog.at_level("WARNING", logger="pipeline.run"):
        run_in_process(changed + [f"data.metadata={tmp_path / 'meta.csv'}"], tmp_path / "run")
    assert any("'correct'" in r.getMessage() and "left out" in r.getMessage() for r in caplog.records)
    samples = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    assert samples["correct"].dtype == "bool" and samples["lens"].notna().all()  # ours kept, the other joined
