"""Safe writing and paths: ids cannot escape the run folder, manifests cannot leave their root."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from pipeline.reports.overlays import safe_file_stem
from tests.helpers_corpus import SAFE_NAME, base_overrides, noise_image, run_in_process, write_classes


def _manifest_dataset(tmp_path: Path) -> Path:
    """A manifest in ``data/`` naming two images inside (crafted ids) and one at ``../outside.jpg``."""
    root = tmp_path / "data"
    root.mkdir()
    noise_image(24, 24, 1).save(root / "a.jpg")
    noise_image(24, 24, 2).save(root / "b.jpg")
    noise_image(24, 24, 3).save(tmp_path / "outside.jpg")
    write_classes(root)
    pd.DataFrame(
        {
            "id": ["../../evil", "../élan/../../x", "outside"],
            "path": ["a.jpg", "b.jpg", "../outside.jpg"],
            "label": ["n001", "n002", "n003"],
            "boxes": ["[[2, 2, 20, 20]]"] * 3,
        }
    ).to_csv(root / "manifest.csv", index=False)
    return root


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_crafted_ids_and_outside_paths_stay_contained(tmp_path):
    root = _manifest_dataset(tmp_path)
    before = _files(tmp_path)
    run_dir = tmp_path / "runs" / "run"
    # one of the three samples points outside the data folder and is an error row by design: a third of the
    # run, beyond the default failure budget checked at the end
    extra = {"report.overlays": "all", "runtime.max_error_fraction": 1.0}
    overrides = base_overrides(root, tmp_path / "cache", manifest=root / "manifest.csv", **extra)
    run_in_process(overrides, run_dir)
    created = _files(tmp_path) - before
    assert created and all(run_dir in p.parents for p in created), sorted(map(str, created))
    overlays = sorted(p.name for p in (run_dir / "overlays").glob("*.jpg"))  # (and their thumbs/)
    assert len(overlays) == 2 and all(SAFE_NAME.match(name) for name in overlays), overlays
    samples = pd.read_parquet(run_dir / "samples.parquet")
    assert sorted(samples["id"]) == ["../../evil", "../élan/../../x"]  # the id itself is kept, only file names change
    error = pd.read_parquet(run_dir / "errors.parquet").iloc[0]
    assert (
        (error.id, error.stage) == ("outside", "index")
        and "outside" in error.message
        and "allow_outside_root" in error.message
    )


def test_allow_outside_root_lets_the_outside_image_in(tmp_path):
    root = _manifest_dataset(tmp_path)
    overrides = base_overrides(
        root, tmp_path / "cache", manifest=root / "manifest.csv", **{"data.allow_outside_root": "true"}
    )
    summary = run_in_process(overrides, tmp_path / "run")
    samples = pd.read_parquet(tmp_path / "run" / "samples.parquet").set_index("id")
    assert summary["errors"] == 0 and Path(samples.loc["outside", "path"]) == (tmp_path / "outside.jpg").resolve()


def test_safe_file_stem_cannot_traverse():
    for sample_id in ("../../evil", "/etc/passwd", "..", ".", "", "a/b\\c", "猫", "x" * 500, "-rf"):
        stem = safe_file_stem(sample_id)
        assert re.fullmatch(r"[A-Za-z0-9._-]+", stem) and not stem.startswith(".") and len(stem) <= 89, (
            sample_id,
            stem,
        )
    assert safe_file_stem("a/b") != safe_file_stem("a_b")  # ids that clean alike still get their own file
