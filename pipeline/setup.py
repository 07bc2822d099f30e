"""Set-up: the whole configuration checked and everything a run needs built, before the first batch.

:func:`prepare` returns an :class:`AuditSetup`: the data index (records, classes, metadata), the model and
its :class:`~pipeline.maps.engine.CamEngine` on the device, the preprocessing, and the typed settings.
Every refusal here is a :class:`~pipeline.errors.ConfigError` naming its option. The ``data`` and
``model`` groups are read from the config here and nowhere deeper.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import torch
from omegaconf import DictConfig

from pipeline import distributed, logs
from pipeline.data.dataset import PreprocessSpec, resolve_preprocess
from pipeline.data.decode import PEAK_BYTES_PER_PIXEL
from pipeline.data.device_decode import resolve_decode
from pipeline.data.records import ClassList, SampleRecord
from pipeline.data.sources import check_index_problems, load_records, read_metadata
from pipeline.errors import ConfigError, OptionError
from pipeline.faithfulness.columns import FaithfulnessPlan, plan_faithfulness
from pipeline.maps.engine import CamEngine
from pipeline.maps.methods import CamMethod, get_method
from pipeline.model.build import BuiltModel
from pipeline.model.from_config import build_model
from pipeline.model.layers import find_linear_head, probe_model, resolve_target_layer
from pipeline.model.layout import FeatureLayout, detect_layout
from pipeline.options import check_memory_per_worker, check_options, check_top_k, memory_limit_bytes
from pipeline.reports import schema as report_schema
from pipeline.run_folder import weights_digest
from pipeline.settings import Settings, settings_from_config

if TYPE_CHECKING:  # imported when scores.maxboxacc.enabled only
    from pipeline.scores.maxboxacc import MaxBoxAccV2

logger = logging.getLogger("pipeline.setup")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
SWITCHES = {"auto": None, "true": True, "false": False}


@dataclass
class AuditSetup:
    """Everything a run needs, built and checked before the first batch."""

    records: list[SampleRecord]
    classes: ClassList
    metadata: object  # pandas DataFrame indexed by id, or None
    model: BuiltModel
    target_layer: str
    engine: CamEngine
    device: torch.device
    preprocess: PreprocessSpec
    map_names: list[str]
    input_mean: torch.Tensor  # [1, 3, 1, 1] on the device: normalisation the model expects
    input_std: torch.Tensor  # [1, 3, 1, 1] on the device
    maxboxacc: MaxBoxAccV2 | None = (
        None  # a MaxBoxAccV2 when scores.maxboxacc.enabled (its per-image state goes in the rows)
    )
    score_space: str = "input"  # scores.space: input | original
    original_max_side: int = 512  # scores.original_max_side
    preprocess_sources: dict | None = (
        None  # where size / resize_size / interpolation came from: config, model or fallback
    )
    layout: str = "nchw"  # how the target layer's output became [B, C, h, w] (pipeline.model.layout)
    weights_sha256: str = ""  # of the model's state dict as loaded: part of the run's fingerprint
    precision: str = "fp32"  # runtime.precision resolved (auto -> bf16 on CUDA, fp32 on the CPU)
    channels_last: bool = False  # the model and its inputs in channels-last memory format (runtime.channels_last)
    decode_on_device: bool = False  # data.decode resolved: JPEGs decoded in batches on the device
    settings: Settings = field(default_factory=Settings)  # cam, scores, runtime, report as typed values
    faithfulness: FaithfulnessPlan | None = None  # what audit_batch adds


def resolve_precision(option: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA (the forward under bf16 autocast; maps and scores stay float32), ``fp32``
    on the CPU (where bf16 autocast is slower on most processors); other values as given (checked by the
    option rules)."""
    if option == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return option


def resolve_channels_last(option, module: torch.nn.Module) -> bool:
    """``auto`` -> channels-last for a model with 2-D convolutions (oneDNN and cuDNN run them faster in
    that layout: measured 1.9x for EfficientNet-Lite0 on the CPU), never for one without."""
    switch = SWITCHES[str(option).lower()]
    if switch is not None:
        return switch
    return any(isinstance(m, torch.nn.Conv2d) for m in module.modules())


def resolve_device(option: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an explicit ``cuda`` without a GPU is an error."""
    if option == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if option.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("runtime.device", f"{option} was asked for but no CUDA GPU is available; use auto or cpu")
    return torch.device(option)


def check_writable(run_dir: Path) -> None:
    """Fail before any work when the output folder cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{os.getpid()}"  # one per process: torchrun ranks check at once
        probe.write_text("ok")
        probe.unlink(missing_ok=True)
    except OSError as error:
        raise ConfigError(
            "hydra.run.dir", f"output folder {str(run_dir)!r} cannot be written ({error.strerror or error})"
        ) from error


def max_boxes_option(cfg: DictConfig) -> int | None:
    """``data.max_boxes``: boxes kept per image (null: all; the score tensors then grow with the largest).
    Its range is checked with the other options (:mod:`pipeline.options`)."""
    value = cfg.data.get("max_boxes", None)
    return None if value is None else int(value)


def check_metadata_coverage(metadata, records: list[SampleRecord], mode: str) -> None:
    """Warn (``data.metadata_missing=warn``) or stop (``fail``) when the metadata has no row for some ids:
    their metadata columns would be null and every ``report.group_by`` figure would leave them out. ``mode``
    was checked with the other options (pipeline/options.py)."""
    missing = report_schema.unmatched_metadata_ids(metadata, records)
    if not missing:
        return
    audited = sum(1 for r in records if not r.problem)
    example = f"e.g. id {missing[0]!r}; the metadata's first ids: {', '.join(map(repr, list(metadata.index[:3])))}"
    message = f"data.metadata: no row for {len(missing)} of {audited} ids ({example}); their metadata columns are null"
    if mode == "fail":
        raise ConfigError("data.metadata_missing", f"{message} (set data.metadata_missing=warn to run anyway)")
    logs.event(
        logger,
        "metadata_missing",
        f"cam-audit: warning: {message}",
        logging.WARNING,
        missing=len(missing),
        audited=audited,
    )


def warn_shadowed_metadata(metadata, schema: pa.Schema) -> None:
    """Warn about ``data.metadata`` columns named like a report column (``label``, ``correct``...): the report
    keeps its own column, so a ``group_by`` on that name would not group by the metadata."""
    if metadata is None:
        return
    shadowed = [
        c for c in metadata.columns if c in schema.names and not report_schema.is_metadata_field(schema.field(c))
    ]
    if shadowed:
        logs.event(
            logger,
            "metadata_shadowed",
            f"cam-audit: warning: data.metadata columns {', '.join(map(repr, shadowed))} have the names of report "
            "columns and are left out; rename them in the CSV to keep them",
            logging.WARNING,
            columns=shadowed,
        )


def map_names_for(top_k: int) -> list[str]:
    """Names of the maps made per image (``cam.top_k``): ``pred``, ``true``, then ``top2``..``topK``."""
    return ["pred", "true"] + [f"top{k}" for k in range(2, top_k + 1)]


def choose_device(settings: Settings, ranks: distributed.Ranks | None) -> torch.device:
    """``runtime.device`` resolved; with several ranks on CUDA each rank takes GPU ``local_rank``."""
    device = resolve_device(settings.runtime.device)
    if ranks is not None and ranks.is_distributed and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ranks.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def load_data(cfg: DictConfig, settings: Settings, built: BuiltModel):
    """The data index: ``(records, classes, metadata)``, checked (index problems within the failure budget,
    ``cam.top_k`` within the class count, the metadata's coverage)."""
    runtime = settings.runtime
    cache_dir = Path(cfg.cache_dir)
    records, classes, metadata_path = load_records(cfg.data, cache_dir, model_classes=built.classes)
    check_index_problems(
        records, classes, str(cfg.data.source), runtime.max_error_fraction, runtime.min_samples_for_error_check
    )
    check_top_k(settings.cam.top_k, len(classes))
    metadata = read_metadata(metadata_path)
    check_metadata_coverage(metadata, records, str(cfg.data.get("metadata_missing", "warn")))
    return records, classes, metadata


def resolve_layer(
    cfg: DictConfig, module: torch.nn.Module, size: int, device: torch.device, classes: ClassList
) -> tuple[FeatureLayout, str, torch.nn.Module, int]:
    """The model's feature layout and target layer: ``(layout, layer name, layer, channels)``, after a probe
    forward at the input size that also checks the model's output count against the class list."""
    try:
        layout = detect_layout(module, str(cfg.model.get("layout", "auto")), size)
    except ValueError as error:
        raise ConfigError("model.layout", str(error)) from error
    try:
        candidates, outputs = probe_model(module, size, device, layout)
    except torch.cuda.OutOfMemoryError:
        raise
    except (RuntimeError, AssertionError, ValueError) as error:  # e.g. a ViT built for 224 x 224 given 384 x 384
        raise ConfigError(
            "data.preprocess.size",
            f"the model failed on a {size} x {size} input (is the size right for it?): "
            f"{(str(error).splitlines() or [type(error).__name__])[0]}",
        ) from error
    try:
        name, layer, (channels, _, _) = resolve_target_layer(
            module, str(cfg.model.target_layer), size, device, layout, candidates
        )
    except ValueError as error:
        raise ConfigError("model.target_layer", str(error)) from error  # the message lists the candidates
    if outputs.dim() != 2 or outputs.shape[1] != len(classes):
        raise ConfigError(
            "data.classes",
            f"the model has {tuple(outputs.shape[1:])} outputs but the class list has {len(classes)} classes",
        )
    return layout, name, layer, channels


def check_class_keys(built: BuiltModel, classes: ClassList) -> None:
    """The class list must be the one the checkpoint was trained on, when the checkpoint says."""
    keys = built.class_keys
    if keys is not None and list(keys) != list(classes.keys) and list(keys) != list(classes.names):
        raise ConfigError("data.classes", "the class list differs from the classes the checkpoint was trained on")


def build_engine(
    settings: Settings, module: torch.nn.Module, method: CamMethod, layer_info: tuple, precision: str
) -> CamEngine:
    """The CAM engine on ``layer_info`` = ``(layout, name, layer, channels)``; CAM also needs the linear head."""
    layout, name, layer, channels = layer_info
    head = None
    if method.needs_head_weights:
        # CAM is defined for a global-average-pool + linear head right after the target layer; in a ViT the
        # target (a norm inside the last block) is followed by attention and MLP, whatever the pooling.
        head = None if layout.kind == "tokens" else find_linear_head(module, channels)
        if head is None:
            raise ConfigError("cam.method", f"cam needs a global-average-pool + linear head after {name}; use gradcam")
    engine = CamEngine(module, layer, method, settings.cam.class_score, head, PRECISIONS[precision], layout)
    if settings.runtime.compile:
        # The target layer's hook stays in the compiled model (Dynamo traces module hooks); its side effect
        # (keeping the activations) splits the graph there: trunk and head are compiled apart.
        engine.model = torch.compile(engine.model)  # type: ignore[assignment]  # an OptimizedModule (a Module); the stub says Callable
    return engine


def input_normalisation(built: BuiltModel, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's input mean and std as ``[1, 3, 1, 1]`` tensors on the device (a zero std is refused: it
    makes every input inf/NaN)."""
    assert built.mean is not None and built.std is not None  # build_model fills in ImageNet's when unknown
    if not all(float(v) > 0 and float(v) != float("inf") for v in built.std):
        raise ConfigError("model.std", f"every value must be a finite number above 0, got {list(built.std)}")
    mean = torch.tensor(built.mean, device=device).view(1, 3, 1, 1)
    return mean, torch.tensor(built.std, device=device).view(1, 3, 1, 1)


def prepare(
    cfg: DictConfig, run_dir: Path, ranks: distributed.Ranks | None = None, settings: Settings | None = None
) -> AuditSetup:
    """Check the configuration and build the data index, model and engine. Raises ConfigError.

    ``settings`` are the typed settings of ``cfg`` (:func:`pipeline.settings.settings_from_config`; built
    here when not given).
    """
    settings = settings if settings is not None else settings_from_config(cfg)
    check_options(cfg)  # every option's value (pipeline/options.py); run_audit has checked them already
    cam, runtime = settings.cam, settings.runtime
    method = get_method(cam.method)
    device = choose_device(settings, ranks)
    precision = resolve_precision(runtime.precision, device)
    decode_on_device = resolve_decode(str(cfg.data.get("decode", "auto")), device)
    check_writable(run_dir)
    # The model first: with data.classes=null its own class list maps the dataset's labels to its outputs.
    built = build_model(cfg.model, Path(cfg.cache_dir), cfg.data)
    records, classes, metadata = load_data(cfg, settings, built)
    weights = weights_digest(built.module)  # before the move to the device: hashed from host memory
    module = built.module.to(device).eval()
    channels_last = resolve_channels_last(runtime.channels_last, module)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    try:
        preprocess, preprocess_sources = resolve_preprocess(cfg.data.preprocess, built.preprocess)
    except OptionError as error:
        raise ConfigError(f"data.preprocess.{error.option}", error.reason) from error
    check_memory_per_worker(preprocess.max_pixels, runtime.num_workers, PEAK_BYTES_PER_PIXEL, memory_limit_bytes())
    layer_info = resolve_layer(cfg, module, preprocess.size, device, classes)
    check_class_keys(built, classes)
    maxboxacc = None
    if settings.scores.maxboxacc.enabled:
        from pipeline.scores.maxboxacc import MaxBoxAccV2

        maxboxacc = MaxBoxAccV2(thresholds=settings.scores.maxboxacc.thresholds)
    mean, std = input_normalisation(built, device)
    return AuditSetup(
        records=records,
        classes=classes,
        metadata=metadata,
        model=built,
        target_layer=layer_info[1],
        engine=build_engine(settings, module, method, layer_info, precision),
        device=device,
        preprocess=preprocess,
        map_names=map_names_for(cam.top_k),
        input_mean=mean,
        input_std=std,
        maxboxacc=maxboxacc,
        score_space=settings.scores.space,
        original_max_side=settings.scores.original_max_side,
        preprocess_sources=preprocess_sources,
        layout=layer_info[0].kind,
        weights_sha256=weights,
        precision=precision,
        channels_last=channels_last,
        decode_on_device=decode_on_device,
        settings=settings,
        faithfulness=plan_faithfulness(settings.faithfulness, records),
    )
