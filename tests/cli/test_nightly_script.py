"""scripts/nightly.sh: audits a night, compares it with the pinned reference and with the previous finished night
(the default gates: coverage, overall and per class), logs JSON lines only, passes statuses on (issue 20).

Before: each night was compared with the night before only, so a regression tripped once and became the next
baseline; a night that audited a third of the images passed; cron.log mixed JSON lines with compare's text.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers_corpus import (
    CLASSES,
    MAIN,
    add_sample,
    base_overrides,
    good_dataset,
    noise_image,
    run_in_process,
    write_classes,
)

SCRIPT = MAIN / "scripts" / "nightly.sh"


def night(tmp: Path, name: str, overrides: list[str], *args: str, gates: str | None = None) -> dict:
    """Run the script (``args``: e.g. ``pin NIGHT``); returns its status, its log lines parsed (stdout and stderr
    together, as in cron.log) and its raw output."""
    env = {
        **os.environ,
        "NIGHTLY_ROOT": str(tmp / "nights"),
        "NIGHTLY_NAME": name,
        "PYTHON": sys.executable,
        "NIGHTLY_ARGS": " ".join(overrides),
    }
    if gates is not None:
        env["NIGHTLY_GATES"] = gates
    done = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=400)
    text = done.stdout + done.stderr
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line in the nightly log: {line!r}\n{text[-3000:]}")
    return {"code": done.returncode, "log": lines, "text": text}


def events(result: dict, name: str) -> list[dict]:
    return [line for line in result["log"] if line.get("event") == name]


def test_nights_compare_with_the_pinned_reference_and_log_json_lines(tmp_path):
    good_dataset(tmp_path / "data", 6)
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache")
    first = night(tmp_path, "2026-11-29", overrides)
    assert first["code"] == 0, first["text"][-3000:]
    [pinned] = events(first, "reference_pinned")
    assert pinned["reference"] == "2026-11-29" and pinned["reason"] == "the first finished night"
    assert (tmp_path / "nights" / "REFERENCE").read_text() == "2026-11-29\n"
    assert events(first, "summary") and not events(first, "compare")  # the audit's own events; nothing to compare
    assert "tonight is the reference" in events(first, "nightly_end")[0]["message"]
    (tmp_path / "nights" / "2026-11-30").mkdir()  # a night that died before its summary: never a baseline
    second = night(tmp_path, "2026-12-01", overrides)
    assert second["code"] == 0, second["text"][-3000:]
    [compared] = events(second, "compare")  # the previous finished night is the reference: compared once
    written = json.loads((tmp_path / "nights" / "2026-12-01.compare" / "2026-11-29" / "compare.json").read_text())
    assert compared["verdict"] == written["verdict"] == "pass" and compared["exit_code"] == 0
    assert written["overall"]["images_compared"] == 6
    gated = {(g["metric"], g["scope"]) for g in written["gates"]}  # the default gates are on
    assert {
        ("min_coverage", "coverage"),
        ("min_reference_coverage", "coverage"),
        ("max_skipped_rise", "coverage"),
    } <= gated
    assert {("accuracy", "overall"), ("true_energy_in_box", "overall"), ("accuracy", "per class")} <= gated
    assert ("true_energy_in_box", "per class") in gated
    assert events(second, "nightly_end")[0]["verdict"] == "pass"
    bad = night(tmp_path, "2026-12-02", overrides + ["cam.method=nope"])
    assert bad["code"] == 2 and not (tmp_path / "nights" / "2026-12-02").exists()
    assert events(bad, "nightly_end")[0]["exit_code"] == 2 and events(bad, "error")  # the audit's own error event


# Seven runs of the script (about a dozen Python processes: 50-120 s on 2 cores): the tests of the pinned
# reference over several nights are slow (make test-all); the first test above keeps one pin and one compare.
SEVEN_NIGHTS = pytest.mark.slow


@pytest.fixture(scope="module")
def nights(tmp_path_factory) -> dict:
    """12 images, each labelled with the class TinyNet seed 0 predicts for it (accuracy 1, found by a first
    audit), while seed 1 predicts one class for every image (here: accuracy 0, 12 broke, McNemar p = 0.0005).
    Night 1 is good and pins itself; nights 2 and 3 regressed; night 3 is then pinned by hand; night 4 is the
    regressed model again; night 5 the same model on a third of the images."""
    tmp = tmp_path_factory.mktemp("nightly")
    for i in range(12):
        add_sample(tmp / "probe", f"img_{i:05d}", noise_image(24, 24, i), key="n001", boxes=[(3, 4, 19, 22)])
    write_classes(tmp / "probe")
    run_in_process(base_overrides(tmp / "probe", tmp / "cache"), tmp / "probe_run")
    predicted = pd.read_parquet(tmp / "probe_run" / "samples.parquet").set_index("id")["pred"]
    for i in range(12):
        key = CLASSES[int(predicted[f"img_{i:05d}"])][0]
        for folder in ("data", "third") if i % 3 == 0 else ("data",):
            add_sample(tmp / folder, f"img_{i:05d}", noise_image(24, 24, i), key=key, boxes=[(3, 4, 19, 22)])
    write_classes(tmp / "data")
    write_classes(tmp / "third")
    good = base_overrides(tmp / "data", tmp / "cache")
    regressed = base_overrides(tmp / "data", tmp / "cache", **{"+model.kwargs.seed": 1})
    out = {"root": tmp / "nights"}
    out["n1"] = night(tmp, "2026-12-06", good)
    out["n2"] = night(tmp, "2026-12-07", regressed)
    out["n3"] = night(tmp, "2026-12-08", regressed)
    out["pin_unfinished"] = night(tmp, "x", [], "pin", "2026-12-31")
    out["pin"] = night(tmp, "x", [], "pin", "2026-12-08")
    out["n4"] = night(tmp, "2026-12-09", regressed)
    out["n5"] = night(tmp, "2026-12-10", base_overrides(tmp / "third", tmp / "cache", **{"+model.kwargs.seed": 1}))
    return out


def _by_baseline(result: dict) -> dict[str, dict]:
    return {Path(line["baseline"]).name: line for line in events(result, "compare")}


@SEVEN_NIGHTS
def test_a_regressed_night_stays_red_against_the_pinned_reference(nights):
    assert nights["n1"]["code"] == 0, nights["n1"]["text"][-3000:]
    summary = json.loads((nights["root"] / "2026-12-06" / "summary.json").read_text())
    assert summary["accuracy"] == 1.0  # the premise: the good model is right on every image
    assert nights["n2"]["code"] == 1, nights["n2"]["text"][-3000:]
    [red] = events(nights["n2"], "compare")
    assert red["verdict"] == "fail" and ("accuracy", "overall") in {(g["metric"], g["scope"]) for g in red["tripped"]}
    # the next night, the same regressed model: still red against the reference, green against last night
    assert nights["n3"]["code"] == 1, nights["n3"]["text"][-3000:]
    compared = _by_baseline(nights["n3"])
    assert compared["2026-12-06"]["verdict"] == "fail" and compared["2026-12-07"]["verdict"] == "pass"
    [end] = events(nights["n3"], "nightly_end")
    assert (end["against_reference"], end["against_previous"], end["exit_code"]) == (1, 0, 1)
    assert end["reference"] == "2026-12-06" and end["previous"] == "2026-12-07"


@SEVEN_NIGHTS
def test_the_reference_changes_only_when_pinned_on_purpose(nights):
    assert nights["pin_unfinished"]["code"] == 2  # not a finished night: refused, the pin unchanged
    assert nights["pin"]["code"] == 0
    [pinned] = events(nights["pin"], "reference_pinned")
    assert (pinned["reference"], pinned["previous_reference"]) == ("2026-12-08", "2026-12-06")
    assert nights["n4"]["code"] == 0, nights["n4"]["text"][-3000:]  # the regressed model, accepted as the reference
    assert list(_by_baseline(nights["n4"])) == ["2026-12-08"]  # reference and previous night are one: compared once
    [end] = events(nights["n4"], "nightly_end")
    assert (end["against_reference"], end["against_previous"], end["verdict"]) == (0, None, "pass")
    assert "the previous finished night is the reference" in end["message"]
    assert (nights["root"] / "REFERENCE").read_text() == "2026-12-08\n"


@SEVEN_NIGHTS
def test_a_night_with_a_third_of_the_images_fails_the_coverage_gate(nights):
    assert nights["n5"]["code"] == 1, nights["n5"]["text"][-3000:]
    for line in events(nights["n5"], "compare"):  # against the reference and against last night
        tripped = {g["metric"]: g for g in line["tripped"]}
        assert list(tripped) == ["min_reference_coverage"]  # the same model: only the coverage differs
        gate = tripped["min_reference_coverage"]
        assert (gate["audited"], gate["baseline_audited"], gate["value"]) == (4, 12, pytest.approx(1 / 3))
    summary = json.loads((nights["root"] / "2026-12-10" / "summary.json").read_text())
    assert summary["images"] == 4  # the audit itself finished: only the gate sees the missing images


def test_the_exit_statuses_are_the_documented_table():
    """The script's comment and the "Exit statuses" table of docs/usage.md agree (4 is a full disk, not "unexpected")."""
    text = SCRIPT.read_text()
    block = text.split("# Exit status", 1)[1].split("# Environment", 1)[0]
    script = {int(m[1]): m[2] for m in re.finditer(r"^#   (\d+)\s+(.+)$", block, re.M)}
    doc = (MAIN / "docs" / "usage.md").read_text().split("### Exit statuses", 1)[1].split("\n\n", 2)[1]
    table = {int(m[1]): m[2] for m in re.finditer(r"^\| (\d+) \| (.+) \|$", doc, re.M)}
    assert set(script) | {143} == set(table)  # 143 is on the line of 130 in the script
    assert "143 terminated" in script[130]
    for code, word in ((1, "gate"), (2, "configuration"), (3, "failed"), (4, "disk is full"), (5, "unexpected")):
        assert word in script[code] and word in table[code], (code, script[code], table[code])
