"""The per-batch compute: one batch of images in, its score columns out, all on the device.

Follow one batch through :func:`audit_batch`: the normalised input, one forward with the maps of the
chosen classes (:class:`~pipeline.maps.engine.CamEngine`), the prediction columns, the maps upsampled and
scored (every score of :mod:`pipeline.scores.registry`, each distinct map once), the coarse grids the
findings read (off-box energy, the map for strategy clustering), the faithfulness columns and the
MaxBoxAccV2 state. Nothing here touches the host or the disk: :mod:`pipeline.rows` turns the columns into
rows, :mod:`pipeline.sink` writes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch.profiler import record_function

from pipeline.data.batch import Batch
from pipeline.export import label_quality, probabilities
from pipeline.faithfulness.columns import audit_batch_columns
from pipeline.maps.engine import UpsampledMaps, upsample_and_normalise
from pipeline.maps.warp import original_grid_sizes
from pipeline.reports.shortcuts import GRID_COLUMN
from pipeline.reports.strategies import MAP_GRID_COLUMN, strategy_grid
from pipeline.scores import boxes_to_mask, score_map
from pipeline.scores.distinct import distinct_maps
from pipeline.scores.offbox import off_box_energy_grid
from pipeline.scores.space import ScoringView, coordinates_to_stored, scoring_view
from pipeline.setup import AuditSetup

logger = logging.getLogger("pipeline.compute")

# runtime.batch_size=auto starts here and halves on every out-of-memory error.
AUTO_BATCH_START = {"cuda": 256, "cpu": 32}
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
# Columns of audit_batch that describe the input, not the model's output: kept for a non-finite image.
INPUT_COLUMNS = ("n_boxes", "no_box_in_input")


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


def normalised_input(setup: AuditSetup, batch: Batch) -> torch.Tensor:
    """``batch.image`` ``[B, 3, S, S]`` uint8 -> the model's input ``[B, 3, S, S]`` float32 on the device,
    normalised with the model's mean and std (channels-last when ``setup.channels_last``)."""
    images = batch.image.to(setup.device, non_blocking=True).float() / 255.0
    images = (images - setup.input_mean) / setup.input_std
    return images.contiguous(memory_format=torch.channels_last) if setup.channels_last else images


def prediction_columns(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The prediction of each image from ``logits`` ``[B, C]`` and true ``labels`` ``[B]``: ``pred``,
    ``confidence`` (its softmax probability), ``prob_true``, ``correct`` (1 / 0), and FiftyOne brain's
    ``hardness`` (entropy of the softmax) and ``mistakenness`` to sort the rows by. Each ``[B]``."""
    probs = logits.softmax(dim=1)
    confidence, pred = probs.max(dim=1)
    hardness = label_quality.hardness(logits)
    return {
        "pred": pred,
        "confidence": confidence,
        "prob_true": probs.gather(1, labels[:, None])[:, 0],
        "correct": (pred == labels).float(),
        "hardness": hardness,
        "mistakenness": label_quality.mistakenness(hardness, pred == labels),
    }


def score_columns(
    setup: AuditSetup,
    views: dict[str, ScoringView],
    variants: dict[str, UpsampledMaps],
    targets: torch.Tensor,
    probs: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Every score of every map, ``<prefix><map>_<score>`` ``[B]``, for the positive maps (prefix ``""``) and
    with ``cam.negative`` the counterfactual ones (``neg_``); top-k maps also get their class and probability.
    ``targets`` ``[B, K]`` are the maps' classes, ``probs`` ``[B, C]`` the softmax."""
    settings = setup.settings.scores
    distinct, copy_of = distinct_maps(targets)
    columns: dict[str, torch.Tensor] = {}
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
                tolerance=settings.tolerance,
                taus=tuple(settings.taus),
                iou_threshold=settings.iou_threshold,
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
    return columns


def grid_columns(
    setup: AuditSetup, maps: UpsampledMaps, boxes: torch.Tensor, box_valid: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The predicted-class map on coarse grids of the network input, ``[B, grid * grid]`` each: its energy
    outside the boxes (the shortcut finder's hot spots, ``report.shortcuts.grid``) and the map itself (the
    strategy clustering, ``report.strategies.grid``); a grid of 0 leaves its column out."""
    columns = {}
    grid = setup.settings.report.shortcuts.grid
    if grid > 0:
        height, width = maps.normalised.shape[-2:]
        columns[GRID_COLUMN] = off_box_energy_grid(
            maps.normalised[:, 0], boxes_to_mask(boxes, box_valid, height, width), grid
        ).flatten(1)
    strategies = setup.settings.report.strategies
    if strategies.grid > 0:
        columns[MAP_GRID_COLUMN] = strategy_grid(maps.normalised[:, 0], boxes, box_valid, strategies)
    return columns


def audit_batch(
    setup: AuditSetup, batch: Batch, labels: torch.Tensor
) -> tuple[dict[str, torch.Tensor], UpsampledMaps, ScoringView]:
    """The hot path for one batch, all on the device (its options: ``setup.settings``).

    Args:
        batch: from :func:`~pipeline.data.dataset.collate_samples`; ``image`` ``[B, 3, S, S]`` uint8.
        labels: ``[B]`` long, true classes.
    Returns:
        columns: name -> ``[B]`` (or ``[B, T]``) tensor on the device: predictions, every score of every
            map, the grids, the faithfulness columns; NaN for an image whose outputs were not finite;
        maps: the :class:`~pipeline.maps.engine.UpsampledMaps` (``[B, K, S, S]``);
        view: the :class:`~pipeline.scores.space.ScoringView` the positive maps were scored on (for overlays).
    """
    images = normalised_input(setup, batch)
    input_boxes = batch.boxes.to(setup.device, non_blocking=True)
    labels = labels.to(setup.device, non_blocking=True)
    cam = setup.settings.cam

    def choose_targets(logits: torch.Tensor) -> torch.Tensor:  # [B, K]: pred, true, then top2..topK
        ranked = logits.topk(cam.top_k, dim=1).indices
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
    columns = prediction_columns(output.logits, labels)
    if setup.settings.report.save_probabilities:  # [B, C]: to probabilities.parquet (not a samples column)
        columns[probabilities.COLUMN] = probs
    columns["n_boxes"] = input_boxes.valid.sum(dim=1).float()
    columns["no_box_in_input"] = (~input_boxes.valid.any(dim=1)).float()
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
    columns.update(score_columns(setup, views, variants, targets, probs))
    columns.update(grid_columns(setup, maps, input_boxes.coords, input_boxes.valid))
    # faithfulness.*: average drop / increase in confidence (every image), deletion / insertion AUC (the sample)
    columns.update(audit_batch_columns(setup, images, maps, targets, probs, batch.index))
    if setup.maxboxacc is not None:  # [B, T]: stored per image so that a resumed run aggregates it exactly
        view = views[""]
        columns["true_maxboxacc_best_iou"] = setup.maxboxacc.best_iou_per_threshold(
            view.maps[:, 1], view.empty[:, 1], view.boxes, view.box_valid, view.domain
        ).float()
    return null_non_finite(columns, non_finite), maps, views[""]


def null_non_finite(columns: dict[str, torch.Tensor], non_finite: torch.Tensor) -> dict[str, torch.Tensor]:
    """NaN every prediction and score of the images flagged ``non_finite`` (``[B]`` bool) and add the flag as
    column ``non_finite_output``; :func:`pipeline.rows.columns_to_table` writes those NaNs as nulls."""
    out = {}
    for name, values in columns.items():
        if name in INPUT_COLUMNS:
            out[name] = values
        else:
            flag = non_finite.view(-1, *([1] * (values.dim() - 1)))
            out[name] = torch.where(flag, torch.full_like(values, float("nan"), dtype=torch.float32), values.float())
    out["non_finite_output"] = non_finite.float()
    return out
