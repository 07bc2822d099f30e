"""docs/data-dictionary.md holds the data dictionary the schema code generates (scripts/data_dictionary.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers_corpus import MAIN


def test_docs_hold_the_generated_data_dictionary():
    generated = subprocess.run(
        [sys.executable, str(MAIN / "scripts" / "data_dictionary.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=MAIN,
    ).stdout.strip()
    doc = (MAIN / "docs" / "data-dictionary.md").read_text()
    start, end = doc.index("<!-- data-dictionary:start -->"), doc.index("<!-- data-dictionary:end -->")
    assert doc[start : end + len("<!-- data-dictionary:end -->")] == generated, (
        "run: python scripts/data_dictionary.py --write"
    )
    readme = (MAIN / "README.md").read_text()
    assert "<!-- data-dictionary:start -->" not in readme  # one copy, in docs/
    assert "docs/data-dictionary.md" in readme
    for column in ("true_pointing_hit", "top<k>_prob", "no_box_in_input", "error_type"):
        assert f"`{column.replace('true_', '<m>_')}`" in generated, column
