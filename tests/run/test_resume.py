"""Killed runs resume: every sample exactly once, parts readable at all times, leftovers of a kill removed,
and a used folder is refused without ``resume=true``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.errors import ConfigError
from tests.helpers_corpus import (
    CONFIG_LINE,
    add_sample,
    base_overrides,
    good_dataset,
    kill_when_parts_written,
    noise_image,
    run_cli,
    run_in_process,
)


def _read_every_part(parts_dir: Path) -> dict[str, list[str]]:
    """Ids per table from every complete part; raises if any part on disk is unreadable."""
    ids: dict[str, list[str]] = {"samples": [], "errors": []}
    for path in sorted(parts_dir.glob("*.parquet")):
        table = pq.read_table(path)  # a half-written part would raise here
        ids[path.name.split("-", 1)[0]].extend(table.column("id").to_pylist())
    return ids


@pytest.mark.slow  # a real process killed mid-run: 30 s on 2 cores; resume stays in CI (below, tests/cli/test_resume_cli.py)
def test_sigkill_mid_run_then_resume_gives_every_sample_exactly_once(tmp_path):
    root, run_dir = tmp_path / "data", tmp_path / "run"
    ids = good_dataset(root, 120, side=16)
    for i in range(0, 120, 30):  # bad files spread through the run: decode failures and an index failure
        add_sample(root, f"img_{i:05d}b", b"not an image", boxes=[(1, 1, 5, 5)], size=(16, 16))
        ids.append(f"img_{i:05d}b")
    add_sample(root, "img_00099c", noise_image(16, 16, 0), key=None)
    ids.append("img_00099c")
    overrides = base_overrides(
        root,
        tmp_path / "cache",
        **{"report.rows_per_part": 8, "runtime.batch_size": 4, "runtime.num_workers": 2, "+model.kwargs.delay_s": 0.03},
    )
    # killed once a part is written, every part on disk read at every poll: readable while the run is writing
    kill_when_parts_written(overrides, run_dir, parts=1, while_waiting=_read_every_part)
    assert not (run_dir / "samples.parquet").exists()
    before = _read_every_part(run_dir / "parts")  # every part left by the killed run reads
    done_before = before["samples"] + before["errors"]
    assert 0 < len(done_before) < len(ids) and len(set(done_before)) == len(done_before)

    with pytest.raises(ConfigError, match="set resume=true") as error:  # same folder without resume=true
        run_in_process(overrides, run_dir)
    assert error.value.option == "resume"

    summary = run_in_process(overrides + ["resume=true"], run_dir)
    samples = pd.read_parquet(run_dir / "samples.parquet")["id"].tolist()
    errors = pd.read_parquet(run_dir / "errors.parquet")["id"].tolist()
    assert sorted(samples + errors) == sorted(ids)  # every sample exactly once: none missing, none twice
    assert len(errors) == 5 and summary["images"] == 120 and summary["errors"] == 5
    index_left = 0 if "img_00099c" in done_before else 1  # index errors are written, not "scored"
    assert summary["images_scored_this_invocation"] + index_left == len(ids) - len(done_before)


def test_resume_removes_half_written_parts_of_the_interrupted_run(tmp_path):
    good_dataset(tmp_path / "data", 4)
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache")
    run_in_process(overrides, tmp_path / "run")
    leftovers = [  # what a kill mid-write leaves: a part, an overlay's thumbnail
        tmp_path / "run" / "parts" / ".samples-r000-000009.parquet.tmp-4242",
        tmp_path / "run" / "overlays" / "thumbs" / ".img_00001.jpg.tmp-4242",
    ]
    for leftover in leftovers:
        leftover.parent.mkdir(parents=True, exist_ok=True)
        leftover.write_bytes(b"half")
    summary = run_in_process(overrides + ["resume=true"], tmp_path / "run")
    assert not any(leftover.exists() for leftover in leftovers) and summary["images"] == 4


@pytest.mark.slow
def test_cli_refuses_a_used_folder_without_resume(tmp_path):
    good_dataset(tmp_path / "data", 4)
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache")
    assert run_cli(overrides, tmp_path / "run").returncode == 0
    result = run_cli(overrides, tmp_path / "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("cam-audit:")]
    assert len(ours) == 1 and CONFIG_LINE.match(ours[0])["option"] == "resume" and "resume=true" in ours[0]
