"""Moved to :mod:`pipeline.data.sources`. This alias keeps ``tests/test_reliability.py`` importing until that
file is split; delete this module then.

``index_problem_type`` is the old way of typing a problem from its message text; readers now give each
problem its type (:class:`pipeline.data.records.Problem`), and nothing in the pipeline calls this.
"""

from dataclasses import replace

from pipeline.data import sources
from pipeline.data.records import Problem

_OLD_RULES = (
    ("DuplicateId", ("duplicate", "share the file stem")),
    ("PathOutsideRoot", ("resolves outside",)),
    ("MissingImage", ("has no image", "not in 'images'", "no usable image_id")),
    ("MissingAnnotation", ("no annotation file", "has no annotations")),
    ("BadLabel", ("label", "category")),
)


def index_problem_type(problem: str) -> str:
    """The type the old message-matching rules gave ``problem`` (first matching rule, else BadAnnotation)."""
    for name, needles in _OLD_RULES:
        if any(needle in problem for needle in needles):
            return name
    return "BadAnnotation"


def check_index_problems(records, classes, source, max_fraction, min_samples) -> None:
    """:func:`pipeline.data.sources.check_index_problems` for records whose problem is still plain text."""
    typed = [replace(r, problem=Problem(index_problem_type(r.problem), r.problem)) if isinstance(r.problem, str) else r for r in records]
    sources.check_index_problems(typed, classes, source, max_fraction, min_samples)


__all__ = ["check_index_problems", "index_problem_type"]
