"""Several processes through torchrun: each rank audits its shard and writes its own parts; rank 0 merges.

The multi-process run is compared with a single-process run of the same corpus: the same rows, each
sample exactly once, parts from every rank. Two CPU processes with the gloo backend: what a GPU node does
with ``--nproc_per_node`` GPUs, less the device.
"""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.distributed import Ranks, from_environment, shard
from tests.helpers_corpus import base_overrides, good_dataset, read_summary, run_cli, run_torchrun


def test_shards_cover_every_record_once_for_any_world_size():
    items = list(range(23))
    for world in (1, 2, 3, 8):
        parts = [shard(items, Ranks(rank, world)) for rank in range(world)]
        assert sorted(x for part in parts for x in part) == items
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced


def test_ranks_come_from_torchrun_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert from_environment(0) == Ranks()  # runtime.rank other than 0 without torchrun: tests/run/test_run_folder.py
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert from_environment(0) == Ranks(2, 4, 0)


@pytest.mark.slow  # torchrun, three processes: 20 s on 2 cores
@pytest.mark.timeout(300)
def test_torchrun_two_ranks_give_the_single_process_rows(tmp_path):
    root = tmp_path / "data"
    ids = good_dataset(root, 14)
    overrides = base_overrides(root, tmp_path / "cache", **{"report.rows_per_part": 2})
    single = run_cli(overrides, tmp_path / "single")
    assert single.returncode == 0, single.stderr[-2000:]
    run_dir = tmp_path / "ranks"
    result = run_torchrun(overrides, run_dir)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    assert "rank 1/2: 7 images" in result.stdout  # rank 1 audited its half and left the report to rank 0
    parts = sorted(p.name for p in (run_dir / "parts").glob("samples-*.parquet"))
    assert {name.split("-")[1] for name in parts} == {"r000", "r001"}
    merged = pd.read_parquet(run_dir / "samples.parquet").set_index("id").sort_index()
    expected = pd.read_parquet(tmp_path / "single" / "samples.parquet").set_index("id").sort_index()
    assert merged.index.tolist() == sorted(ids)
    columns = ["label", "pred", "confidence", "true_energy_in_box", "pred_iou_tau015"]
    pd.testing.assert_frame_equal(merged[columns], expected[columns], atol=1e-5, check_exact=False)
    summary = read_summary(run_dir)
    assert summary["images"] == 14 and summary["images_scored_this_invocation"] == 14  # summed over the ranks


@pytest.mark.slow  # torchrun, three processes: 18 s on 2 cores
@pytest.mark.timeout(300)
def test_a_run_interrupted_with_one_process_is_finished_by_two(tmp_path):
    """Resume across world sizes: the parts a single process left are kept, two ranks audit only the rest."""
    root = tmp_path / "data"
    ids = good_dataset(root, 14)
    overrides = base_overrides(root, tmp_path / "cache", **{"report.rows_per_part": 2})
    run_dir = tmp_path / "run"
    assert run_cli(overrides, run_dir).returncode == 0
    parts = sorted((run_dir / "parts").glob("samples-*.parquet"))
    for part in parts[2:]:  # an interruption after two parts (a part holds a batch of 4)
        part.unlink()
    (run_dir / "samples.parquet").unlink()
    kept = set(pd.concat([pd.read_parquet(p) for p in parts[:2]])["id"])
    assert 0 < len(kept) < 14
    result = run_torchrun([*overrides, "resume=true"], run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    merged = pd.read_parquet(run_dir / "samples.parquet")
    assert sorted(merged["id"]) == sorted(ids)  # each image exactly once
    assert read_summary(run_dir)["images_scored_this_invocation"] == 14 - len(kept)
