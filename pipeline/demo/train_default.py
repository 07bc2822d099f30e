"""Train, evaluate and cache the built-in default model (AuditNet on the synthetic dataset).

The preprocessing here is the contract between training and the audit: :func:`preprocess_default` turns a
decoded ``[3, H, W]`` uint8 RGB image into the ``[3, 96, 96]`` float input of the network by resizing the
*whole* image (no crop, aspect ratio not kept) with antialiased bilinear interpolation, then scaling to
[0, 1] and normalising with :data:`DEFAULT_MEAN` / :data:`DEFAULT_STD`. Because nothing is cropped, a box
``(x1, y1, x2, y2)`` of the stored image maps to the input by scaling x by ``96 / W`` and y by ``96 / H``.

The checkpoint (``torch.load(path, weights_only=True)`` safe: tensors, dicts, lists, str, float, int) is::

    {"state_dict", "classes", "spec", "audit_accuracy", "mean", "std", "input_size", "width",
     "num_classes", "code_version", "settings", "metrics"}
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from pipeline import logs
from pipeline.atomic import atomic_path
from pipeline.data.records import read_class_file
from pipeline.data.voc import read_voc
from pipeline.demo.default_cnn import INPUT_SIZE, AuditNet
from pipeline.demo.synthetic import SyntheticSpec, ensure_synthetic

logger = logging.getLogger("pipeline.demo")

# Per-channel statistics of the synthetic images (RGB, in [0, 1] units), measured on the default spec's
# training split after resizing (0.469 0.472 0.469 / 0.189 0.189 0.189) and rounded; fixed constants so
# training and audit normalise identically.
DEFAULT_MEAN = (0.47, 0.47, 0.47)
DEFAULT_STD = (0.19, 0.19, 0.19)
# Bump when training code or preprocessing changes, so cached checkpoints are retrained.
CODE_VERSION = 1
DEFAULT_EPOCHS = 10
DEFAULT_WIDTH = 12


@dataclass(frozen=True)
class TrainSettings:
    """Training hyper-parameters; with the spec and CODE_VERSION they form the checkpoint's cache key.

    Tuned for the budget (generation + training under ~150 s on two CPU cores): small batches give more
    optimiser steps per second of CPU, and a one-cycle schedule (AdamW, ``warmup`` fraction of the steps
    rising from ``start_lr_fraction * lr`` to ``lr``, then annealing) converges within ten epochs.
    """

    epochs: int = DEFAULT_EPOCHS
    seed: int = 0
    width: int = DEFAULT_WIDTH
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    warmup: float = 0.15
    start_lr_fraction: float = 0.2


# ------------------------------------------------------------------------------------- preprocessing


def resize_default(image_uint8_chw: Tensor) -> Tensor:
    """Resize a ``[..., 3, H, W]`` uint8 image to ``[..., 3, 96, 96]`` uint8 (whole image, no crop).

    Bilinear with antialiasing, so downscaled large images do not alias (the marker's checkerboard
    would otherwise turn into moiré that depends on the image size).
    """
    return TF.resize(
        image_uint8_chw, [INPUT_SIZE, INPUT_SIZE], interpolation=InterpolationMode.BILINEAR, antialias=True
    )


def normalise_default(image_uint8_chw: Tensor) -> Tensor:
    """``[..., 3, h, w]`` uint8 -> float32 scaled to [0, 1] and normalised with DEFAULT_MEAN / DEFAULT_STD."""
    mean = torch.tensor(DEFAULT_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(DEFAULT_STD, dtype=torch.float32).view(3, 1, 1)
    return (image_uint8_chw.to(torch.float32) / 255.0 - mean) / std


def preprocess_default(image_uint8_chw: Tensor) -> Tensor:
    """Decoded ``[3, H, W]`` uint8 RGB image -> ``[3, 96, 96]`` float32 network input.

    Also accepts a batch ``[B, 3, H, W]`` of same-sized images. Identical in training and audit.
    """
    if image_uint8_chw.dtype != torch.uint8 or image_uint8_chw.shape[-3] != 3:
        raise ValueError(f"expected uint8 [3, H, W] RGB, got {image_uint8_chw.dtype} {tuple(image_uint8_chw.shape)}")
    return normalise_default(resize_default(image_uint8_chw))


# ------------------------------------------------------------------------------------------ data


@dataclass
class SplitTensors:
    """One split in memory.

    Attributes:
        images: ``[N, 3, 96, 96]`` uint8, already resized by :func:`resize_default` (normalised per batch).
        labels: ``[N]`` int64 class indices.
        marker: ``[N]`` bool, True where the image carries the marker (from metadata.csv).
        ids: sample ids in the same order.
    """

    images: Tensor
    labels: Tensor
    marker: Tensor
    ids: list[str]


def load_split(data_root: Path, split: str) -> SplitTensors:
    """Read a split of the synthetic dataset through the XML reader and decode it into memory."""
    classes = read_class_file(data_root / "classes.txt")
    records = read_voc(data_root / split / "images", data_root / split / "annotations", classes)
    bad = [r.sample_id for r in records if r.problem]
    if bad:
        raise ValueError(f"{len(bad)} unreadable samples in {data_root / split}, e.g. {bad[:3]}")
    with open(data_root / split / "metadata.csv", newline="", encoding="utf-8") as handle:
        marker_of = {row["id"]: row["marker_present"] == "1" for row in csv.DictReader(handle)}
    images = torch.empty((len(records), 3, INPUT_SIZE, INPUT_SIZE), dtype=torch.uint8)
    with warnings.catch_warnings():
        # torchvision 0.29 warns on every decode that its image I/O is deprecated (in favour of
        # TorchCodec); decode_image is still the agreed decoder, so one run would print thousands.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")
        for i, record in enumerate(records):
            images[i] = resize_default(decode_image(record.image_path, mode=ImageReadMode.RGB))
    labels = torch.tensor([r.label for r in records], dtype=torch.int64)
    marker = torch.tensor([marker_of[r.sample_id] for r in records], dtype=torch.bool)
    return SplitTensors(images, labels, marker, [r.sample_id for r in records])


# -------------------------------------------------------------------------------------- training


def _augment(batch: Tensor, generator: torch.Generator) -> Tensor:
    """Random horizontal flip of ``[B, 3, h, w]`` images (half of them, drawn from ``generator``)."""
    flip = torch.rand(batch.shape[0], generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)


def _train(model: AuditNet, data: SplitTensors, settings: TrainSettings) -> dict:
    """Train ``model`` in place with AdamW and a one-cycle schedule; returns last-epoch loss/accuracy."""
    generator = torch.Generator().manual_seed(settings.seed)
    steps_per_epoch = -(-len(data.labels) // settings.batch_size)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=settings.lr,
        total_steps=settings.epochs * steps_per_epoch,
        pct_start=settings.warmup,
        div_factor=1.0 / settings.start_lr_fraction,
    )
    stats = {"train_loss": float("nan"), "train_accuracy": float("nan")}
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(len(data.labels), generator=generator)
        loss_sum, correct = 0.0, 0
        start = time.perf_counter()
        for first in range(0, len(order), settings.batch_size):
            index = order[first : first + settings.batch_size]
            inputs = _augment(normalise_default(data.images[index]), generator)
            logits = model(inputs)
            loss = F.cross_entropy(logits, data.labels[index], label_smoothing=settings.label_smoothing)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            loss_sum += float(loss.detach()) * len(index)
            correct += int((logits.argmax(1) == data.labels[index]).sum())
        stats = {"train_loss": loss_sum / len(order), "train_accuracy": correct / len(order)}
        seconds = time.perf_counter() - start
        logs.event(
            logger,
            "training_progress",
            f"built-in model: epoch {epoch + 1}/{settings.epochs} loss {stats['train_loss']:.3f} "
            f"accuracy {stats['train_accuracy']:.3f} ({seconds:.1f} s)",
            epoch=epoch + 1,
            epochs=settings.epochs,
            loss=stats["train_loss"],
            accuracy=stats["train_accuracy"],
            seconds=round(seconds, 3),
        )
    return stats


@torch.inference_mode()
def predict(model: AuditNet, images_uint8: Tensor, batch_size: int = 256) -> Tensor:
    """``[N, 3, 96, 96]`` uint8 resized images -> ``[N]`` int64 predicted classes (eval mode)."""
    model.eval()
    parts = [
        model(normalise_default(images_uint8[i : i + batch_size])).argmax(1)
        for i in range(0, len(images_uint8), batch_size)
    ]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)


def _rate(mask: Tensor, hits: Tensor) -> float:
    """Fraction of ``hits`` among the True entries of ``mask`` (NaN when there are none)."""
    count = int(mask.sum())
    return float(hits[mask].sum()) / count if count else float("nan")


def audit_metrics(predicted: Tensor, data: SplitTensors, classes: list[str], marker_class: str) -> dict:
    """Accuracy overall and by group: marker class vs other classes, with vs without the marker.

    ``flip_to_marker_class_*`` is the fraction of other-class images predicted as the marker class: the
    shortcut's visible effect is that it is much higher with the marker than without.
    """
    correct = predicted == data.labels
    target = classes.index(marker_class)
    is_target = data.labels == target
    to_target = predicted == target
    metrics = {
        "audit_accuracy": _rate(torch.ones_like(correct), correct),
        "audit_accuracy_with_marker": _rate(data.marker, correct),
        "audit_accuracy_without_marker": _rate(~data.marker, correct),
        "audit_accuracy_marker_class_with_marker": _rate(is_target & data.marker, correct),
        "audit_accuracy_marker_class_without_marker": _rate(is_target & ~data.marker, correct),
        "audit_accuracy_other_classes_with_marker": _rate(~is_target & data.marker, correct),
        "audit_accuracy_other_classes_without_marker": _rate(~is_target & ~data.marker, correct),
        "flip_to_marker_class_with_marker": _rate(~is_target & data.marker, to_target),
        "flip_to_marker_class_without_marker": _rate(~is_target & ~data.marker, to_target),
        "audit_errors": int((~correct).sum()),
        "audit_size": int(len(correct)),
    }
    for index, name in enumerate(classes):
        metrics[f"audit_accuracy_class_{name}"] = _rate(data.labels == index, correct)
    return metrics


def _save_atomic(payload: dict, out_path: Path) -> None:
    """``torch.save`` into a temporary file beside ``out_path``, then rename it into place."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as temp:
        torch.save(payload, temp)


def train_default_model(
    data_root: Path,
    spec: SyntheticSpec,
    out_path: Path,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    width: int = DEFAULT_WIDTH,
) -> dict:
    """Train AuditNet on ``data_root``'s training split, evaluate on its audit split, save a checkpoint.

    Deterministic for a given seed on one machine (seeded init, shuffling and flips). Returns metrics:
    train loss/accuracy, audit accuracy overall and per marker group (see :func:`audit_metrics`), timings.
    """
    settings = TrainSettings(epochs=epochs, seed=seed, width=width)
    data_root, out_path = Path(data_root), Path(out_path)
    classes = list(read_class_file(data_root / "classes.txt").names)
    start = time.perf_counter()
    train = load_split(data_root, "train")
    audit = load_split(data_root, "audit")
    load_s = time.perf_counter() - start

    torch.manual_seed(seed)
    model = AuditNet(len(classes), width=width)
    start = time.perf_counter()
    metrics = _train(model, train, settings)
    train_s = time.perf_counter() - start

    start = time.perf_counter()
    metrics.update(audit_metrics(predict(model, audit.images), audit, classes, spec.marker_class))
    metrics.update({"load_s": load_s, "train_s": train_s, "eval_s": time.perf_counter() - start})
    payload = {
        "state_dict": model.state_dict(),
        "classes": classes,
        "spec": spec.as_dict(),
        "audit_accuracy": metrics["audit_accuracy"],
        "mean": list(DEFAULT_MEAN),
        "std": list(DEFAULT_STD),
        "input_size": INPUT_SIZE,
        "width": width,
        "num_classes": len(classes),
        "code_version": CODE_VERSION,
        "settings": asdict(settings),
        "metrics": metrics,
    }
    _save_atomic(payload, out_path)
    return metrics


def load_default_model(path: Path) -> tuple[AuditNet, dict]:
    """Load a checkpoint written by :func:`train_default_model` into an AuditNet in eval mode.

    Returns the model and the whole checkpoint dict (classes, mean, std, input_size, metrics, ...).
    """
    start = time.perf_counter()
    checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = AuditNet(int(checkpoint["num_classes"]), width=int(checkpoint["width"]))
    model.load_state_dict(checkpoint["state_dict"])
    seconds = time.perf_counter() - start
    logs.event(
        logger,
        "model_loaded",
        f"built-in model: {path} loaded in {seconds:.2f} s",
        path=str(path),
        seconds=round(seconds, 3),
    )
    return model.eval(), checkpoint


def default_model_key(spec: SyntheticSpec, settings: TrainSettings) -> str:
    """10-hex-digit cache key of a checkpoint: hash of spec, training settings, CODE_VERSION, mean and std."""
    key = {
        "spec": spec.as_dict(),
        "settings": asdict(settings),
        "code": CODE_VERSION,
        "mean": list(DEFAULT_MEAN),
        "std": list(DEFAULT_STD),
    }
    text = json.dumps(key, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def ensure_default_model(
    cache_dir: Path, spec: SyntheticSpec, epochs: int = DEFAULT_EPOCHS, seed: int = 0, width: int = DEFAULT_WIDTH
) -> Path:
    """Return ``cache_dir/default-cnn-<key>.pt``, generating the data and training the model if missing.

    The metrics of the training run are also written beside it as ``default-cnn-<key>.json``.
    """
    settings = TrainSettings(epochs=epochs, seed=seed, width=width)
    cache_dir = Path(cache_dir)
    out_path = cache_dir / f"default-cnn-{default_model_key(spec, settings)}.pt"
    if out_path.is_file():
        return out_path
    data_root = ensure_synthetic(cache_dir, spec)
    logs.event(
        logger,
        "model_training",
        f"built-in model: training AuditNet for {epochs} epochs into {out_path} (first use of this data.synthetic "
        "spec; cached afterwards)",
        epochs=epochs,
        path=str(out_path),
    )
    start = time.perf_counter()
    metrics = train_default_model(data_root, spec, out_path, epochs=epochs, seed=seed, width=width)
    out_path.with_suffix(".json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    seconds = time.perf_counter() - start
    logs.event(
        logger,
        "model_trained",
        f"built-in model: trained in {seconds:.1f} s (audit-split accuracy {metrics['audit_accuracy']:.3f})",
        epochs=epochs,
        seconds=round(seconds, 3),
        audit_accuracy=metrics["audit_accuracy"],
        path=str(out_path),
    )
    return out_path
