"""What a resume compares with the run it continues (issue 23, cases 1 and 2, and the checkpoint case).

Each test makes a finished run, changes one thing that changes the meaning of the rows (the content of a
file under the same path, the set audited), and checks that ``resume=true`` is refused naming it, with the
run folder left as it was. Before: the classes file's path was compared, not its content; the dataset was
not compared at all; ``data.limit`` was left out; a folder without ``parts/fingerprint.json`` resumed after
one warning.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.run_folder import FINGERPRINT_NAME
from tests.helpers_corpus import add_sample, base_overrides, good_dataset, noise_image, run_in_process, write_classes
from tests.helpers_tiny_model import TinyNet


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _differing(error: ConfigError) -> list[str]:
    """The keys a refusal names: "...differs from the one in DIR in a, b: ..." -> [a, b]."""
    message = str(error)
    return message.split(" differs from the one in ", 1)[1].split(" in ", 1)[1].split(":", 1)[0].split(", ")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, list[str]]:
    """One finished 6-image run with a checkpoint file, made once under ``work/`` and copied to ``pristine/``:
    ``(folder holding both, overrides)``."""
    base = tmp_path_factory.mktemp("resume_checks")
    work = base / "work"
    root = work / "data"
    good_dataset(root, 6)
    checkpoint = work / "model.pt"
    torch.save(TinyNet().state_dict(), checkpoint)
    overrides = base_overrides(root, work / "cache", **{"model.checkpoint": checkpoint})
    run_in_process(overrides, work / "run")
    shutil.copytree(work, base / "pristine")
    return base, overrides


@pytest.fixture
def finished(pristine) -> tuple[Path, list[str], Path]:
    """The finished run, its data and checkpoint as they were made, at the same paths (the resume compares
    the configuration, paths included): ``(data root, overrides, run_dir)``; the checkpoint is
    ``root.parent / "model.pt"``. Each test may change them: the next one gets them back."""
    base, overrides = pristine
    shutil.rmtree(base / "work")
    shutil.copytree(base / "pristine", base / "work")
    return base / "work" / "data", overrides, base / "work" / "run"


def _refused(overrides: list[str], run_dir: Path) -> ConfigError:
    before = _snapshot(run_dir)
    with pytest.raises(ConfigError) as error:
        run_in_process(overrides + ["resume=true"], run_dir)
    assert error.value.option == "resume"
    assert _snapshot(run_dir) == before  # nothing appended, nothing left behind
    return error.value


def test_a_classes_file_edited_in_place_is_refused_naming_the_class_list(finished):
    root, overrides, run_dir = finished
    # the same path, the lines swapped: label 0 would mean "dog" in the rows audited after the resume
    write_classes(root, (("n002", "dog"), ("n001", "cat"), ("n003", "bird")))
    error = _refused(overrides, run_dir)
    assert "data.classes_sha256" in _differing(error), str(error)
    assert "the class list" in str(error)


def test_a_renamed_class_alone_is_refused(finished):
    """Keys unchanged (the labels keep their indices), a name changed: only the class list's hash differs."""
    root, overrides, run_dir = finished
    write_classes(root, (("n001", "lynx"), ("n002", "dog"), ("n003", "bird")))
    assert _differing(_refused(overrides, run_dir)) == ["data.classes_sha256"]


def test_a_relabelled_image_is_refused_naming_the_dataset(finished):
    root, overrides, run_dir = finished
    add_sample(root, "img_00000", noise_image(24, 24, 0), key="n003", boxes=[(3, 4, 19, 22)])  # was n001
    assert "data.dataset_sha256" in _differing(_refused(overrides, run_dir))


def test_edited_boxes_are_refused(finished):
    root, overrides, run_dir = finished
    xml = root / "annotations" / "img_00001.xml"
    xml.write_text(xml.read_text().replace("<xmin>3</xmin>", "<xmin>9</xmin>"))
    assert _differing(_refused(overrides, run_dir)) == ["data.boxes_sha256"]


def test_another_checkpoint_under_the_same_path_is_refused(finished):
    root, overrides, run_dir = finished
    torch.save(TinyNet(seed=7).state_dict(), root.parent / "model.pt")  # same path, other weights
    assert _differing(_refused(overrides, run_dir)) == ["model.weights_sha256"]


def test_an_edited_metadata_table_is_refused(tmp_path):
    """Found while trying to break resume: the metadata CSV's path was compared, not its values; the rows
    audited after the resume would have joined the edited values (a group_by mixing two versions)."""
    good_dataset(tmp_path / "data", 4)
    meta = tmp_path / "meta.csv"
    meta.write_text("id,site\n" + "".join(f"img_{i:05d},a\n" for i in range(4)))
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache", **{"data.metadata": meta})
    run_in_process(overrides, tmp_path / "run")
    meta.write_text("id,site\n" + "".join(f"img_{i:05d},{'b' if i == 3 else 'a'}\n" for i in range(4)))
    assert _differing(_refused(overrides, tmp_path / "run")) == ["data.metadata_sha256"]
    meta.write_text("id,site\n" + "".join(f"img_{i:05d},a\n" for i in range(4)))  # back as it was: accepted
    assert run_in_process(overrides + ["resume=true"], tmp_path / "run")["images"] == 4


def test_another_data_limit_is_refused_naming_it(tmp_path):
    """Case 2: a resume that leaves out data.limit=2 would have audited the whole folder into the report."""
    good_dataset(tmp_path / "data", 6)
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache")
    run_in_process(overrides + ["data.limit=2"], tmp_path / "run")
    error = _refused(overrides, tmp_path / "run")
    assert _differing(error)[0] == "data.limit", str(error)  # and the dataset fingerprint: 2 records -> 6
    summary = run_in_process(overrides + ["data.limit=2", "resume=true"], tmp_path / "run")
    assert summary["images"] == 2


def test_precision_auto_resolving_otherwise_on_resume_is_refused(finished, monkeypatch):
    """Found while trying to break resume: runtime.precision=auto is fp32 on the CPU and bf16 on CUDA; the
    fingerprint held the option ("auto" both times), so a CPU run resumed on a GPU appended bf16 rows to fp32
    ones. Simulated here by resolving auto as a CUDA machine would."""
    import pipeline.setup

    _, overrides, run_dir = finished
    original = pipeline.setup.resolve_precision
    monkeypatch.setattr(
        pipeline.setup,
        "resolve_precision",
        lambda option, device: "bf16" if option == "auto" else original(option, device),
    )
    error = _refused(overrides, run_dir)
    assert _differing(error) == ["runtime.precision"] and 'runtime.precision: "fp32" -> "bf16"' in str(error)
    summary = run_in_process(overrides + ["resume=true", "runtime.precision=fp32"], run_dir)  # what to do instead
    assert summary["images"] == 6


def test_the_same_configuration_with_other_runtime_options_resumes(finished):
    _, overrides, run_dir = finished
    summary = run_in_process(overrides + ["resume=true", "runtime.batch_size=3", "report.rows_per_part=7"], run_dir)
    assert summary["images"] == 6 and summary["images_scored_this_invocation"] == 0


def test_a_folder_without_fingerprint_is_refused_unless_unchecked(finished, capsys):
    _, overrides, run_dir = finished
    (run_dir / "parts" / FINGERPRINT_NAME).unlink()
    error = _refused(overrides, run_dir)
    assert "runtime.resume_unchecked=true" in str(error) and "cannot be checked" in str(error)
    summary = run_in_process(overrides + ["resume=true", "runtime.resume_unchecked=true"], run_dir)
    assert summary["images"] == 6 and "resumed anyway" in capsys.readouterr().err
    assert sorted(pd.read_parquet(run_dir / "samples.parquet")["id"]) == [f"img_{i:05d}" for i in range(6)]


def test_a_fingerprint_of_an_older_version_is_refused_unless_unchecked(finished):
    """Keys this version records and the stored file lacks (here the class list's hash) cannot be checked."""
    import json

    _, overrides, run_dir = finished
    path = run_dir / "parts" / FINGERPRINT_NAME
    stored = json.loads(path.read_text())
    del stored["data.classes_sha256"], stored["fingerprint_version"]  # as version 1 wrote it
    path.write_text(json.dumps(stored))
    error = _refused(overrides, run_dir)
    assert "does not record data.classes_sha256, fingerprint_version (written by an older version)" in str(error)
    assert run_in_process(overrides + ["resume=true", "runtime.resume_unchecked=true"], run_dir)["images"] == 6
