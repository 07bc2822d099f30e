"""scripts/nightly.sh: audits a night, compares with the latest earlier finished night, passes statuses on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers_corpus import MAIN, base_overrides, good_dataset


def night(tmp, name: str, overrides: list[str]) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "NIGHTLY_ROOT": str(tmp / "nights"),
        "NIGHTLY_NAME": name,
        "PYTHON": sys.executable,
        "NIGHTLY_ARGS": " ".join(overrides),
        "NIGHTLY_GATES": "--max-drop accuracy=0 --resamples 200",
    }
    return subprocess.run(
        ["bash", str(MAIN / "scripts" / "nightly.sh")], env=env, capture_output=True, text=True, timeout=300
    )


def test_nights_compare_with_the_previous_finished_one(tmp_path):
    good_dataset(tmp_path / "data", 6)
    overrides = base_overrides(tmp_path / "data", tmp_path / "cache")
    first = night(tmp_path, "2026-11-29", overrides)
    assert first.returncode == 0 and "first finished night" in first.stdout, first.stderr[-2000:]
    (tmp_path / "nights" / "2026-11-30").mkdir()  # a night that died before its summary: never a baseline
    second = night(tmp_path, "2026-12-01", overrides)
    assert second.returncode == 0, second.stderr[-2000:]
    compared = json.loads((tmp_path / "nights" / "2026-12-01.compare" / "2026-11-29" / "compare.json").read_text())
    assert compared["overall"]["images_compared"] == 6 and compared["gates"][0]["tripped"] is False
    bad = night(tmp_path, "2026-12-02", overrides + ["cam.method=nope"])
    assert bad.returncode == 2 and not (tmp_path / "nights" / "2026-12-02").exists()
