"""Orchestration: one image from the loader to its Parquet row.

``prepare`` checks the whole configuration and builds everything before any work starts (a bad option
is a :class:`~pipeline.errors.ConfigError`); ``run_audit`` streams the batches through the engine and
the scores, writes rows and overlays as it goes, and ``pipeline.reports.finalize`` merges the parts and
writes the summary. Follow one batch in :func:`audit_batch`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from omegaconf import DictConfig
from torch.profiler import record_function
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import distributed, logs, provenance
from pipeline.data.batch import Batch
from pipeline.data.dataset import AuditDataset, PreprocessSpec, collate_samples, resolve_preprocess
from pipeline.data.decode import PEAK_BYTES_PER_PIXEL
from pipeline.data.device_decode import decode_batch_on_device, resolve_decode
from pipeline.data.records import ClassList, SampleRecord
from pipeline.data.sources import check_index_problems, load_records, read_metadata
from pipeline.errors import ConfigError, OptionError, TooManyFailures, is_disk_full
from pipeline.export import label_quality
from pipeline.faithfulness.columns import audit_batch_columns, plan_faithfulness
from pipeline.faithfulness.sanity import run_sanity_check
from pipeline.maps.engine import CamEngine, UpsampledMaps, upsample_and_normalise
from pipeline.maps.methods import get_method
from pipeline.maps.warp import original_grid_sizes
from pipeline.model.build import BuiltModel
from pipeline.model.from_config import build_model
from pipeline.model.layers import find_linear_head, probe_model, resolve_target_layer
from pipeline.model.layout import detect_layout
from pipeline.options import check_memory_per_worker, check_options, check_top_k, memory_limit_bytes
from pipeline.reports import saved_maps
from pipeline.reports import schema as report_schema
from pipeline.reports.background import BackgroundWorker, BackgroundWriteError
from pipeline.reports.finalize import finalize_run
from pipeline.reports.overlays import OVERLAY_MODES, OverlayFailure, overlay_rows, safe_file_stem, save_overlays
from pipeline.reports.parts import (
    DamagedPart,
    PartWriter,
    layout_differences,
    list_parts,
    read_column,
    read_part,
    remove_leftovers,
    write_table_atomic,
)
from pipeline.reports.shortcuts import GRID_COLUMN
from pipeline.reports.strategies import MAP_GRID_COLUMN, strategy_grid
from pipeline.run_folder import acquire_lock, check_fingerprint, run_fingerprint, store_fingerprint, weights_digest
from pipeline.scores import boxes_to_mask, score_map
from pipeline.scores.distinct import distinct_maps
from pipeline.scores.offbox import off_box_energy_grid
from pipeline.scores.space import ScoringView, coordinates_to_stored, scoring_view
from pipeline.settings import Settings, resolved_config, settings_from_config

logger = logging.getLogger("pipeline.run")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
SWITCHES = {"auto": None, "true": True, "false": False}
SCORE_SPACES = ("input", "original")


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
    input_mean: torch.Tensor | None = None  # [1, 3, 1, 1] on the device: normalisation the model expects
    input_std: torch.Tensor | None = None
    maxboxacc: object = None  # a MaxBoxAccV2 when scores.maxboxacc.enabled (its per-image state goes in the rows)
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
    faithfulness: object = None  # pipeline.faithfulness.columns.FaithfulnessPlan: what audit_batch adds


# runtime.batch_size=auto starts here and halves on every out-of-memory error.
AUTO_BATCH_START = {"cuda": 256, "cpu": 32}
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass
class BatchFit:
    """How many images go through one forward: the loader's batch size, or less after an out-of-memory
    error when ``auto`` (``runtime.batch_size=auto``)."""

    size: int
    auto: bool

    @classmethod
    def from_option(cls, option, device: torch.device) -> BatchFit:
        if str(option) == "auto":
            return cls(AUTO_BATCH_START.get(device.type, 32), True)
        return cls(int(option), False)

    def halve(self) -> None:
        """After an out-of-memory error: half as many images per forward, and say so."""
        self.size = max(1, self.size // 2)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        logger.warning("runtime.batch_size=auto: out of memory; going on with %d images per forward", self.size)


def audit_fitting(setup: AuditSetup, batch: Batch, labels: torch.Tensor, fit: BatchFit):
    """:func:`audit_batch` over the batch in pieces of ``fit.size`` rows; with ``fit.auto`` an out-of-memory
    error halves the size and retries the piece. Yields ``(piece, (columns, maps, view))``."""
    start, rows = 0, len(batch)
    while start < rows:
        stop = min(rows, start + fit.size)
        piece = batch if (start, stop) == (0, rows) else batch.rows(slice(start, stop))
        try:
            result = audit_batch(setup, piece, labels[start:stop])
        except OUT_OF_MEMORY:
            if not fit.auto or fit.size == 1:
                raise
            fit.halve()
            continue
        yield piece, result
        start = stop


def resolve_precision(option: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA (the forward under bf16 autocast; maps and scores stay float32), ``fp32``
    on the CPU (where bf16 autocast is slower on most processors); other values as given."""
    if option == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if option not in PRECISIONS:
        raise ConfigError("runtime.precision", f"unknown precision {option!r}; use auto, fp32, bf16 or fp16")
    return option


def resolve_channels_last(option, module: torch.nn.Module) -> bool:
    """``auto`` -> channels-last for a model with 2-D convolutions (oneDNN and cuDNN run them faster in
    that layout: measured 1.9x for EfficientNet-Lite0 on the CPU), never for one without."""
    key = str(option).lower()
    if key not in SWITCHES:
        raise ConfigError("runtime.channels_last", f"unknown value {option!r}; use auto, true or false")
    if SWITCHES[key] is not None:
        return SWITCHES[key]
    return any(isinstance(m, torch.nn.Conv2d) for m in module.modules())


def resolve_device(option: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an explicit ``cuda`` without a GPU is an error."""
    if option == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if option.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("runtime.device", f"{option} was asked for but no CUDA GPU is available; use auto or cpu")
    if option not in ("cpu",) and not option.startswith("cuda"):
        raise ConfigError("runtime.device", f"unknown device {option!r}; use auto, cpu or cuda[:N]")
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
    """``data.max_boxes``: boxes kept per image (null: all; the score tensors then grow with the largest)."""
    value = cfg.data.get("max_boxes", None)
    if value is None:
        return None
    if int(value) < 1:
        raise ConfigError("data.max_boxes", f"must be at least 1 (or null for no cap), got {value}")
    return int(value)


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


def map_names_for(top_k: int) -> list[str]:
    """Names of the maps made per image (``cam.top_k``): ``pred``, ``true``, then ``top2``..``topK``."""
    return ["pred", "true"] + [f"top{k}" for k in range(2, top_k + 1)]


def prepare(
    cfg: DictConfig, run_dir: Path, ranks: distributed.Ranks | None = None, settings: Settings | None = None
) -> AuditSetup:
    """Check the configuration and build the data index, model and engine. Raises ConfigError.

    ``settings`` are the typed settings of ``cfg`` (:func:`pipeline.settings.settings_from_config`; built
    here when not given). The ``data`` and ``model`` groups are read from ``cfg`` here and nowhere deeper.
    With several ``ranks`` on CUDA, each rank takes GPU ``local_rank``.
    """
    settings = settings if settings is not None else settings_from_config(cfg)
    check_options(cfg)  # ranges and the dict-based groups' types (pipeline/options.py)
    max_boxes_option(cfg)
    cam, scores, runtime = settings.cam, settings.scores, settings.runtime
    try:
        method = get_method(cam.method)
    except OptionError as error:
        raise ConfigError(f"cam.{error.option}", error.reason) from error
    if scores.space not in SCORE_SPACES:
        raise ConfigError("scores.space", f"unknown space {scores.space!r}; use input or original")
    device = resolve_device(runtime.device)
    precision = resolve_precision(runtime.precision, device)
    try:
        decode_on_device = resolve_decode(str(cfg.data.get("decode", "cpu")), device)
    except ValueError as error:
        raise ConfigError("data.decode", str(error)) from error
    if ranks is not None and ranks.is_distributed and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ranks.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    check_writable(run_dir)
    cache_dir = Path(cfg.cache_dir)
    # The model first: with data.classes=null its own class list maps the dataset's labels to its outputs.
    built = build_model(cfg.model, cache_dir, cfg.data)
    records, classes, metadata_path = load_records(cfg.data, cache_dir, model_classes=built.classes)
    check_index_problems(
        records,
        classes,
        str(cfg.data.source),
        runtime.max_error_fraction,
        runtime.min_samples_for_error_check,
    )
    check_top_k(cam.top_k, len(classes))
    metadata = read_metadata(metadata_path)
    check_metadata_coverage(metadata, records, str(cfg.data.get("metadata_missing", "warn")))
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
    size = preprocess.size
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
        target_name, layer, (channels, _, _) = resolve_target_layer(
            module, str(cfg.model.target_layer), size, device, layout, candidates
        )
    except ValueError as error:
        raise ConfigError("model.target_layer", str(error)) from error  # the message lists the candidates
    if outputs.dim() != 2 or outputs.shape[1] != len(classes):
        raise ConfigError(
            "data.classes",
            f"the model has {tuple(outputs.shape[1:])} outputs but the class list has {len(classes)} classes",
        )
    if (
        built.class_keys is not None
        and list(built.class_keys) != list(classes.keys)
        and list(built.class_keys) != list(classes.names)
    ):
        raise ConfigError("data.classes", "the class list differs from the classes the checkpoint was trained on")
    head = None
    if method.needs_head_weights:
        # CAM is defined for a global-average-pool + linear head right after the target layer; in a ViT the
        # target (a norm inside the last block) is followed by attention and MLP, whatever the pooling.
        head = None if layout.kind == "tokens" else find_linear_head(module, channels)
        if head is None:
            raise ConfigError(
                "cam.method", f"cam needs a global-average-pool + linear head after {target_name}; use gradcam"
            )
    engine = CamEngine(module, layer, method, cam.class_score, head, PRECISIONS[precision], layout)
    if runtime.compile:
        # The target layer's hook stays in the compiled model (Dynamo traces module hooks); its side effect
        # (keeping the activations) splits the graph there: trunk and head are compiled apart.
        engine.model = torch.compile(engine.model)
    maxboxacc = None
    if scores.maxboxacc.enabled:
        from pipeline.scores.maxboxacc import MaxBoxAccV2

        maxboxacc = MaxBoxAccV2(thresholds=scores.maxboxacc.thresholds)
    if not all(float(v) > 0 and float(v) != float("inf") for v in built.std):  # a zero std makes every input inf/NaN
        raise ConfigError("model.std", f"every value must be a finite number above 0, got {list(built.std)}")
    mean = torch.tensor(built.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(built.std, device=device).view(1, 3, 1, 1)
    return AuditSetup(
        records,
        classes,
        metadata,
        built,
        target_name,
        engine,
        device,
        preprocess,
        map_names_for(cam.top_k),
        mean,
        std,
        maxboxacc,
        scores.space,
        scores.original_max_side,
        preprocess_sources,
        layout.kind,
        weights,
        precision,
        channels_last,
        decode_on_device,
        settings,
        faithfulness=plan_faithfulness(settings.faithfulness, records),
    )


def audit_batch(
    setup: AuditSetup, batch: Batch, labels: torch.Tensor
) -> tuple[dict[str, torch.Tensor], UpsampledMaps, ScoringView]:
    """The hot path for one batch, all on the device (its options: ``setup.settings``).

    Args:
        batch: from :func:`~pipeline.data.dataset.collate_samples`; ``image`` ``[B, 3, S, S]`` uint8.
        labels: ``[B]`` long, true classes.
    Returns:
        columns: name -> ``[B]`` tensor on the device (predictions, every score of every map);
        maps: the :class:`~pipeline.maps.engine.UpsampledMaps` (``[B, K, S, S]``);
        view: the :class:`~pipeline.scores.space.ScoringView` the positive maps were scored on (for overlays).
    """
    device = setup.device
    images = (batch.image.to(device, non_blocking=True).float() / 255.0 - setup.input_mean) / setup.input_std
    if setup.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    input_boxes = batch.boxes.to(device, non_blocking=True)
    boxes, box_valid = input_boxes.coords, input_boxes.valid
    labels = labels.to(device, non_blocking=True)
    cam, score_settings = setup.settings.cam, setup.settings.scores  # (`scores` below: a map's score columns)
    top_k = cam.top_k

    def choose_targets(logits: torch.Tensor) -> torch.Tensor:
        ranked = logits.topk(top_k, dim=1).indices  # [B, top_k]: pred first
        return torch.cat([ranked[:, :1], labels[:, None], ranked[:, 1:]], dim=1)

    with record_function("audit.forward_and_maps"):
        output, targets = setup.engine.forward_then(images, choose_targets)
    # A diverged checkpoint or a zero std gives NaN/inf logits or maps: such an image gets no prediction and
    # no scores (null, counted), never an argmax of NaN or a NaN map scored as a "miss". [B] bool:
    non_finite = ~(
        torch.isfinite(output.logits).all(dim=1) & torch.isfinite(output.signed_maps).flatten(2).all(dim=2).all(dim=1)
    )
    output.signed_maps = torch.nan_to_num(output.signed_maps, nan=0.0, posinf=0.0, neginf=0.0)  # nulled below anyway
    probs = output.logits.softmax(dim=1)
    confidence, pred = probs.max(dim=1)
    columns: dict[str, torch.Tensor] = {
        "pred": pred,
        "confidence": confidence,
        "prob_true": probs.gather(1, labels[:, None])[:, 0],
        "correct": (pred == labels).float(),
        # FiftyOne brain's hardness (entropy of the softmax) and mistakenness, to sort the rows by (issue 24)
        "hardness": label_quality.hardness(output.logits),
        "n_boxes": box_valid.sum(dim=1).float(),
        "no_box_in_input": (~box_valid.any(dim=1)).float(),
    }
    columns["mistakenness"] = label_quality.mistakenness(columns["hardness"], pred == labels)
    size = (images.shape[-2], images.shape[-1])
    with record_function("audit.upsample"):
        maps = upsample_and_normalise(output.signed_maps, size)
        maps.signed_low_res = output.signed_maps
        variants = {"": maps}
        if cam.negative:
            variants["neg_"] = upsample_and_normalise(output.signed_maps, size, negative=True)
    grid_size = None
    if setup.score_space == "original":
        grid_size = original_grid_sizes(batch.placement, batch.width, batch.height, setup.original_max_side)
    views = {prefix: scoring_view(variant, batch, input_boxes, grid_size) for prefix, variant in variants.items()}
    distinct, copy_of = distinct_maps(targets)
    for prefix, view in views.items():
        # All K maps of the batch are scored as one [K * B] batch: fewer, larger device operations.
        # A map whose class repeats within its image (pred == true for a right prediction) is scored once.
        k_maps, height, width = view.maps.shape[1], view.maps.shape[-2], view.maps.shape[-1]
        domain = None if view.domain is None else view.domain.repeat(k_maps, 1, 1)[distinct]
        with record_function("audit.scores"):
            scores = score_map(
                view.maps.transpose(0, 1).reshape(-1, height, width)[distinct],
                view.raw.transpose(0, 1).reshape(-1, height, width)[distinct],
                view.empty.transpose(0, 1).reshape(-1)[distinct],
                view.boxes.repeat(k_maps, 1, 1)[distinct],
                view.box_valid.repeat(k_maps, 1)[distinct],
                tolerance=score_settings.tolerance,
                taus=tuple(score_settings.taus),
                iou_threshold=score_settings.iou_threshold,
                domain=domain,
            )
            scores = {column: values[copy_of] for column, values in scores.items()}
        if view.grid_scale is not None:
            scores = coordinates_to_stored(scores, view.grid_scale.repeat(k_maps, 1))
        for k, name in enumerate(setup.map_names):
            if name.startswith("top"):
                columns[f"{prefix}{name}_class"] = targets[:, k].float()
                columns[f"{prefix}{name}_prob"] = probs.gather(1, targets[:, k : k + 1])[:, 0]
            columns[f"{prefix}{name}_empty"] = view.empty[:, k].float()
            columns[f"{prefix}{name}_map_max"] = variants[prefix].raw_max[:, k]
            for score, values in scores.items():
                columns[f"{prefix}{name}_{score}"] = values.view(k_maps, -1)[k].float()
    grid = setup.settings.report.shortcuts.grid
    if (
        grid > 0
    ):  # [B, grid * grid]: where the predicted-class map's off-box energy goes (the shortcut finder's hot spots)
        height, width = maps.normalised.shape[-2:]
        columns[GRID_COLUMN] = off_box_energy_grid(
            maps.normalised[:, 0], boxes_to_mask(boxes, box_valid, height, width), grid
        ).flatten(1)
    strategies = setup.settings.report.strategies
    if strategies.grid > 0:  # [B, grid * grid]: the predicted-class map on a coarse grid (strategy clustering)
        columns[MAP_GRID_COLUMN] = strategy_grid(maps.normalised[:, 0], boxes, box_valid, strategies)
    # faithfulness.*: average drop / increase in confidence (every image), deletion / insertion AUC (the sample)
    columns.update(audit_batch_columns(setup, images, maps, targets, probs, batch.index))
    if setup.maxboxacc is not None:  # [B, T]: stored per image so that a resumed run aggregates it exactly
        view = views[""]
        columns["true_maxboxacc_best_iou"] = setup.maxboxacc.best_iou_per_threshold(
            view.maps[:, 1], view.empty[:, 1], view.boxes, view.box_valid, view.domain
        ).float()
    return null_non_finite(columns, non_finite), maps, views[""]


# Columns of audit_batch that describe the input, not the model's output: kept for a non-finite image.
INPUT_COLUMNS = ("n_boxes", "no_box_in_input")


def null_non_finite(columns: dict[str, torch.Tensor], non_finite: torch.Tensor) -> dict[str, torch.Tensor]:
    """NaN every prediction and score of the images flagged ``non_finite`` (``[B]`` bool) and add the flag as
    column ``non_finite_output``; :func:`columns_to_table` writes those NaNs as nulls."""
    out = {}
    for name, values in columns.items():
        if name in INPUT_COLUMNS:
            out[name] = values
        else:
            flag = non_finite.view(-1, *([1] * (values.dim() - 1)))
            out[name] = torch.where(flag, torch.full_like(values, float("nan"), dtype=torch.float32), values.float())
    out["non_finite_output"] = non_finite.float()
    return out


@dataclass
class HostColumns:
    """A batch's ``[B]`` score vectors on their way to the host: one stacked copy, started without waiting.

    Attributes:
        names: column names, the rows of ``matrix``.
        matrix: ``[n_columns, B]`` float32 on the host (pinned when copied from CUDA; complete after ``wait``).
        vectors: name -> ``[B, T]`` host tensors (per-image vectors such as the MaxBoxAccV2 state).
        ready: a CUDA event recorded after the copies, or None on the CPU.
    """

    names: list[str]
    matrix: torch.Tensor
    vectors: dict[str, torch.Tensor]
    ready: object = None

    def wait(self) -> None:
        """Block until the copies have landed (only the calling thread waits)."""
        if self.ready is not None:
            self.ready.synchronize()


def start_host_copy(columns: dict[str, torch.Tensor]) -> HostColumns:
    """Copy the ``[B]`` (and ``[B, T]``) columns to the host with non-blocking copies into pinned memory, so the
    main loop can launch the next batch while they travel; :meth:`HostColumns.wait` before reading them."""
    names = [n for n, c in columns.items() if c.dim() == 1]
    stacked = torch.stack([columns[n].float() for n in names])  # [n_columns, B]: one transfer
    on_cuda = stacked.device.type == "cuda"

    def to_host(tensor: torch.Tensor) -> torch.Tensor:
        if not on_cuda:
            return tensor.cpu()
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        return host

    matrix = to_host(stacked)
    vectors = {n: to_host(c.float()) for n, c in columns.items() if c.dim() == 2}
    ready = None
    if on_cuda:
        ready = torch.cuda.Event()
        ready.record()
    return HostColumns(names, matrix, vectors, ready)


def columns_to_table(
    columns: dict[str, torch.Tensor] | HostColumns,
    batch: Batch,
    setup: AuditSetup,
    todo_arrays: dict[str, pa.Array],
    schema: pa.Schema,
) -> pa.Table:
    """An Arrow table of the batch's rows from its score columns (device tensors, or a :class:`HostColumns`
    already on its way to the host, which is waited for here)."""
    host = columns if isinstance(columns, HostColumns) else start_host_copy(columns)
    host.wait()
    names, matrix = host.names, host.matrix.numpy()
    positions = pa.array(batch.index.numpy())
    data = {key: array.take(positions) for key, array in todo_arrays.items()}
    null = (
        matrix[names.index("non_finite_output")].astype(bool)
        if "non_finite_output" in names
        else np.zeros(matrix.shape[1], bool)
    )
    for row, name in enumerate(names):
        data[name] = _nullable(
            matrix[row],
            null if name not in INPUT_COLUMNS + ("non_finite_output",) else None,
            schema.field(name).type if name in schema.names else None,
        )
    for name, values in host.vectors.items():  # per-image vectors (MaxBoxAccV2 state) become list columns
        flat = values.numpy()
        data[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1], mask=pa.array(null))
    class_names = np.asarray(setup.classes.names, dtype=object)
    for row, name in enumerate(names):
        if name == "pred" or name.endswith("_class"):  # a map's class: its name beside its index (top-k maps too)
            known = null | np.isnan(matrix[row])
            index = np.where(known, 0, np.nan_to_num(matrix[row])).astype(np.int64)
            data["pred_name" if name == "pred" else f"{name}_name"] = pa.array(
                class_names[index], pa.string(), mask=known
            )
    data["width"], data["height"] = batch.width.numpy(), batch.height.numpy()
    data["n_boxes_dropped"], data["n_boxes_over_cap"] = batch.n_boxes_dropped.numpy(), batch.n_boxes_over_cap.numpy()
    return pa.table({field.name: data[field.name] for field in schema}).cast(schema)


def _nullable(values: np.ndarray, null: np.ndarray | None, arrow_type: pa.DataType | None) -> np.ndarray | pa.Array:
    """One ``[B]`` float column as its Arrow type (flags as booleans, labels as integers), null where the value
    is undefined (NaN: e.g. a box score without a box) or where ``null`` is set (a non-finite image)."""
    missing = np.isnan(values) if null is None else np.isnan(values) | null
    if arrow_type is None or pa.types.is_floating(arrow_type):
        return pa.array(values, arrow_type, mask=missing)
    filled = np.where(missing, 0, values)
    return pa.array(
        filled.astype(bool) if pa.types.is_boolean(arrow_type) else filled.astype(np.int64), mask=missing
    ).cast(arrow_type)


def overlay_error_rows(failures: list[OverlayFailure], table: pa.Table) -> pa.Table:
    """``errors.parquet`` rows (stage ``overlay``) for the overlays of ``table``'s samples that could not be made."""
    paths = dict(zip(table.column("id").to_pylist(), table.column("path").to_pylist()))
    return pa.table(
        {
            "id": [f.sample_id for f in failures],
            "path": [paths.get(f.sample_id) for f in failures],
            "stage": ["overlay"] * len(failures),
            "error_type": [f.error_type for f in failures],
            "message": [f.message for f in failures],
        },
        schema=report_schema.ERRORS_SCHEMA,
    )


def too_many_message(n_failed: int, n_non_finite: int, seen: int, max_fraction: float, parts_dir: Path) -> str:
    """Why the run stopped: failed samples, and images whose model outputs were not finite."""
    non_finite = (
        f" and {n_non_finite} gave non-finite logits or maps (NaN/inf: diverged weights? fp16 overflow?)"
        if n_non_finite
        else ""
    )
    return (
        f"{n_failed} of {seen} samples failed{non_finite}, more than runtime.max_error_fraction={max_fraction}; "
        f"see {parts_dir}/errors-*.parquet. Rows written so far are kept (resume=true continues)."
    )


def ignore_sigterm(worker_id: int) -> None:
    """In a loader worker: ignore SIGTERM. A scheduler signals the whole process group; the main process stops
    the run (pipeline.cli: exit 143, parts kept) and shuts its workers down itself. A worker killed by the
    signal first made the main process report "DataLoader worker ... killed by signal" (a traceback)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def check_failure_budget(parts_dir: Path, max_fraction: float) -> None:
    """The failure budget over the whole run, once every part is written (resumed invocations' rows included)
    and whatever the sample count: during the run it is checked only from ``runtime.min_samples_for_error_check``
    samples on, so a small set whose images all failed finished as "Audit of 0 images ... 24 skipped", exit 0.
    Raises :class:`TooManyFailures` (exit 3) when no sample was audited at all, or when more than
    ``max_fraction`` of the samples failed (errors other than ``overlay``, and non-finite outputs)."""
    stages = read_column(list_parts(parts_dir, "errors"), "stage")
    failed = [stage for stage in stages if stage != "overlay"]  # an overlay error's sample is scored
    non_finite = read_column(list_parts(parts_dir, "samples"), "non_finite_output")
    total = len(failed) + len(non_finite)
    if total and not non_finite:
        by_stage = ", ".join(f"{stage} {failed.count(stage)}" for stage in sorted(set(failed)))
        raise TooManyFailures(
            f"none of the {total} samples could be audited (failed at {by_stage}); see {parts_dir}/errors-*.parquet: "
            "the data (or data.classes, data.preprocess) is probably wrong"
        )
    n_non_finite = sum(1 for flag in non_finite if flag)
    bad = len(failed) + n_non_finite
    if bad and bad > max_fraction * total:
        also = f" and {n_non_finite} gave non-finite logits or maps (NaN/inf)" if n_non_finite else ""
        raise TooManyFailures(
            f"{len(failed)} of {total} samples failed{also}, more than runtime.max_error_fraction={max_fraction} "
            f"of the whole run (checked at its end, whatever the count); see {parts_dir}/errors-*.parquet. The rows "
            "are kept: to write the report anyway, run again with resume=true and a larger runtime.max_error_fraction"
        )


def flush_all(writers: list[PartWriter]) -> None:
    """Write the pending rows of every writer (a stop for too many failures keeps them too)."""
    for writer in writers:
        writer.flush()


def finish_writers(
    overlays: BackgroundWorker | None,
    parquet: BackgroundWorker,
    writers: list[PartWriter],
    before_flush: Callable[[], None] | None = None,
) -> None:
    """Let the background writers finish their queues, flush every part writer, stop the threads; raises
    :class:`~pipeline.reports.background.BackgroundWriteError` when one of them failed. ``before_flush`` runs
    on the parquet thread once the overlay thread is done (its failures into the errors parts)."""
    parquet.drain()  # every batch's rows are in the part writers and its overlays queued
    if overlays is not None:
        overlays.close()
    if before_flush is not None:
        parquet.submit(before_flush)
    parquet.submit(flush_all, writers)
    parquet.close()


def run_audit(cfg: DictConfig, run_dir: Path, on_accepted: Callable[[], None] | None = None) -> dict:
    """Run (or resume) a whole audit into ``run_dir``; returns the summary.

    ``on_accepted`` is called once the configuration is checked and the folder may be written to (the
    command line writes Hydra's record and opens the job log then); nothing before it writes to ``run_dir``
    except a probe file that is removed at once.

    Under ``torchrun`` every rank runs this on its shard (:mod:`pipeline.distributed`); rank 0 returns
    the summary of the whole run, the other ranks a line of their own counts.
    """
    settings = settings_from_config(cfg)  # built once: an unknown or ill-typed option stops here
    ranks = distributed.from_environment(settings.runtime.rank)
    distributed.start(ranks, settings.runtime.sync_timeout_minutes)
    try:
        return _run_audit(cfg, settings, run_dir, ranks, on_accepted)
    finally:
        distributed.stop(ranks)


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


def check_part_layout(parts: list[Path], schema: pa.Schema) -> None:
    """Refuse a resume whose samples parts were written with another table layout (another version of the
    tool, or other metadata columns): merging would cast their columns silently (:func:`layout_differences`)."""
    differing = layout_differences(parts, schema)
    if differing:
        shown = "; ".join(differing[:5]) + (f" (and {len(differing) - 5} more)" if len(differing) > 5 else "")
        raise ConfigError(
            "resume",
            f"the parts in {parts[0].parent} hold another table layout ({shown}), e.g. written by another version "
            "of cam-audit; resuming would mix the two. Finish that run with the version that started it, or "
            "start a new hydra.run.dir",
        )


def done_ids(parts_dir: Path) -> set[str]:
    """The samples a resume skips: those with a samples row, and those with an errors row at any stage but
    ``overlay`` (an overlay error's sample is scored: its samples row may be in a part a kill never wrote)."""
    errors = [read_part(path, ["id", "stage"]) for path in list_parts(parts_dir, "errors")]
    failed = {
        i
        for t in errors
        for i, stage in zip(t.column("id").to_pylist(), t.column("stage").to_pylist())
        if stage != "overlay"
    }
    return set(read_column(list_parts(parts_dir, "samples"), "id")) | failed


def drop_orphan_rows(parts_dir: Path, scored: set[str]) -> int:
    """Rewrite the maps parts and the errors parts' ``overlay`` rows without the rows of samples that have no
    samples row: the parts of one batch are flushed one table after the other, so a kill between two flushes
    leaves them; the samples are audited again and would get a second maps row, or a stale overlay error.
    Returns how many rows went."""
    dropped = 0
    for table_name in ("maps", "errors"):
        for path in list_parts(parts_dir, table_name):
            table = read_part(path)
            orphan = ~pc.is_in(table.column("id"), pa.array(sorted(scored), pa.string())).to_numpy(zero_copy_only=False)
            if table_name == "errors":
                orphan &= table.column("stage").to_numpy(zero_copy_only=False) == "overlay"
            if orphan.any():
                kept = table.filter(pa.array(~orphan))
                if kept.num_rows:
                    write_table_atomic(kept, path)
                else:
                    path.unlink()
                dropped += int(orphan.sum())
    return dropped


def complete_done_rows(
    setup: AuditSetup, run_dir: Path, cfg: DictConfig, error_writer: PartWriter, map_writer: PartWriter | None
) -> None:
    """Resume, before the loop: the samples already scored whose overlay (``report.overlays``) or maps row
    (``cam.save_maps``) is missing get it now, or an ``overlay`` errors row. A run stopped between a batch's
    samples part and its pictures (a full disk in the overlay thread: exit 4) left such rows, which the resume
    skipped: no picture and no error. Their maps are made again with the same model and configuration (the
    fingerprint guarantees it); the captions are the stored rows'. Orphan rows are dropped first
    (:func:`drop_orphan_rows`)."""
    parts_dir, overlay_dir = run_dir / "parts", run_dir / "overlays"
    settings = setup.settings
    mode = settings.report.overlays
    stored_parts = [read_part(path) for path in list_parts(parts_dir, "samples")]
    if not stored_parts:
        return
    stored = pa.concat_tables(stored_parts)  # one layout: checked by check_part_layout
    ids = stored.column("id").to_pylist()
    dropped = drop_orphan_rows(parts_dir, set(ids))
    missing_overlay: set[str] = set()
    if mode != "none":
        rows = overlay_rows(stored, mode, settings.report.triage)
        rows = rows[~stored.column("non_finite_output").to_numpy(zero_copy_only=False)[rows]]
        errors = read_column(list_parts(parts_dir, "errors"), "id")
        missing_overlay = {ids[i] for i in rows if not (overlay_dir / f"{safe_file_stem(ids[i])}.jpg").is_file()} - set(
            errors
        )
    missing_maps = set(ids) - set(read_column(list_parts(parts_dir, "maps"), "id")) if map_writer is not None else set()
    redo = [r for r in setup.records if r.sample_id in missing_overlay | missing_maps]
    if dropped or redo:
        logs.event(
            logger,
            "resume_completed",
            f"resume: {dropped} orphan rows dropped; {len(missing_overlay)} overlays and {len(missing_maps)} saved "
            "maps of samples already scored are made now",
            orphan_rows=dropped,
            overlays=len(missing_overlay),
            maps=len(missing_maps),
        )
    if not redo:
        return
    position = {sample_id: i for i, sample_id in enumerate(ids)}
    labels = torch.tensor([r.label for r in redo], dtype=torch.long)
    fit = BatchFit.from_option(settings.runtime.batch_size, setup.device)
    loader = DataLoader(
        AuditDataset(redo, setup.preprocess, max_boxes_option(cfg), setup.decode_on_device),
        batch_size=fit.size,
        collate_fn=collate_samples,
    )
    for batch in loader:
        if batch.encoded:
            batch = decode_batch_on_device(
                batch, setup.preprocess, setup.device, [redo[i].image_path for i in batch.index.tolist()]
            )
        unreadable = [redo[f.index] for f in batch.failures if redo[f.index].sample_id in missing_overlay]
        if unreadable:  # scored before, unreadable now: no picture, said in an errors row
            error_writer.add(
                report_schema.error_rows(
                    [
                        (
                            r,
                            "overlay",
                            "ImageUnreadable",
                            "overlay not written: the image could not be read again on resume",
                        )
                        for r in unreadable
                    ]
                )
            )
        if not len(batch):
            continue
        for piece, (_, maps, view) in audit_fitting(setup, batch, labels[batch.index], fit):
            piece_ids = [redo[i].sample_id for i in piece.index.tolist()]
            table = stored.take(pa.array([position[i] for i in piece_ids]))
            if map_writer is not None:
                needed = np.flatnonzero([i in missing_maps for i in piece_ids])
                rows = saved_maps.map_rows(table.column("id"), maps.signed_low_res, piece, setup.map_names)
                map_writer.add(rows.take(pa.array(needed)))
            draw = np.flatnonzero([i in missing_overlay for i in piece_ids])
            if draw.size:
                original = None
                if view.grid_size is not None:
                    original = (
                        view,
                        [redo[i].image_path for i in piece.index.tolist()],
                        setup.preprocess.boxes_refer_to,
                    )
                failures = save_overlays(
                    overlay_dir,
                    table,
                    piece,
                    maps,
                    original=original,
                    rows=draw,
                    triage_settings=settings.report.triage,
                )
                if failures:
                    error_writer.add(overlay_error_rows(failures, table))


def refuse_existing_run(run_dir: Path, resume: bool) -> list[Path]:
    """The parts already in ``run_dir``; a ConfigError when it holds a run and ``resume`` is off.

    Checked before anything is built or written, so that a refused start leaves the folder as it was.
    """
    parts_dir = run_dir / "parts"
    existing = list_parts(parts_dir, "samples") + list_parts(parts_dir, "errors")
    finished = [name for name in ("samples.parquet", "summary.json") if (run_dir / name).exists()]
    if (existing or finished) and not resume:
        held = f"{len(existing)} parts" if existing else ", ".join(finished)
        raise ConfigError(
            "resume",
            f"{run_dir} already holds a run ({held}); set resume=true to finish it, or choose a new hydra.run.dir",
        )
    return existing


def _run_audit(
    cfg: DictConfig,
    settings: Settings,
    run_dir: Path,
    ranks: distributed.Ranks,
    on_accepted: Callable[[], None] | None,
) -> dict:
    started, started_utc = time.perf_counter(), logs.utc_now_iso()
    folders = set(distributed.gather(ranks, str(run_dir)))
    if len(folders) > 1:  # every rank sees the same list, so all of them stop here
        raise ConfigError(
            "hydra.run.dir",
            f"the ranks resolved different run folders ({', '.join(sorted(folders))}); set "
            "hydra.run.dir explicitly so that every rank writes to the same folder",
        )
    lock, refusal = None, None
    if ranks.is_main:  # one lock for the whole run: rank 0 holds it, the other ranks learn whether it got it
        try:
            lock = acquire_lock(run_dir)
        except ConfigError as error:
            refusal = (error.option, str(error).split(": ", 1)[1])
    refusal = distributed.gather(ranks, refusal)[0]
    if refusal is not None:
        raise ConfigError(*refusal)
    try:
        return _audit_held_folder(cfg, settings, run_dir, ranks, started, on_accepted, started_utc)
    finally:
        if lock is not None:
            lock.release()


def _audit_held_folder(
    cfg: DictConfig,
    settings: Settings,
    run_dir: Path,
    ranks: distributed.Ranks,
    started: float,
    on_accepted: Callable[[], None] | None = None,
    started_utc: str | None = None,
) -> dict:
    """The run, once this run holds ``run_dir`` (see :mod:`pipeline.run_folder`)."""
    parts_dir = run_dir / "parts"
    existing = refuse_existing_run(run_dir, bool(cfg.resume))
    if not ranks.is_main:
        distributed.barrier(ranks)  # rank 0 builds the caches (built-in dataset, default model) first
    setup = prepare(cfg, run_dir, ranks, settings)
    if ranks.is_main:
        distributed.barrier(ranks)
    setup_seconds = time.perf_counter() - started  # data generation, training, model load: not the audit's time
    fingerprint = run_fingerprint(cfg, setup)
    samples_schema = report_schema.samples_schema(setup, settings)
    warn_shadowed_metadata(setup.metadata, samples_schema)
    if existing:  # a resume: the rows on disk must have been made with the same configuration and layout
        for warning in check_fingerprint(parts_dir, fingerprint, settings.runtime.resume_unchecked):
            print(f"cam-audit: warning: {warning}", file=sys.stderr)
    try:
        check_part_layout(list_parts(parts_dir, "samples"), samples_schema)
        done = done_ids(parts_dir)
    except DamagedPart as error:
        raise ConfigError("resume", str(error)) from error
    if on_accepted is not None:
        on_accepted()
    logs.event(
        logger,
        "configured",
        f"configuration resolved: {len(setup.records)} samples, model {setup.model.info.get('name', '?')}, "
        f"layer {setup.target_layer}, device {setup.device}",
        samples=len(setup.records),
        target_layer=setup.target_layer,
        device=str(setup.device),
        model=setup.model.info,
        resume=bool(cfg.resume),
    )
    distributed.barrier(ranks)  # every rank has read the run's state before any rank writes to it
    if ranks.is_main:
        if cfg.resume:
            remove_leftovers(run_dir)
        store_fingerprint(parts_dir, fingerprint)
    distributed.barrier(ranks)
    runtime, report = settings.runtime, settings.report
    rank, rows_per_part = ranks.rank, report.rows_per_part
    sample_writer = PartWriter(parts_dir, "samples", samples_schema, rank, rows_per_part)
    map_writer = (
        PartWriter(parts_dir, "maps", saved_maps.MAPS_SCHEMA, rank, rows_per_part) if settings.cam.save_maps else None
    )
    error_writer = PartWriter(parts_dir, "errors", report_schema.ERRORS_SCHEMA, rank, rows_per_part)
    writers = [w for w in (map_writer, sample_writer, error_writer) if w is not None]

    if cfg.resume and ranks.is_main and existing:
        complete_done_rows(setup, run_dir, cfg, error_writer, map_writer)
    todo = [r for r in distributed.shard(setup.records, ranks) if r.sample_id not in done]
    index_errors = [r for r in todo if r.problem]
    if index_errors:
        error_writer.add(
            report_schema.error_rows([(r, "index", r.problem.type, r.problem.message) for r in index_errors])
        )
    todo = [r for r in todo if not r.problem]
    if setup.faithfulness is not None:
        setup.faithfulness.bind(todo, setup.device)  # the batches' index -> the deletion / insertion sample
    todo_arrays = report_schema.record_arrays(todo, setup, samples_schema)
    labels_all = torch.tensor([r.label for r in todo], dtype=torch.long)

    overlay_mode = report.overlays
    if overlay_mode not in OVERLAY_MODES:
        raise ConfigError("report.overlays", f"unknown value {overlay_mode!r}; use one of {', '.join(OVERLAY_MODES)}")
    overlay_dir = run_dir / "overlays"
    fit = BatchFit.from_option(runtime.batch_size, setup.device)
    loader = DataLoader(
        AuditDataset(todo, setup.preprocess, max_boxes_option(cfg), setup.decode_on_device),
        batch_size=fit.size,
        shuffle=False,
        num_workers=runtime.num_workers,
        pin_memory=setup.device.type == "cuda",
        collate_fn=collate_samples,
        persistent_workers=False,
        worker_init_fn=ignore_sigterm,
    )
    n_failed, n_done = len(index_errors), 0
    max_fraction, min_seen = runtime.max_error_fraction, runtime.min_samples_for_error_check
    # a progress bar only on a terminal: in a captured log its carriage returns are noise (the job log has events)
    progress = tqdm(
        total=len(todo), unit="img", disable=not (runtime.progress and sys.stderr.isatty()), dynamic_ncols=True
    )
    log_every = runtime.log_every_batches
    # Parquet parts and overlay pictures are written by background threads: the loop goes on with the next
    # batch meanwhile. Every PartWriter is used from the parquet thread only; the parquet thread hands each
    # batch's overlays on to the overlay thread (never the other way: no cycle of waits). What the threads
    # find (non-finite images, overlays that could not be written) comes back through plain lists.
    pending = max(1, runtime.writer_queue)
    parquet = BackgroundWorker("parquet", pending)
    overlays = BackgroundWorker("overlays", pending) if overlay_mode != "none" else None
    non_finite_per_batch: list[int] = []  # appended on the parquet thread
    overlay_failures: list[pa.Table] = []  # appended on the overlay thread, written by the parquet thread

    def draw_overlays(table: pa.Table, batch: Batch, maps: UpsampledMaps, original, rows) -> None:
        """On the overlay thread: a picture that cannot be made is an errors row (its sample stays scored)."""
        failures = save_overlays(
            overlay_dir, table, batch, maps, original=original, rows=rows, triage_settings=report.triage
        )
        if failures:
            overlay_failures.append(overlay_error_rows(failures, table))

    def write_overlay_errors() -> None:
        """On the parquet thread: the overlay failures reported so far into the errors parts."""
        while overlay_failures:
            error_writer.add(overlay_failures.pop(0))

    def write_batch(host: HostColumns, batch: Batch, maps: UpsampledMaps, view: ScoringView) -> None:
        """On the parquet thread: the batch's rows into the parts, then its overlays to the overlay thread."""
        table = columns_to_table(host, batch, setup, todo_arrays, samples_schema)
        sample_writer.add(table)
        non_finite_per_batch.append(int(pc.sum(table.column("non_finite_output")).as_py() or 0))
        if map_writer is not None:
            map_writer.add(saved_maps.map_rows(table.column("id"), maps.signed_low_res, batch, setup.map_names))
        write_overlay_errors()
        if overlays is not None:
            original = None
            if view.grid_size is not None:  # draw on the whole photo: what the crop cut away is shown dimmed
                original = (
                    view,
                    [todo[i].image_path for i in batch.index.tolist()],
                    setup.preprocess.boxes_refer_to,
                )
            overlays.submit(
                draw_overlays,
                table,
                batch,
                maps,
                original,
                overlay_rows(table, overlay_mode, report.triage),
            )

    def finish() -> None:
        finish_writers(overlays, parquet, writers, write_overlay_errors)

    def too_many(seen: int) -> bool:
        return seen >= min_seen and n_failed + sum(non_finite_per_batch) > max_fraction * seen

    loop_started = time.perf_counter()
    try:
        for batch_number, batch in enumerate(loader, start=1):
            if overlays is not None:
                overlays.check()  # a failed overlay writer stops the run here, not on the parquet thread
            if batch.encoded:  # data.decode=gpu: this batch's JPEGs, decoded on the device (bad files leave it)
                batch = decode_batch_on_device(
                    batch, setup.preprocess, setup.device, [todo[i].image_path for i in batch.index.tolist()]
                )
            if batch.failures:
                parquet.submit(
                    error_writer.add,
                    report_schema.error_rows([(todo[f.index], f.stage, f.error_type, f.error) for f in batch.failures]),
                )
                n_failed += len(batch.failures)
            if len(batch):
                for piece, (columns, maps, view) in audit_fitting(setup, batch, labels_all[batch.index], fit):
                    parquet.submit(write_batch, start_host_copy(columns), piece, maps, view)
            n_done += len(batch) + len(batch.failures)
            progress.update(len(batch) + len(batch.failures))
            if log_every > 0 and batch_number % log_every == 0:
                seconds = time.perf_counter() - loop_started
                logs.event(
                    logger,
                    "progress",
                    f"{n_done} of {len(todo)} samples, {n_failed} failed, {n_done / seconds:.1f} samples/s",
                    done=n_done,
                    total=len(todo),
                    failed=n_failed,
                    samples_per_second=n_done / seconds,
                )
            seen = n_done + len(index_errors)
            if too_many(seen):  # non-finite images are counted as their batches are written (a few batches late)
                finish()
                raise TooManyFailures(
                    too_many_message(n_failed, sum(non_finite_per_batch), seen, max_fraction, parts_dir)
                )
        progress.close()
        finish()
        setup.engine.close()  # the model is left without the engine's hook
        seen = n_done + len(index_errors)
        if too_many(seen):  # the last batches' non-finite images, counted once their rows were written
            raise TooManyFailures(too_many_message(n_failed, sum(non_finite_per_batch), seen, max_fraction, parts_dir))
    except BackgroundWriteError as error:
        for worker in (parquet, overlays):
            if worker is not None:
                worker.close(check=False)
        if isinstance(error.error, OSError) and is_disk_full(error.error):
            raise error.error from error  # a full disk is its own stop (exit 4, resumable), whichever thread met it
        raise
    except BaseException:
        # Stopping for another reason (an interrupt, a failed batch): the writers' queued work still lands, so
        # that what was computed is kept, but their own errors must not hide the one that stops the run.
        for worker in (parquet, overlays):  # parquet first: it hands work on to the overlay thread
            if worker is not None:
                worker.close(check=False)
        raise
    elapsed = time.perf_counter() - loop_started
    per_rank = distributed.gather(ranks, (n_done, elapsed))  # also the barrier: every rank's parts are on disk
    if not ranks.is_main:
        print(f"rank {ranks.rank}/{ranks.world_size}: {n_done} images in {elapsed:.1f}s; rank 0 writes the report")
        logs.event(
            logger,
            "rank_done",
            f"rank {ranks.rank}/{ranks.world_size}: {n_done} images in {elapsed:.1f}s",
            rank=ranks.rank,
            images=n_done,
            seconds=elapsed,
        )
        return {"rank": ranks.rank, "images_scored_this_invocation": n_done, "seconds": elapsed}
    n_done, elapsed = sum(count for count, _ in per_rank), max(seconds for _, seconds in per_rank)
    check_failure_budget(parts_dir, max_fraction)
    origin = {
        "started_utc": started_utc,
        "tool_version": provenance.tool_version(),
        "git": provenance.git_revision(),
        "checkpoint": provenance.checkpoint_provenance(setup.model.info.get("checkpoint")),
        "dataset": provenance.dataset_fingerprint(setup.records),
    }
    sanity = run_sanity_check(setup, max_boxes_option(cfg))  # sanity.*: after the loop, on rank 0, before the report
    return finalize_run(
        run_dir,
        settings,
        resolved_config(cfg),
        setup,
        samples_schema,
        images_scored=n_done,
        loop_seconds=elapsed,
        total_seconds=time.perf_counter() - started,
        setup_seconds=setup_seconds,
        provenance=origin,
        sanity_check=sanity,
    )
