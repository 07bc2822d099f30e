"""Imports go one way: the stages do not pull in the configuration machinery, the settings do not import the
reports, and the data and model seams do not import the built-in demo (it is their client)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

MAIN = Path(__file__).resolve().parent.parent
PIPELINE = MAIN / "pipeline"
# What a stage's module must not bring with it: the table and configuration libraries.
HEAVY = ("pandas", "hydra")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside a function (``from x import y`` gives ``x`` and
    ``x.y``; relative imports resolved against the module's package)."""
    package = ".".join(path.relative_to(MAIN).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def loaded_after_import(module: str) -> list[str]:
    """The modules of :data:`HEAVY` (and ``pipeline.demo``) in ``sys.modules`` after a fresh interpreter
    imports ``module``."""
    watched = (*HEAVY, "pipeline.demo")
    code = f"import sys, {module}; print(' '.join(name for name in {watched!r} if name in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=MAIN, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize(
    "module",
    [
        "pipeline.data.records",
        "pipeline.scores",
        "pipeline.maps",
        "pipeline.settings",
        "pipeline.jsonio",
        "pipeline.logs",
    ],
)
def test_a_stage_imports_neither_pandas_nor_hydra(module: str) -> None:
    assert loaded_after_import(module) == []


def test_settings_import_nothing_of_the_reports() -> None:
    reports = [name for name in imported_modules(PIPELINE / "settings.py") if name.startswith("pipeline.reports")]
    assert reports == []


@pytest.mark.parametrize("folder", ["data", "model"])
def test_data_and_model_never_import_the_demo(folder: str) -> None:
    offending = {
        str(path.relative_to(MAIN)): sorted(name for name in imported_modules(path) if name.startswith("pipeline.demo"))
        for path in sorted((PIPELINE / folder).glob("*.py"))
    }
    assert {path: names for path, names in offending.items() if names} == {}


def test_imported_modules_resolves_relative_imports() -> None:
    names = imported_modules(PIPELINE / "scores" / "__init__.py")
    assert "pipeline.scores.registry" in names and "torch" in names
