"""Tonight's audit against last night's (``cam-audit compare``): what changed, on the images both runs scored.

:func:`compare_with_statistics` reads two finished run folders (``samples.parquet``, ``errors.parquet``,
``summary.json``: no model, no images, so it is cheap on any size of run) and returns, one module each:

- ``data`` (:mod:`~pipeline.compare.runs`, said first): the two runs must have audited the same data where
  their ids overlap. Different true labels of common ids, or different class lists, are a refusal
  (:class:`~pipeline.errors.ConfigError`, exit 2): every paired number would compare two datasets. The same
  classes in another order are aligned by key and name (and said); differing dataset fingerprints with
  agreeing labels are said, not refused (another ``data.limit``, an added image);
- ``definitions`` (:mod:`~pipeline.compare.definitions`): every definition choice that differs (method, class
  score, coordinate space, preprocessing, taus, ...): score deltas then measure the change of definition as
  much as the change of the model;
- ``samples`` and ``classes`` (:mod:`~pipeline.compare.changes`): per image, prediction before and after,
  ``change`` (``fixed``, ``broke``, ``same``), the true-class map's energy in box and lift deltas and how far
  its peak moved; per true class, accuracy and lift before and after;
- ``overall`` (:mod:`~pipeline.compare.comparison`): the dataset numbers of both runs on the common images
  and their differences; counts of images only in one run;
- ``tests`` (:mod:`~pipeline.compare.significance`, maths in :mod:`~pipeline.compare.paired_stats`):
  McNemar's exact test for accuracy, paired bootstrap intervals for the map numbers, and per class the same
  with Holm's correction;
- ``coverage`` (:mod:`~pipeline.compare.coverage`): how much of its dataset each run audited and skipped,
  and the coverage gates;
- ``gates``, ``verdict`` and ``tripped`` (:mod:`~pipeline.compare.gates`): a drop gate trips when the drop is
  beyond its threshold **and** significant; ``pass`` when no gate tripped.

:mod:`~pipeline.compare.render` turns the result into lines a person reads; :mod:`~pipeline.compare.output`
writes ``compare.json``, ``samples_diff.parquet`` and ``classes_diff.parquet``.
"""

from pipeline.compare.comparison import compare_runs, compare_with_statistics
from pipeline.compare.definitions import definition_differences
from pipeline.compare.gates import parse_max_drops, verdict_line
from pipeline.compare.output import compare_json, default_out, write_comparison
from pipeline.compare.render import render_comparison, render_statistics

__all__ = [
    "compare_json",
    "compare_runs",
    "compare_with_statistics",
    "default_out",
    "definition_differences",
    "parse_max_drops",
    "render_comparison",
    "render_statistics",
    "verdict_line",
    "write_comparison",
]
