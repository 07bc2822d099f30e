"""``report.save_probabilities=true`` -> probabilities.parquet (issue 24.3): the softmax over all classes per
image, id-keyed, in the form label-issue finders take; written as parts like maps.parquet, mended on resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import ConfigError
from pipeline.export.probabilities import COLUMN, labels_and_probabilities
from pipeline.reports.schema import descriptions
from tests.helpers_corpus import base_overrides, good_dataset, run_in_process


def overrides_for(tmp_path: Path, **extra) -> list[str]:
    return base_overrides(
        tmp_path / "data",
        tmp_path / "cache",
        **{"report.save_probabilities": "true", "report.rows_per_part": 2, "runtime.batch_size": 2, **extra},
    )


def read_probabilities(run_dir: Path) -> tuple[pd.DataFrame, np.ndarray]:
    table = pq.read_table(run_dir / "probabilities.parquet")
    values = np.stack(table.column(COLUMN).to_pylist()).astype(np.float64)
    return pd.DataFrame({"id": table.column("id").to_pylist()}), values


def test_every_row_gets_its_softmax_which_the_samples_columns_agree_with(tmp_path):
    ids = good_dataset(tmp_path / "data", 9)
    run_in_process(overrides_for(tmp_path), tmp_path / "run")
    run_dir = tmp_path / "run"
    table = pq.read_table(run_dir / "probabilities.parquet")
    assert table.schema.field(COLUMN).type == pa.list_(pa.float32(), 3)  # fixed size: C = 3 classes
    assert "softmax probability of every class" in descriptions(table.schema)[COLUMN]
    frame, probs = read_probabilities(run_dir)
    assert sorted(frame["id"]) == ids  # each once
    samples = pd.read_parquet(run_dir / "samples.parquet").set_index("id").loc[frame["id"]]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert (probs.argmax(axis=1) == samples["pred"].to_numpy()).all()
    np.testing.assert_allclose(probs.max(axis=1), samples["confidence"], atol=1e-6)
    np.testing.assert_allclose(probs[np.arange(len(probs)), samples["label"]], samples["prob_true"], atol=1e-6)
    # hardness is the entropy of this softmax in nats (computed from the logits on the device)
    entropy = -(probs * np.log(probs)).sum(axis=1)
    np.testing.assert_allclose(samples["hardness"], entropy, atol=1e-5)
    got_ids, labels, pred_probs = labels_and_probabilities(run_dir)
    assert got_ids == frame["id"].tolist() and pred_probs.shape == (9, 3) and pred_probs.dtype == np.float32
    assert (labels == samples["label"].to_numpy()).all()


def test_float16_halves_the_values_and_keeps_them(tmp_path):
    good_dataset(tmp_path / "data", 4)
    run_in_process(overrides_for(tmp_path, **{"report.probabilities_dtype": "float16"}), tmp_path / "run")
    table = pq.read_table(tmp_path / "run" / "probabilities.parquet")
    assert table.schema.field(COLUMN).type == pa.list_(pa.float16(), 3)
    _, probs = read_probabilities(tmp_path / "run")
    samples = pd.read_parquet(tmp_path / "run" / "samples.parquet").set_index("id").loc[table.column("id").to_pylist()]
    np.testing.assert_allclose(probs.max(axis=1), samples["confidence"], atol=1e-3)
    _, _, pred_probs = labels_and_probabilities(tmp_path / "run")
    np.testing.assert_allclose(pred_probs.sum(axis=1), 1.0, atol=1e-6)  # renormalised after the rounding


def test_off_by_default_and_a_wrong_dtype_is_refused(tmp_path):
    good_dataset(tmp_path / "data", 3)
    run_in_process(base_overrides(tmp_path / "data", tmp_path / "cache"), tmp_path / "run")
    assert not (tmp_path / "run" / "probabilities.parquet").exists()
    assert not list((tmp_path / "run" / "parts").glob("probabilities-*"))
    with pytest.raises(ConfigError, match="report.probabilities_dtype"):
        run_in_process(overrides_for(tmp_path, **{"report.probabilities_dtype": "float64"}), tmp_path / "run2")


def _part_holding(run_dir: Path, table: str, sample_id: str) -> Path:
    return next(
        p for p in sorted((run_dir / "parts").glob(f"{table}-*.parquet")) if sample_id in set(pd.read_parquet(p)["id"])
    )


def test_missing_and_orphan_rows_are_mended_on_resume(tmp_path):
    ids = good_dataset(tmp_path / "data", 8)
    overrides, run_dir = overrides_for(tmp_path), tmp_path / "run"
    run_in_process(overrides, run_dir)
    first, before = read_probabilities(run_dir)
    for name in ("samples.parquet", "errors.parquet", "classes.parquet", "probabilities.parquet", "summary.json"):
        (run_dir / name).unlink(missing_ok=True)  # a stopped run: only the parts
    _part_holding(run_dir, "probabilities", ids[0]).unlink()  # killed after the samples part, before this one
    _part_holding(run_dir, "samples", ids[7]).unlink()  # killed after this part, before the samples part
    run_in_process(overrides + ["resume=true"], run_dir)
    again, after = read_probabilities(run_dir)
    assert sorted(again["id"]) == ids  # each once: the orphan dropped, the missing made again
    by_id = dict(zip(first["id"], before))
    for sample_id, values in zip(again["id"], after):  # the same model and input: the same softmax
        np.testing.assert_allclose(values, by_id[sample_id], atol=1e-6)
