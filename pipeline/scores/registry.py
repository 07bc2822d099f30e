"""The per-image scores of one map, declared once: :data:`SCORES`, like ``METHODS`` in ``pipeline.maps.methods``.

Each :class:`Score` says what the run computes (its function), how it is stored (column suffix, dtype), how
it moves between coordinate spaces, how it is summarised per class and per dataset, and what it means
(one line, used as the Parquet field description and the README's data dictionary). :func:`score_map`,
the samples schema, :func:`~pipeline.scores.space.coordinates_to_stored` and the class and dataset tables
of ``pipeline.reports.finalize`` all iterate over this registry, and so do the printed summary, the review page's
headline and group tables and ``cam-audit compare`` (through :mod:`pipeline.scores.aggregates`); adding a
score, or a gateable headline number, is one function here (or in ``localisation.py``) and one entry in
:data:`SCORES`.

A score function takes the :class:`ScoreInputs` of one batch (and the threshold ``tau`` for the
``per_tau`` scores) and returns ``[B]`` float32 with NaN where undefined. Shared intermediate results
(energy in box, the thresholded box per tau, the peak) are computed once per batch through
:meth:`ScoreInputs.once`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from .components import _best_box_iou64, largest_component_box
from .localisation import (
    box_area_fraction,
    energy_in_box,
    energy_lift,
    excess_energy,
    peak_location,
    pointing_game_hit,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)

_NAN = float("nan")

# How a column moves from a scoring grid to stored-image pixels (scores.space=original):
# "x_edge"/"y_edge": a pixel-edge coordinate, divided by the grid scale;
# "x_pixel"/"y_pixel": a pixel index, the stored pixel that holds the grid pixel's centre.
Coordinate = Literal["x_edge", "y_edge", "x_pixel", "y_pixel"]

# How a column is summarised over a set of rows (a class or the whole dataset); the functions, with their
# formulas, are pipeline.scores.aggregates.AGGREGATIONS:
# "mean": mean over the rows where it is defined (NaN skipped);
# "class_balanced_mean": per true class the mean (hits / (hits + misses)), then the mean over classes (TorchRay);
# "share_with_box": share of the rows with a defined value where it is 1 (the first tau only);
# "share_with_box_and_correct": the same, counting only correctly classified rows as 1 (the first tau only).
AggregationKind = Literal["mean", "class_balanced_mean", "share_with_box", "share_with_box_and_correct"]

# Which way a summary number is better; a compare gate trips on a change the other way.
Direction = Literal["higher", "lower"]


def tau_key(tau: float) -> str:
    """Suffix used in :func:`score_map` keys for a threshold: 0.15 -> ``tau015``."""
    return f"tau{int(round(tau * 100)):03d}"


@dataclass(frozen=True)
class Aggregate:
    """One summary number of a score: ``name`` in the summary / class table, computed by ``kind``.

    Every aggregate goes into the summary for both the true- and predicted-class maps; the other fields say
    where else it appears, so that each list of numbers (the printed summary, the review page, compare) is
    derived from :data:`SCORES` (:mod:`pipeline.scores.aggregates`):

    - ``class_maps``: the maps (``true``, ``pred``) whose value goes into ``classes.parquet`` (per true class);
    - ``label``, ``percent``, ``digits``, ``reading``: how a person reads it (a share as a percentage, else
      with ``digits`` decimals; ``reading``: what its values mean, beside the label on the review page);
    - ``better``: ``higher`` or ``lower``; a compare gate trips on a change the other way;
    - ``headline``: a headline number of the true-class maps (printed summary, review page, compare's text);
    - ``gate``: compare's name for it (``<map>_<gate>``, for each map of ``gate_maps``): tested on the common
      images and gateable with ``--max-drop`` / ``--max-class-drop``; None: not compared.
    """

    name: str
    kind: AggregationKind
    class_maps: tuple[str, ...] = ("true",)
    label: str = ""
    percent: bool = False
    digits: int = 3
    reading: str = ""
    better: Direction = "higher"
    headline: bool = False
    gate: str | None = None
    gate_maps: tuple[str, ...] = ("true",)


@dataclass
class ScoreInputs:
    """One batch of maps and their ground truth, as every score function reads them.

    maps ``[B, H, W]`` float32 (min-max normalised, non-negative), raw_maps ``[B, H, W]`` (signed,
    un-normalised), empty ``[B]`` bool, boxes ``[B, N, 4]`` pixel-edge (x1, y1, x2, y2) on the maps'
    grid, box_valid ``[B, N]`` bool, gt ``[B, H, W]`` bool (union of the valid boxes, cut to the domain),
    domain ``[B, H, W]`` bool or None (where the maps are defined), thresholded: the maps with ``-inf``
    outside the domain (so that no threshold, even 0, takes those pixels).
    """

    maps: torch.Tensor
    raw_maps: torch.Tensor
    empty: torch.Tensor
    boxes: torch.Tensor
    box_valid: torch.Tensor
    gt: torch.Tensor
    domain: torch.Tensor | None
    thresholded: torch.Tensor
    tolerance: float
    iou_threshold: float
    _cache: dict = field(default_factory=dict, repr=False)

    def once(self, key: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``compute()`` the first time ``key`` is asked for in this batch, the same tensor afterwards."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]


# Shared intermediate results (each computed once per batch).
def _energy(x: ScoreInputs) -> torch.Tensor:
    return x.once(("energy_in_box",), lambda: energy_in_box(x.maps, x.gt))


def _area(x: ScoreInputs) -> torch.Tensor:
    return x.once(("box_area_fraction",), lambda: box_area_fraction(x.gt, x.domain))


def _peak(x: ScoreInputs) -> torch.Tensor:
    return x.once(("peak",), lambda: peak_location(x.maps).to(torch.float32))


def _component_box(x: ScoreInputs, tau: float) -> torch.Tensor:
    return x.once(("box", tau), lambda: largest_component_box(x.thresholded, x.empty, tau))


def _iou64(x: ScoreInputs, tau: float) -> torch.Tensor:
    return x.once(("iou64", tau), lambda: _best_box_iou64(_component_box(x, tau), x.boxes, x.box_valid))


# Score functions: (inputs[, tau]) -> [B] float32; per-tau scores are always called with their threshold.
def _score_energy_in_box(x: ScoreInputs, tau: float | None = None) -> torch.Tensor:
    return _energy(x)


def _score_box_area_fraction(x: ScoreInputs, tau: float | None = None) -> torch.Tensor:
    return _area(x)


def _score_energy_lift(x: ScoreInputs, tau: float | None = None) -> torch.Tensor:
    return energy_lift(_energy(x), _area(x))


def _score_excess_energy(x: ScoreInputs, tau: float | None = None) -> torch.Tensor:
    return excess_energy(_energy(x), _area(x))


def _score_pointing_hit(x: ScoreInputs, tau: float | None = None) -> torch.Tensor:
    return pointing_game_hit(x.maps, x.empty, x.gt, x.tolerance)


def _score_relevance_rank(x: ScoreInputs, tau: float | None = None) -> torch.Tensor:
    return relevance_rank_accuracy(x.maps, x.gt, x.domain)


def _score_relevance_mass(x: ScoreInputs, tau: float | None = None) -> torch.Tensor:
    return relevance_mass_accuracy(x.raw_maps, x.gt)


def _score_peak_row(x: ScoreInputs, tau: float | None = None) -> torch.Tensor:
    return torch.where(x.empty, _NAN, _peak(x)[:, 0])


def _score_peak_col(x: ScoreInputs, tau: float | None = None) -> torch.Tensor:
    return torch.where(x.empty, _NAN, _peak(x)[:, 1])


def _score_iou(x: ScoreInputs, tau: float) -> torch.Tensor:
    return _iou64(x, tau).to(torch.float32)


def _score_localised(x: ScoreInputs, tau: float) -> torch.Tensor:
    iou64 = _iou64(x, tau)  # compared in float64, so that an IoU of exactly the threshold counts
    return torch.where(torch.isnan(iou64), _NAN, (iou64 >= x.iou_threshold).to(torch.float64)).to(torch.float32)


def _box_corner(j: int) -> Callable[[ScoreInputs, float], torch.Tensor]:
    def corner(x: ScoreInputs, tau: float) -> torch.Tensor:
        return _component_box(x, tau)[:, j]

    return corner


@dataclass(frozen=True)
class Score:
    """One per-image score of a map (a column ``<map>_<name>`` or, per tau, ``<map>_<name>_<tau_key>``)."""

    name: str
    function: Callable[..., torch.Tensor]
    description: str  # one line; "{tau}" is replaced by the threshold for per-tau scores
    dtype: str = "float32"  # Arrow type alias of the column (pyarrow.type_for_alias); "bool": a 1 / 0 / NaN score stored as a boolean with nulls
    per_tau: bool = False  # one column per threshold of scores.taus
    coordinate: Coordinate | None = None  # converted between coordinate spaces when set
    aggregates: tuple[Aggregate, ...] = ()  # summary numbers (per dataset, and per class for class_maps)
    group_maps: tuple[str, ...] = ()  # maps whose plain mean goes into each summary group (report.group_by)


SCORES: tuple[Score, ...] = (
    Score(
        "energy_in_box",
        _score_energy_in_box,
        "share of the map's energy inside the annotated boxes, sum(M*G)/sum(M) (Score-CAM's energy-based pointing game)",
        aggregates=(
            Aggregate(
                "energy_in_box",
                "mean",
                ("true", "pred"),
                label="energy in box",
                headline=True,
                gate="energy_in_box",
                gate_maps=("true", "pred"),
            ),
        ),
        group_maps=("pred", "true"),
    ),
    Score(
        "box_area_fraction",
        _score_box_area_fraction,
        "share of the scored pixels inside the annotated boxes: the energy in box of a uniform map",
    ),
    Score(
        "energy_lift",
        _score_energy_lift,
        "energy in box / box area fraction: 1 = no better than a uniform map; at most 1 / box area fraction",
        aggregates=(
            Aggregate(
                "energy_lift",
                "mean",
                label="energy lift",
                digits=2,
                reading="1 = uniform",
                headline=True,
                gate="energy_lift",
            ),
        ),
        group_maps=("pred",),
    ),
    Score(
        "excess_energy",
        _score_excess_energy,
        "(E - A) / (1 - A), E energy in box, A box area fraction: 0 = uniform map, 1 = all energy in the boxes, < 0 = avoids them; null when A = 1",
        aggregates=(
            Aggregate(
                "excess_energy",
                "mean",
                ("true", "pred"),
                label="excess energy",
                reading="0 = uniform, 1 = all in box",
                headline=True,
                gate="excess_energy",
            ),
        ),
        group_maps=("pred",),
    ),
    Score(
        "pointing_hit",
        _score_pointing_hit,
        "true when the map's maximum lies within the pointing tolerance of a box, false when not, null for an empty map or no box",
        dtype="bool",
        aggregates=(
            Aggregate(
                "pointing_game_accuracy",
                "class_balanced_mean",
                label="pointing game",
                percent=True,
                headline=True,
                gate="pointing_game",
            ),
        ),
        group_maps=("pred",),
    ),
    Score(
        "relevance_rank_accuracy",
        _score_relevance_rank,
        "share of the |G| highest-valued pixels that lie inside the boxes (Arras et al. 2022)",
        aggregates=(Aggregate("relevance_rank_accuracy", "mean", label="relevance rank accuracy"),),
    ),
    Score(
        "relevance_mass_accuracy",
        _score_relevance_mass,
        "energy in box of the raw signed map, before ReLU and normalisation (Arras et al. 2022)",
    ),
    Score(
        "peak_row",
        _score_peak_row,
        "row of the map's first maximum in raster order (pixel index), null for an empty map",
        coordinate="y_pixel",
    ),
    Score(
        "peak_col",
        _score_peak_col,
        "column of the map's first maximum in raster order (pixel index), null for an empty map",
        coordinate="x_pixel",
    ),
    Score(
        "iou",
        _score_iou,
        "IoU of the box around the largest connected region where map >= {tau} x max with the best-matching annotated box",
        per_tau=True,
    ),
    Score(
        "localised",
        _score_localised,
        "true when the IoU of the thresholded-map box at {tau} x max reaches scores.iou_threshold, false when not, null for an empty map or no box",
        per_tau=True,
        dtype="bool",
        aggregates=(
            Aggregate(
                "gt_known_localisation_accuracy",
                "share_with_box",
                label="GT-known localisation",
                percent=True,
                headline=True,
                gate="gt_known_localisation",
            ),
            Aggregate(
                "top1_localisation_accuracy",
                "share_with_box_and_correct",
                label="top-1 localisation",
                percent=True,
                headline=True,
            ),
        ),
    ),
    Score(
        "box_x1",
        _box_corner(0),
        "left edge of the thresholded-map box at {tau} x max (pixel-edge)",
        per_tau=True,
        coordinate="x_edge",
    ),
    Score(
        "box_y1",
        _box_corner(1),
        "top edge of the thresholded-map box at {tau} x max (pixel-edge)",
        per_tau=True,
        coordinate="y_edge",
    ),
    Score(
        "box_x2",
        _box_corner(2),
        "right edge of the thresholded-map box at {tau} x max (pixel-edge)",
        per_tau=True,
        coordinate="x_edge",
    ),
    Score(
        "box_y2",
        _box_corner(3),
        "bottom edge of the thresholded-map box at {tau} x max (pixel-edge)",
        per_tau=True,
        coordinate="y_edge",
    ),
)

_TAU_SUFFIX = re.compile(r"^(?P<name>.+)_(?P<tau>tau\d{3})$")


def score_columns(taus: Sequence[float]) -> list[tuple[str, Score, float | None]]:
    """``(column suffix, score, tau)`` in the order :func:`score_map` returns them: the scores without a
    threshold in registry order, then for each tau the per-tau scores."""
    keys = [tau_key(t) for t in taus]
    if len(set(keys)) != len(keys):
        raise ValueError(f"taus {list(taus)} give duplicate keys {keys}")
    columns: list[tuple[str, Score, float | None]] = [
        (score.name, score, None) for score in SCORES if not score.per_tau
    ]
    for tau, key in zip(taus, keys):
        columns += [(f"{score.name}_{key}", score, float(tau)) for score in SCORES if score.per_tau]
    return columns


def score_for_column(column: str) -> Score | None:
    """The registry entry behind a column suffix (``energy_in_box``, ``box_x1_tau015``), None for others."""
    by_name = {score.name: score for score in SCORES}
    if column in by_name and not by_name[column].per_tau:
        return by_name[column]
    match = _TAU_SUFFIX.match(column)
    if match and match["name"] in by_name and by_name[match["name"]].per_tau:
        return by_name[match["name"]]
    return None


def describe(column: str) -> str | None:
    """The one-line description of a score column suffix, the threshold filled in for per-tau scores."""
    score = score_for_column(column)
    if score is None:
        return None
    match = _TAU_SUFFIX.match(column)
    tau = f"{int(match['tau'][3:]) / 100:g}" if (score.per_tau and match) else "tau"
    return score.description.replace("{tau}", tau)
