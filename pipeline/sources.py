"""Moved to :mod:`pipeline.data.sources`; this alias keeps ``tests/test_reliability.py`` importing until that
file is split (delete this module then)."""

from pipeline.data.sources import check_index_problems, index_problem_type  # noqa: F401

__all__ = ["check_index_problems", "index_problem_type"]
