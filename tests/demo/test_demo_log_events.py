"""The job log accounts for the built-in demo's time, and warns only where the user can act (issue 20.5).

Before: a first default run logged nothing for minutes while the synthetic data was generated and the model
trained (two plain-text lines on stderr, outside the job log and breaking runtime.log_format=json); every
default run warned that the built-in metadata's label, width and height were left out, which the user cannot
act on.
"""

from __future__ import annotations

import json
import logging

import pytest

from tests.helpers_corpus import compose, run_cli

DEMO = [
    "data=synthetic",
    "model=default",
    "+data.synthetic.n_train=16",  # a small spec of the built-in data: generated and trained in seconds
    "+data.synthetic.n_audit=8",
    "runtime.device=cpu",
    "runtime.num_workers=0",
    "runtime.progress=false",
    "report.overlays=none",
    # the events of the demo's set-up are what these tests read: no faithfulness columns, no sanity check
    # (about 800 more forwards of the default CNN per run; tested on their own)
    "faithfulness.confidence=false",
    "faithfulness.sample=0",
    "sanity.sample=0",
]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("demo_events")
    done = run_cli([*DEMO, f"cache_dir={tmp / 'cache'}", "runtime.log_format=json"], tmp / "run", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = [json.loads(line) for line in (tmp / "run" / "cam-audit.log").read_text().splitlines()]
    stderr = [json.loads(line) for line in done.stderr.splitlines()]  # every line JSON: no plain-text prints
    return {"tmp": tmp, "log": log, "stderr": stderr}


def test_generation_training_and_loading_are_timed_events_in_the_job_log(first_run):
    names = [line["event"] for line in first_run["log"]]
    for name in ("data_generation", "data_generated", "model_training", "model_trained", "model_loaded"):
        assert name in names, names
    assert names.index("data_generation") < names.index("data_generated") < names.index("model_training")
    assert names.index("model_trained") < names.index("model_loaded") < names.index("summary")
    assert names.count("training_progress") == 10  # one per epoch (DEFAULT_EPOCHS)
    by_name = {line["event"]: line for line in first_run["log"]}
    assert by_name["data_generated"]["images"] == 24 and by_name["data_generated"]["seconds"] > 0
    assert by_name["model_trained"]["seconds"] > 0 and by_name["model_loaded"]["seconds"] >= 0
    assert (
        "generated in" in by_name["data_generated"]["message"] and "trained in" in by_name["model_trained"]["message"]
    )
    assert [line["event"] for line in first_run["stderr"]] == names  # the console has the same events


def test_the_built_in_metadata_warns_nothing_a_users_metadata_still_does(first_run, caplog):
    assert "metadata_shadowed" not in [line["event"] for line in first_run["log"]]
    assert not [line for line in first_run["log"] if line["level"] == "WARNING"], first_run["log"]
    samples = json.loads((first_run["tmp"] / "run" / "summary.json").read_text())
    assert samples["images"] == 8
    # the same CSV given as the user's data.metadata: its label, width, height are left out with the warning
    cache = first_run["tmp"] / "cache"
    [metadata] = cache.glob("synthetic-*/audit/metadata.csv")
    from pipeline.run import run_audit

    with caplog.at_level(logging.WARNING):
        run_audit(compose([*DEMO, f"cache_dir={cache}", f"data.metadata={metadata}"]), first_run["tmp"] / "user")
    warned = [r.getMessage() for r in caplog.records if getattr(r, "event", "") == "metadata_shadowed"]
    assert len(warned) == 1 and all(f"'{c}'" in warned[0] for c in ("label", "width", "height")), warned
