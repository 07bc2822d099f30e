"""``cam-audit --help`` names the commands, compare included (issue 20.3: it listed Hydra's options only)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers_corpus import MAIN


def test_help_lists_compare_and_the_exit_statuses():
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "--help"], cwd=MAIN, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    head, _, hydra_help = done.stdout.partition("== Configuration groups ==")
    assert "cam-audit compare BASELINE CURRENT" in head and "cam-audit compare --help" in head
    assert "scripts/nightly.sh [pin NIGHT]" in head and "1 a compare gate tripped" in head
    assert "data: " in hydra_help  # Hydra's own help follows: the groups and options
