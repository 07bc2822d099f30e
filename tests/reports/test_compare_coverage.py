"""compare's coverage gates, its verdict and ``--format json`` (issue 20.1, 20.3).

Before: a night that audited 60 of 300 images compared its 60 with the baseline's and exited 0; compare.json
had no pass/fail of its own, and a scheduler had to read the exit status or parse text.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.cli import compare_main
from pipeline.errors import ExitCode
from tests.reports.test_compare import _fake_run


def _with_size(folder, size: int, errors: list[tuple[str, str]] = ()) -> None:
    """Give a fake run a dataset size (summary.json, as a real run's provenance) and errors.parquet rows."""
    (folder / "summary.json").write_text(json.dumps({"provenance": {"dataset": {"samples": size, "sha256": "x"}}}))
    frame = pd.DataFrame(
        {
            "id": [i for i, _ in errors],
            "path": "",
            "stage": [s for _, s in errors],
            "error_type": "E",
            "message": "m",
        },
        dtype="string",
    )
    frame.to_parquet(folder / "errors.parquet")


@pytest.fixture()
def nights(tmp_path):
    _fake_run(tmp_path / "reference", [True] * 30)
    _with_size(tmp_path / "reference", 30)
    _fake_run(tmp_path / "third", [True] * 10)  # the first 10 of the same 30 ids: the folder held a third
    _with_size(tmp_path / "third", 10)
    _fake_run(tmp_path / "skipping", [True] * 20)  # 10 of 30 undecodable tonight (+ an overlay error: not skipped)
    _with_size(
        tmp_path / "skipping",
        30,
        [(f"img{i:03d}", "decode") for i in range(20, 30)] + [("img000", "overlay")],
    )
    return tmp_path


def _compare(nights, current, *options, fmt="json"):
    out = nights / f"cmp-{current}"
    return compare_main(
        [str(nights / "reference"), str(nights / current), "--out", str(out), "--format", fmt, *options]
    )


def test_a_night_with_a_third_of_the_images_fails_the_reference_coverage_gate(nights, capsys):
    assert _compare(nights, "third") == ExitCode.OK  # no gate asked for: the old behaviour, a pass
    capsys.readouterr()
    assert _compare(nights, "third", "--min-reference-coverage", "0.98", "--min-coverage", "0.95") == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["verdict"] == "fail" and printed["exit_code"] == 1
    [gate] = printed["tripped"]  # its own dataset (10 images) was audited whole: only the reference gate trips
    assert gate["metric"] == "min_reference_coverage" and gate["value"] == pytest.approx(10 / 30)
    assert (gate["audited"], gate["baseline_audited"], gate["common"], gate["threshold"]) == (10, 30, 10, 0.98)
    assert "min_reference_coverage 0.3333 < 0.98" in printed["message"]
    assert printed["coverage"]["reference_coverage"] == pytest.approx(1 / 3)


def test_skipped_images_fail_the_dataset_coverage_and_skipped_rise_gates(nights, capsys):
    code = _compare(nights, "skipping", "--min-coverage", "0.95", "--max-skipped-rise", "0.01")
    printed = json.loads(capsys.readouterr().out)
    assert code == 1 and printed["verdict"] == "fail"
    values = {g["metric"]: g["value"] for g in printed["tripped"]}
    assert values == pytest.approx({"min_coverage": 20 / 30, "max_skipped_rise": 10 / 30})
    current = printed["coverage"]["current"]
    assert (current["audited"], current["skipped"], current["dataset_size"]) == (20, 10, 30)  # overlay not counted
    assert _compare(nights, "skipping", "--min-coverage", "0.6", "--max-skipped-rise", "0.34") == ExitCode.OK


def test_json_output_is_compare_json_and_its_verdict_is_the_exit_status(nights, capsys):
    for options, expected in (((), ExitCode.OK), (("--min-reference-coverage", "0.5"), ExitCode.REGRESSION)):
        code = _compare(nights, "third", "--max-drop", "accuracy=0.01", *options)
        out = capsys.readouterr().out
        assert len(out.splitlines()) == 1  # one JSON line, nothing else on stdout
        printed = json.loads(out)
        assert code == expected == printed["exit_code"]
        assert printed["verdict"] == ("pass" if code == 0 else "fail")
        written = json.loads((nights / "cmp-third" / "compare.json").read_text())
        assert list(written)[:2] == ["verdict", "tripped"]  # the verdict first in the file
        assert {key: printed[key] for key in written} == written
        assert (printed["event"], printed["logger"], printed["out"]) == (
            "compare",
            "pipeline.compare",
            str(nights / "cmp-third"),
        )


def test_text_output_ends_with_the_verdict(nights, capsys):
    assert _compare(nights, "third", "--min-reference-coverage", "0.98", fmt="text") == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1].startswith("  verdict: FAIL (reference -> third: min_reference_coverage")
    assert "GATE min_reference_coverage 0.98: 0.3333" in captured.out
    assert captured.err.startswith("cam-audit compare: REGRESSION: verdict: FAIL")


def test_json_errors_are_json_lines_on_stderr(nights, capsys):
    code = compare_main([str(nights / "reference"), str(nights / "nowhere"), "--format", "json"])
    captured = capsys.readouterr()
    assert code == ExitCode.CONFIG and captured.out == ""
    error = json.loads(captured.err)
    assert error["event"] == "error" and error["exit_code"] == 2 and "cannot compare" in error["message"]
    assert (
        compare_main([str(nights / "reference"), str(nights / "third"), "--min-coverage", "95", "--format", "json"])
        == 2
    )
    assert "--min-coverage must lie in [0, 1]" in json.loads(capsys.readouterr().err)["message"]
