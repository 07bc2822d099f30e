"""No function in ``pipeline/`` is longer than :data:`MAX_LINES` lines (issue 21): a guard rail beside ruff's
C901 complexity limit, which a long but straight function passes. Split a long function into named steps."""

from __future__ import annotations

import ast
from pathlib import Path

MAIN = Path(__file__).resolve().parent.parent
PIPELINE = MAIN / "pipeline"
MAX_LINES = 80  # from the ``def`` line to the last line of the body, docstring and comments included


def long_functions(path: Path, limit: int, root: Path = MAIN) -> list[str]:
    """``path:line name (n lines)`` (``path`` relative to ``root``) of each function or method in ``path``,
    nested ones included, longer than ``limit`` lines."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno is not None  # ast.parse sets it on every statement
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_the_check_counts_every_line_of_a_function(tmp_path):
    body = "\n".join(f"        x{i} = {i}" for i in range(4))
    source = tmp_path / "module.py"
    source.write_text(
        f"def short():\n    return 1\n\n\nclass A:\n    async def long(self):\n        '''Doc.'''\n{body}\n",
        encoding="utf-8",
    )
    assert long_functions(source, 6, root=tmp_path) == []
    assert long_functions(source, 5, root=tmp_path) == ["module.py:6 long (6 lines)"]


def test_no_function_in_pipeline_is_longer_than_the_limit():
    found = [line for path in sorted(PIPELINE.rglob("*.py")) for line in long_functions(path, MAX_LINES)]
    assert not found, f"functions over {MAX_LINES} lines (split them into named steps):\n" + "\n".join(found)
