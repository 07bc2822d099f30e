"""The README's data dictionary is the one the schema code generates (scripts/data_dictionary.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers_corpus import MAIN


def test_readme_holds_the_generated_data_dictionary():
    generated = subprocess.run(
        [sys.executable, str(MAIN / "scripts" / "data_dictionary.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=MAIN,
    ).stdout.strip()
    readme = (MAIN / "README.md").read_text()
    start, end = readme.index("<!-- data-dictionary:start -->"), readme.index("<!-- data-dictionary:end -->")
    assert readme[start : end + len("<!-- data-dictionary:end -->")] == generated, (
        "run: python scripts/data_dictionary.py"
    )
    for column in ("true_pointing_hit", "top<k>_prob", "no_box_in_input", "error_type"):
        assert f"`{column.replace('true_', '<m>_')}`" in generated, column
