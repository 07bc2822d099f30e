"""compare refuses to compare different data, and every exit it gives is true (issue 23, case 4).

Before: two datasets sharing ids but not labels were compared (paired tests, exit 0); runs whose class lists
were reordered gave an empty classes_diff.parquet; a gate on a metric one run lacks printed "drop +nan ...
passed" (exit 0); an unwritable --out was a traceback and exit 1 (the gate's "regression")."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import compare_main
from pipeline.errors import ExitCode
from tests.helpers_corpus import (
    CLASSES,
    add_sample,
    base_overrides,
    noise_image,
    run_in_process,
    write_classes,
)
from tests.reports.test_compare import _fake_run


def _dataset(root: Path, shift: int = 0, seed: int = 0, classes=CLASSES) -> None:
    """good_dataset's 9 images (same ids, same pictures for the same seed), labels shifted by ``shift``."""
    for i in range(9):
        add_sample(
            root,
            f"img_{i:05d}",
            noise_image(24, 24, seed + i),
            key=CLASSES[(i + shift) % 3][0],
            boxes=[(3, 4, 19, 22)],
        )
    write_classes(root, classes)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("compare_data")
    variants = {
        "night1": {},
        "relabelled": {"shift": 1},  # the same ids and pictures, every true label another
        "reordered": {"classes": (CLASSES[2], CLASSES[0], CLASSES[1])},  # the same classes, another output order
        "renamed": {"classes": (("n001", "lynx"), CLASSES[1], CLASSES[2])},  # another class list
        "new_pictures": {"seed": 100},  # other images under the same ids and labels
    }
    for name, options in variants.items():
        _dataset(tmp / f"data_{name}", **options)
        run_in_process(base_overrides(tmp / f"data_{name}", tmp / "cache"), tmp / name)
    return tmp


def _compare(runs: Path, current: str, tmp_path: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = compare_main([str(runs / "night1"), str(runs / current), "--out", str(tmp_path / "cmp"), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_common_ids_with_other_true_labels_are_refused(runs, tmp_path, capsys):
    code, out, err = _compare(runs, "relabelled", tmp_path, capsys, "--max-drop", "accuracy=0.5")
    assert code == ExitCode.CONFIG and out == ""
    assert len(err.strip().splitlines()) == 1 and "9 of 9 common ids have another true label" in err, err
    assert "relabelled/samples.parquet" in err and not (tmp_path / "cmp").exists()


def test_other_class_lists_are_refused(runs, tmp_path, capsys):
    code, _, err = _compare(runs, "renamed", tmp_path, capsys)
    assert code == ExitCode.CONFIG and "different class lists" in err and "only in the current run: lynx" in err


def test_a_reordered_class_list_is_aligned_by_name_and_said(runs, tmp_path, capsys):
    code, out, _ = _compare(runs, "reordered", tmp_path, capsys)
    assert code == ExitCode.OK
    assert out.splitlines()[1].startswith("  DATA: the class lists hold the same 3 classes in another order")
    classes = pd.read_parquet(tmp_path / "cmp" / "classes_diff.parquet")  # was empty: no label matched
    assert sorted(classes["label_name"]) == ["bird", "cat", "dog"] and classes["count"].sum() == 9
    # aligned: the baseline's indices and names; the same model's output index now names another class
    samples = pd.read_parquet(tmp_path / "cmp" / "samples_diff.parquet")
    baseline = pd.read_parquet(runs / "night1" / "samples.parquet").set_index("id")
    assert (samples.set_index("id")["label"] == baseline.loc[samples["id"], "label"]).all()


def test_other_pictures_under_the_same_ids_and_labels_are_said_first(runs, tmp_path, capsys):
    code, out, _ = _compare(runs, "new_pictures", tmp_path, capsys)
    assert code == ExitCode.OK
    assert out.splitlines()[1].startswith("  DATA: the dataset fingerprints differ")
    assert "dataset fingerprints differ" in json.loads((tmp_path / "cmp" / "compare.json").read_text())["data"][0]


def test_the_same_data_says_nothing(runs, tmp_path, capsys):
    code, out, _ = _compare(runs, "night1", tmp_path, capsys)
    assert code == ExitCode.OK and "DATA:" not in out


def test_a_gate_on_a_metric_one_run_lacks_is_a_configuration_error(tmp_path, capsys):
    _fake_run(tmp_path / "before", [True] * 20)
    _fake_run(tmp_path / "after", [True] * 20)  # neither has true_excess_energy
    args = [str(tmp_path / "before"), str(tmp_path / "after"), "--out", str(tmp_path / "cmp")]
    assert compare_main(args + ["--max-drop", "true_excess_energy=0.1"]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert err.startswith("cam-audit compare: cannot compare: --max-drop: true_excess_energy:") and "passed" not in err
    assert compare_main(args + ["--max-class-drop", "true_excess_energy=0.1"]) == ExitCode.CONFIG
    assert "--max-class-drop: true_excess_energy" in capsys.readouterr().err
    assert compare_main(args + ["--max-drop", "accuracy=0.1"]) == ExitCode.OK  # a gate it can evaluate


def test_a_gate_no_common_image_defines_is_a_configuration_error(tmp_path, capsys):
    _fake_run(tmp_path / "before", [True] * 20)
    _fake_run(tmp_path / "after", [True] * 20)
    frame = pd.read_parquet(tmp_path / "after" / "samples.parquet")
    frame["true_energy_lift"] = float("nan")  # e.g. no image has a box any more
    frame.to_parquet(tmp_path / "after" / "samples.parquet")
    args = [str(tmp_path / "before"), str(tmp_path / "after"), "--out", str(tmp_path / "cmp")]
    assert compare_main(args + ["--max-drop", "true_energy_lift=0.1"]) == ExitCode.CONFIG
    assert "no common image has 'true_energy_lift' defined in both runs" in capsys.readouterr().err


def test_an_unwritable_out_is_exit_2_and_a_full_disk_exit_4(tmp_path, capsys, monkeypatch):
    _fake_run(tmp_path / "before", [True] * 20)
    _fake_run(tmp_path / "after", [True] * 20)
    (tmp_path / "a_file").write_text("x")
    args = [str(tmp_path / "before"), str(tmp_path / "after"), "--max-drop", "accuracy=0.1"]
    assert compare_main(args + ["--out", str(tmp_path / "a_file" / "cmp")]) == ExitCode.CONFIG  # was exit 1
    err = capsys.readouterr().err
    assert err.startswith("cam-audit compare: --out: the comparison cannot be written") and "Traceback" not in err

    import pipeline.compare

    def full(result, out):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline.compare, "write_comparison", full)
    assert compare_main(args + ["--out", str(tmp_path / "cmp")]) == ExitCode.DISK_FULL
    assert "free space" in capsys.readouterr().err
