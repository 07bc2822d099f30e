"""Typed settings of the config groups whose keys are fixed (``cam``, ``scores``, ``runtime``, ``report``,
``faithfulness``, ``sanity``).

Each dataclass below plays two parts:

- **schema**: :func:`register_schemas` stores it in Hydra's ``ConfigStore`` as ``schema/<group>``, and every
  YAML file of the group names it first in its defaults list (``- /schema/<group>@_here_``). Hydra then
  composes the file onto the typed node, so an unknown key (``scores.tolerence=3``) or a value of the
  wrong type (``scores.tolerance=abc``) fails while composing, before any work, with the option's name
  (``pipeline/cli.py`` prints it as one line, exit 2).
- **settings**: :func:`settings_from_config` turns the composed config into these objects once
  (``OmegaConf.to_object``); the low-level modules take them, never the config.

None is frozen: OmegaConf makes a frozen dataclass a read-only node that the YAML values cannot be merged
into. This module imports nothing of the pipeline's stages: :mod:`pipeline.reports` takes its settings from here.

The schema checks keys and types only; ranges and rules between options (``scores.taus`` in [0, 1],
``cam.top_k`` at most the class count) stay in the rule table of :mod:`pipeline.options`. The defaults
here mirror the YAML files (a test keeps them equal); a run takes its values from the YAML.

The ``data`` and ``model`` groups stay plain dictionaries: their keys differ from option to option.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from pipeline.errors import ConfigError

SCHEMA_GROUP = "schema"  # ConfigStore group of the schemas: schema/cam, schema/scores, ...


@dataclass
class CamSettings:
    """``cam`` (conf/cam/*.yaml): which class-activation map is made, for which classes."""

    method: str = "gradcam"  # a name of pipeline.maps.methods.METHODS
    class_score: str = "logit"  # logit | softmax: the score the gradients are taken of
    negative: bool = False  # also the counterfactual map ReLU(-x) per target (columns neg_*)
    top_k: int = 1  # maps for the top-k predicted classes, and the true class
    save_maps: bool = False  # also write maps.parquet


@dataclass
class MaxBoxAccSettings:
    """``scores.maxboxacc``: MaxBoxAccV2 of the true-class maps."""

    enabled: bool = False
    thresholds: int = 100  # tau sweep resolution (step 1/thresholds)


@dataclass
class ScoresSettings:
    """``scores`` (conf/scores/default.yaml): how each map is scored against the boxes."""

    space: str = "input"  # input | original
    original_max_side: int = 512  # space=original: longest side of the scoring grid, pixels
    tolerance: float = 15.0  # pointing game: pixels of the scoring grid
    taus: list[float] = field(default_factory=lambda: [0.15])  # box-from-map thresholds; the first feeds localisation
    iou_threshold: float = 0.5  # "localised" when IoU >= this
    maxboxacc: MaxBoxAccSettings = field(default_factory=MaxBoxAccSettings)


@dataclass
class RuntimeSettings:
    """``runtime`` (conf/runtime/default.yaml): where and how the run executes."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: Any = 64  # a whole number or "auto" (checked by pipeline.options)
    num_workers: int = 2
    writer_queue: int = 4
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    channels_last: Any = "auto"  # auto | true | false
    compile: bool = False
    max_error_fraction: float = 0.1
    min_samples_for_error_check: int = 50
    progress: bool = True
    log_format: str = "text"  # text | json
    log_every_batches: int = 20
    debug: bool = False
    rank: int = 0
    ranks_from: str = "torchrun"  # torchrun | submitit: where several processes of one run learn their ranks
    sync_timeout_minutes: float = 720.0
    resume_unchecked: bool = False  # resume a folder whose fingerprint is missing or incomplete (pipeline.run_folder)
    shards: int = 1  # a sharded run: the dataset split into this many shards by a hash of the id (pipeline.shards)
    shard: int = 0  # the shard this job audits, 0 .. shards - 1
    merge_when_last: bool = True  # the last shard to finish merges the shards into the report


@dataclass
class TriageSettings:
    """``report.triage``: when a map counts as lying on or off the annotated object
    (:mod:`pipeline.reports.triage`)."""

    on_object_min_excess_energy: float = 0.2
    max_box_fraction: float = 0.75


@dataclass
class ShortcutSettings:
    """``report.shortcuts``: the shortcut finder's test and hot spot (:mod:`pipeline.reports.shortcuts`)."""

    alpha: float = 0.01
    min_effect: float = 0.25
    min_images: int = 5
    permutations: int = 10000
    seed: int = 0
    grid: int = 16
    collapse_share: float = 0.5
    hot_spot_shifts: int = 999
    hot_spot_max_images: int = 500


@dataclass
class StrategySettings:
    """``report.strategies``: the clustering of the predicted-class maps (:mod:`pipeline.reports.strategies`)."""

    grid: int = 16
    frame: str = "object"
    by: str = "pred"
    min_images: int = 20
    smooth: float = 1.0
    neighbours: int = 10
    max_clusters: int = 8
    max_images: int = 5000
    seed: int = 0
    examples: int = 4
    off_object_share: float = 0.5
    max_pictures: int = 20


@dataclass
class ReportSettings:
    """``report`` (conf/report/default.yaml): what the run writes into its folder."""

    overlays: str = "needs_look"  # needs_look | misclassified | all | none
    rows_per_part: int = 512
    group_by: list[str] = field(default_factory=lambda: ["marker_present"])
    review_page: bool = True
    review_max_images: int = 500
    save_probabilities: bool = False  # probabilities.parquet: the softmax over all classes per image
    probabilities_dtype: str = "float32"  # float32 | float16
    triage: TriageSettings = field(default_factory=TriageSettings)
    shortcuts: ShortcutSettings = field(default_factory=ShortcutSettings)
    strategies: StrategySettings = field(default_factory=StrategySettings)


@dataclass
class FaithfulnessSettings:
    """``faithfulness`` (conf/faithfulness/default.yaml): does the map point at what the model uses
    (pipeline/faithfulness; docs/definitions.md, "Faithfulness")."""

    confidence: bool = True  # average drop / increase in confidence of the pred and true maps, every image
    sample: int = 32  # deletion / insertion AUC on this many images (hash of the id); 0 = off
    steps: int = 16  # deletion / insertion steps (n + 1 scores per curve)
    blur_kernel: int = 11  # insertion's blur: Gaussian kernel size (RISE gkern klen)
    blur_sigma: float = 5.0  # and sigma (RISE gkern nsig)


@dataclass
class SanitySettings:
    """``sanity`` (conf/sanity/default.yaml): the explainer's sanity check at the end of the run
    (pipeline/faithfulness/sanity.py; docs/definitions.md, "Sanity check")."""

    sample: int = 64  # images (hash of the id); 0 = no sanity check
    stages: int = 3  # randomisation stages: the head, then blocks from the last one down
    verdict_stage: int = 2  # "maps depend on the weights": |map| judged after this many stages, the signed map after 1
    max_weight_similarity: float = 0.5  # ... yes when both mean Spearman correlations are below this
    max_class_similarity: float = 0.5  # "maps depend on the class": yes when the mean Spearman is below this
    seed: int = 42  # randomisation (Quantus: torch.manual_seed(seed + 1)) and the random other class


SCHEMAS: dict[str, type] = {
    "cam": CamSettings,
    "scores": ScoresSettings,
    "runtime": RuntimeSettings,
    "report": ReportSettings,
    "faithfulness": FaithfulnessSettings,
    "sanity": SanitySettings,
}


@dataclass
class Settings:
    """The typed settings of one run, built once from the composed config by :func:`settings_from_config`."""

    cam: CamSettings = field(default_factory=CamSettings)
    scores: ScoresSettings = field(default_factory=ScoresSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    faithfulness: FaithfulnessSettings = field(default_factory=FaithfulnessSettings)
    sanity: SanitySettings = field(default_factory=SanitySettings)


def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore as ``schema/<group>``.

    Every caller that composes ``conf/`` with Hydra calls it first (the YAML files name these schemas):
    :mod:`pipeline.hydra_app` when it is imported (``hydra.main``, a resume's ``hydra.compose``, a launcher's job
    process), the scripts and the tests before their ``compose``. Calling it again stores the same nodes again (idempotent).
    Hydra is imported here, not with this module, so that importing the settings stays light.
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        store.store(group=SCHEMA_GROUP, name=group, node=schema)


def group_settings(cfg: DictConfig, group: str) -> Any:
    """``cfg.<group>`` as its settings dataclass, checked against the schema once more: this also refuses a
    key added with ``+`` (Hydra adds it past the schema) and checks a config made without Hydra. A key the
    config lacks takes the dataclass default. Raises a ConfigError naming the option."""
    try:
        given = cfg[group]
        values = OmegaConf.to_container(given, resolve=True) if isinstance(given, DictConfig) else dict(given)
        node = OmegaConf.merge(OmegaConf.structured(SCHEMAS[group]), values)  # plain values: the schema sees every key
    except OmegaConfBaseException as error:
        key = f"{group}.{error.full_key}" if getattr(error, "full_key", None) else group
        reason = str(error).strip().splitlines()[0]
        unknown = isinstance(error, (ConfigAttributeError, ConfigKeyError))
        raise ConfigError(key, f"unknown option ({reason})" if unknown else reason) from error
    return OmegaConf.to_object(node)


def settings_from_config(cfg: DictConfig) -> Settings:
    """The typed settings of every fixed-key group of the composed config."""
    return Settings(**{group: group_settings(cfg, group) for group in SCHEMAS})


def resolved_config(cfg: DictConfig) -> str:
    """The run's resolved configuration as YAML, for the report metadata (``cam_audit.config``)."""
    return OmegaConf.to_yaml(cfg, resolve=True)
