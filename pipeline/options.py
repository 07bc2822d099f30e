"""Option values checked before any work: one table of rules, one :class:`~pipeline.errors.ConfigError`
naming the first option that breaks its rule.

Hydra already refuses an unknown key (without ``+``) and a missing ``???`` value, and the schemas of the
fixed-key groups (``cam``, ``scores``, ``runtime``, ``report``: :mod:`pipeline.settings`) a value of the
wrong type there; these rules catch a value out of range, or of the wrong type in the dict-based groups
(``data``, ``model``) and in the options the schema types loosely (``runtime.batch_size``: a whole number
or ``auto``), which would otherwise surface as a traceback at the
first batch (``cam.top_k`` over the class count), at the end of the run (``scores.taus=[]``), or never
(``data.limit=0`` audited everything). Rules on values that depend on the model or the data (the class
count) are functions below the table, called by :func:`pipeline.setup.prepare` once those are known.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeGuard

from omegaconf import DictConfig, ListConfig, OmegaConf

from pipeline.data.dataset import INTERPOLATIONS
from pipeline.data.decode import BOXES_REFER_TO
from pipeline.data.device_decode import DECODE_OPTIONS
from pipeline.data.geometry import MODES
from pipeline.data.records import BOX_UNITS
from pipeline.errors import ConfigError
from pipeline.export.probabilities import DTYPES as PROBABILITY_DTYPES
from pipeline.maps.methods import METHODS
from pipeline.reports.strategies import FRAMES, GROUP_COLUMNS

Check = Callable[[object], bool]
_ABSENT = object()  # OmegaConf.select's answer for a key the composed config does not have


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: object) -> TypeGuard[int]:
    """An int that is not a bool (Python counts true / false as ints)."""
    return isinstance(value, int) and not isinstance(value, bool)


def whole(minimum: int) -> Check:
    """An int (not a bool) ``>= minimum``."""
    return lambda value: _integer(value) and value >= minimum


def number(minimum: float, maximum: float = math.inf, above_minimum: bool = False) -> Check:
    """A finite int or float in ``[minimum, maximum]`` (``(minimum, maximum]`` with ``above_minimum``)."""
    return lambda value: (
        _number(value) and (value > minimum if above_minimum else value >= minimum) and value <= maximum
    )


def numbers(check: Check, length: int | None = None, at_least: int = 0) -> Check:
    """A list whose items all pass ``check``, of exactly ``length`` items, or at least ``at_least``."""

    def passes(value: object) -> bool:
        if not isinstance(value, (list, tuple, ListConfig)):
            return False
        items = list(value)
        return (len(items) == length if length is not None else len(items) >= at_least) and all(
            check(item) for item in items
        )

    return passes


def null_or(check: Check) -> Check:
    return lambda value: value is None or check(value)


# The enumerated options of the fixed-key groups; each module that reads one trusts this check.
CLASS_SCORES = ("logit", "softmax")  # pipeline.maps.engine.CamEngine
SCORE_SPACES = ("input", "original")  # pipeline.scores.space
OVERLAY_MODES = ("needs_look", "misclassified", "all", "none")  # pipeline.reports.overlays.overlay_rows
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # pipeline.setup.PRECISIONS, and auto
RANK_SOURCES = ("torchrun", "submitit")  # runtime.ranks_from (pipeline.distributed)
SWITCHES = ("auto", "true", "false")  # runtime.channels_last (YAML true / false arrive as booleans)
LOG_FORMATS = ("text", "json")  # pipeline.logs.LOG_FORMATS
SYNTHETIC_SPLITS = ("audit", "train")  # pipeline.demo.synthetic.SPLITS (not imported: it would load OpenCV)


def one_of(*choices: str) -> Check:
    """One of the ``choices`` (text): an enumerated option, where a typo must not fall back to a default."""
    return lambda value: isinstance(value, str) and value in choices


def auto_or(check: Check) -> Check:
    return lambda value: value == "auto" or check(value)


def boolean(value: object) -> bool:
    """true or false (Hydra's ``no``, ``off`` or ``0`` stay text or a number: Python would read them as true)."""
    return isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """``option`` (dotted key) must pass ``check``; ``requirement`` says what it must be, for the message.
    A key absent from the composed config is skipped (groups differ: ``model.mean`` is in some only)."""

    option: str
    check: Check
    requirement: str


def device_name(value: object) -> bool:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    return isinstance(value, str) and (value in ("auto", "cpu") or re.fullmatch(r"cuda(:\d+)?", value) is not None)


def switch(value: object) -> bool:
    """``auto``, or true / false (as booleans or text)."""
    return isinstance(value, bool) or (isinstance(value, str) and value.lower() in SWITCHES)


RULES: tuple[Rule, ...] = (
    Rule("cam.method", one_of(*METHODS), "one of " + ", ".join(METHODS)),
    Rule("cam.class_score", one_of(*CLASS_SCORES), "one of " + ", ".join(CLASS_SCORES)),
    Rule("scores.space", one_of(*SCORE_SPACES), "one of " + ", ".join(SCORE_SPACES)),
    Rule("report.overlays", one_of(*OVERLAY_MODES), "one of " + ", ".join(OVERLAY_MODES)),
    Rule("runtime.device", device_name, "auto, cpu, cuda or cuda:N"),
    Rule("runtime.precision", one_of(*PRECISIONS), "one of " + ", ".join(PRECISIONS)),
    Rule("runtime.channels_last", switch, "auto, true or false"),
    Rule("runtime.log_format", one_of(*LOG_FORMATS), "one of " + ", ".join(LOG_FORMATS)),
    Rule("data.limit", null_or(whole(1)), "null (all samples) or a whole number >= 1"),
    Rule("data.max_boxes", null_or(whole(1)), "null (no cap) or a whole number of boxes >= 1"),
    Rule("data.metadata_missing", lambda value: value in ("warn", "fail"), "warn or fail"),
    Rule("data.allow_outside_root", boolean, "true or false"),
    Rule("data.decode", one_of(*DECODE_OPTIONS), "one of " + ", ".join(DECODE_OPTIONS)),
    Rule("data.box_units", one_of(*BOX_UNITS), "one of " + ", ".join(BOX_UNITS)),
    Rule("data.synthetic.split", one_of(*SYNTHETIC_SPLITS), "one of " + ", ".join(SYNTHETIC_SPLITS)),
    Rule("data.synthetic.seed", whole(0), "a whole number >= 0"),
    Rule("data.preprocess.mode", one_of(*MODES), "one of " + ", ".join(MODES)),
    Rule("data.preprocess.size", auto_or(whole(8)), "auto or a whole number of pixels >= 8"),
    Rule("data.preprocess.resize_size", null_or(auto_or(whole(8))), "auto, null or a whole number of pixels >= 8"),
    Rule(
        "data.preprocess.interpolation",
        auto_or(one_of(*INTERPOLATIONS)),
        "auto or one of " + ", ".join(INTERPOLATIONS),
    ),
    Rule(
        "data.preprocess.fill", lambda value: _integer(value) and 0 <= value <= 255, "a whole number 0..255 (one byte)"
    ),
    Rule("data.preprocess.boxes_refer_to", one_of(*BOXES_REFER_TO), "one of " + ", ".join(BOXES_REFER_TO)),
    Rule("data.preprocess.check_annotated_size", boolean, "true or false"),
    Rule("data.preprocess.max_pixels", whole(1), "a whole number of pixels >= 1"),
    Rule("data.preprocess.max_aspect_ratio", number(1.0), "a number >= 1"),
    Rule("model.mean", null_or(numbers(_number, length=3)), "3 numbers, one per RGB channel"),
    Rule(
        "model.std", null_or(numbers(number(0.0, above_minimum=True), length=3)), "3 numbers > 0, one per RGB channel"
    ),
    Rule("cam.top_k", whole(1), "a whole number >= 1"),
    Rule("scores.tolerance", number(0.0), "a number of pixels >= 0"),
    Rule("scores.taus", numbers(number(0.0, 1.0), at_least=1), "a list of at least one threshold in [0, 1]"),
    Rule("scores.iou_threshold", number(0.0, 1.0, above_minimum=True), "a number in (0, 1]"),
    Rule("scores.original_max_side", whole(8), "a whole number of pixels >= 8"),
    Rule("scores.maxboxacc.thresholds", whole(1), "a whole number >= 1"),
    Rule("report.rows_per_part", whole(1), "a whole number >= 1"),
    Rule("report.probabilities_dtype", one_of(*PROBABILITY_DTYPES), "one of " + ", ".join(PROBABILITY_DTYPES)),
    Rule("report.triage.on_object_min_excess_energy", number(-1.0, 1.0), "an excess energy in [-1, 1]"),
    Rule("report.triage.max_box_fraction", number(0.0, 1.0), "a box area fraction in [0, 1]"),
    Rule("report.shortcuts.alpha", number(0.0, 1.0, above_minimum=True), "a false-alarm rate in (0, 1]"),
    Rule("report.shortcuts.min_effect", number(0.0), "a difference of shares >= 0"),
    Rule("report.shortcuts.min_images", whole(1), "a whole number >= 1"),
    Rule("report.shortcuts.permutations", whole(1), "a whole number >= 1"),
    Rule("report.shortcuts.seed", whole(0), "a whole number >= 0"),
    Rule("report.shortcuts.grid", whole(0), "a whole number >= 0 (0 = no hot spots)"),
    Rule("report.shortcuts.collapse_share", number(0.0, 1.0, above_minimum=True), "a share in (0, 1]"),
    Rule("report.shortcuts.hot_spot_shifts", whole(1), "a whole number >= 1"),
    Rule("report.shortcuts.hot_spot_max_images", whole(2), "a whole number >= 2"),
    Rule("report.strategies.grid", whole(0), "a whole number >= 0 (0 = no clustering)"),
    Rule("report.strategies.frame", lambda value: value in FRAMES, " or ".join(FRAMES)),
    Rule("report.strategies.by", lambda value: value in GROUP_COLUMNS, " or ".join(GROUP_COLUMNS)),
    Rule("report.strategies.min_images", whole(3), "a whole number >= 3"),
    Rule("report.strategies.smooth", number(0.0), "a number of grid cells >= 0 (0 = not smoothed)"),
    Rule("report.strategies.neighbours", whole(1), "a whole number >= 1"),
    Rule("report.strategies.max_clusters", whole(1), "a whole number >= 1"),
    Rule("report.strategies.max_images", whole(3), "a whole number >= 3"),
    Rule("report.strategies.seed", whole(0), "a whole number >= 0"),
    Rule("report.strategies.examples", whole(0), "a whole number >= 0"),
    Rule("report.strategies.off_object_share", number(0.0, 1.0, above_minimum=True), "a share in (0, 1]"),
    Rule("report.strategies.max_pictures", whole(0), "a whole number >= 0"),
    Rule("faithfulness.sample", whole(0), "a whole number of images >= 0 (0 = no deletion / insertion)"),
    Rule("faithfulness.steps", whole(1), "a whole number of steps >= 1"),
    Rule(
        "faithfulness.blur_kernel",
        lambda value: _integer(value) and value >= 1 and value % 2 == 1,
        "an odd whole number of pixels",
    ),
    Rule("faithfulness.blur_sigma", number(0.0, above_minimum=True), "a number of pixels > 0"),
    Rule("sanity.sample", whole(0), "a whole number of images >= 0 (0 = no sanity check)"),
    Rule("sanity.stages", whole(1), "a whole number of stages >= 1"),
    Rule("sanity.verdict_stage", whole(1), "a whole number of stages >= 1"),
    Rule("sanity.max_weight_similarity", number(-1.0, 1.0), "a rank correlation in [-1, 1]"),
    Rule("sanity.max_class_similarity", number(-1.0, 1.0), "a rank correlation in [-1, 1]"),
    Rule("sanity.seed", whole(0), "a whole number >= 0"),
    Rule("runtime.batch_size", lambda value: value == "auto" or whole(1)(value), "a whole number >= 1 or auto"),
    Rule("runtime.writer_queue", whole(1), "a whole number >= 1"),
    Rule("runtime.num_workers", whole(0), "a whole number >= 0"),
    Rule("runtime.max_error_fraction", number(0.0, 1.0), "a number in [0, 1]"),
    Rule("runtime.min_samples_for_error_check", whole(0), "a whole number >= 0"),
    Rule("runtime.shards", whole(1), "a whole number of shards >= 1 (1 = not sharded)"),
    Rule("runtime.shard", whole(0), "a whole number >= 0, below runtime.shards"),
    Rule("runtime.ranks_from", one_of(*RANK_SOURCES), "one of " + ", ".join(RANK_SOURCES)),
)


def check_options(cfg: DictConfig, rules: Sequence[Rule] = RULES) -> None:
    """Raise a ConfigError for the first option (in ``rules`` order) whose value breaks its rule."""
    for rule in rules:
        value = OmegaConf.select(cfg, rule.option, default=_ABSENT)
        if value is _ABSENT:
            continue
        if not rule.check(value):
            shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
            raise ConfigError(rule.option, f"{shown!r} is not {rule.requirement}")


def check_top_k(top_k: int, n_classes: int) -> None:
    """``cam.top_k`` maps per image need ``top_k`` distinct classes: at most the class count."""
    if top_k > n_classes:
        raise ConfigError("cam.top_k", f"{top_k} is more than the {n_classes} classes of the class list")


def check_memory_per_worker(max_pixels: int, num_workers: int, bytes_per_pixel: int, memory_bytes: int | None) -> None:
    """Every loader process (``num_workers``, or the main process when 0) may hold one image of
    ``max_pixels`` stored pixels at ``bytes_per_pixel`` at once: together they must fit in ``memory_bytes``
    (None: unknown, not checked)."""
    processes = max(1, num_workers)
    need = max_pixels * bytes_per_pixel * processes
    if memory_bytes is not None and need > memory_bytes:
        raise ConfigError(
            "data.preprocess.max_pixels",
            f"{max_pixels} pixels x {bytes_per_pixel} bytes x {processes} loader processes "
            f"need {need / 2**30:.1f} GiB, more than the {memory_bytes / 2**30:.1f} GiB of memory; "
            "lower it or runtime.num_workers",
        )


def memory_limit_bytes() -> int | None:
    """The memory this process may use: the cgroup v2 limit when one is set, else the physical memory."""
    try:
        text = open("/sys/fs/cgroup/memory.max", encoding="ascii").read().strip()
        if text.isdigit():
            return int(text)
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
