"""Tests of the default model: architecture shapes, preprocessing, checkpoint round trip, cache reuse."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.demo import train_default
from pipeline.demo.default_cnn import AuditNet
from pipeline.demo.synthetic import SyntheticSpec, generate_synthetic
from pipeline.demo.train_default import (
    DEFAULT_MEAN,
    DEFAULT_STD,
    ensure_default_model,
    load_default_model,
    load_split,
    predict,
    preprocess_default,
    train_default_model,
)

TINY = SyntheticSpec(n_train=48, n_audit=32)


def test_feature_map_is_12x12_and_logits_match_classes() -> None:
    model = AuditNet(num_classes=8, width=12).eval()
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        features = model.features(images)
        logits = model(images)
    assert features.shape == (2, model.feature_channels, 12, 12)
    assert logits.shape == (2, 8)
    assert isinstance(model.pool, torch.nn.AdaptiveAvgPool2d)
    last = model.features[-1]
    assert isinstance(last, torch.nn.ReLU) and not last.inplace
    # The head is exactly pool -> flatten -> classifier on the features (what Grad-CAM assumes).
    with torch.no_grad():
        assert torch.allclose(model.classifier(model.flatten(model.pool(features))), logits)


def test_cost_is_small() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    model = AuditNet(num_classes=8)
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 96, 96))
    assert 20e6 <= counter.get_total_flops() / 2 <= 40e6  # multiply-adds per image


def test_preprocess_default_resizes_whole_image_and_normalises() -> None:
    image = torch.randint(0, 256, (3, 150, 110), dtype=torch.uint8)
    out = preprocess_default(image)
    assert out.shape == (3, 96, 96) and out.dtype == torch.float32
    flat = torch.full((3, 120, 170), 128, dtype=torch.uint8)
    expected = (128 / 255 - torch.tensor(DEFAULT_MEAN)) / torch.tensor(DEFAULT_STD)
    assert torch.allclose(preprocess_default(flat)[:, 50, 50], expected, atol=1e-6)
    batch = torch.stack([image, image.flip(-1)])
    assert torch.equal(preprocess_default(batch)[0], out)
    with pytest.raises(ValueError):
        preprocess_default(image.float())


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("default") / "data", TINY)


def test_checkpoint_round_trip(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    metrics = train_default_model(data_root, TINY, out, epochs=1, seed=0, width=4)
    assert 0.0 <= metrics["audit_accuracy"] <= 1.0 and metrics["audit_size"] == TINY.n_audit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file left

    checkpoint = torch.load(out, map_location="cpu", weights_only=True)
    assert checkpoint["classes"] == list(TINY.class_names)
    assert checkpoint["spec"] == TINY.as_dict()
    assert checkpoint["input_size"] == 96
    assert checkpoint["mean"] == list(DEFAULT_MEAN) and checkpoint["std"] == list(DEFAULT_STD)
    fresh = AuditNet(len(checkpoint["classes"]), width=checkpoint["width"])
    fresh.load_state_dict(checkpoint["state_dict"])
    fresh.eval()

    loaded, _ = load_default_model(out)
    images = torch.stack(
        [preprocess_default(torch.randint(0, 256, (3, 120, 100), dtype=torch.uint8)) for _ in range(3)]
    )
    with torch.no_grad():
        assert torch.equal(fresh(images), loaded(images))
    # The loaded weights reproduce the audit accuracy recorded at training time.
    audit = load_split(data_root, "audit")
    accuracy = (predict(fresh, audit.images) == audit.labels).float().mean().item()
    assert accuracy == pytest.approx(checkpoint["audit_accuracy"], abs=1e-9)


def test_training_is_deterministic(data_root: Path, tmp_path: Path) -> None:
    first = train_default_model(data_root, TINY, tmp_path / "a.pt", epochs=1, seed=3, width=4)
    second = train_default_model(data_root, TINY, tmp_path / "b.pt", epochs=1, seed=3, width=4)
    a = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert first["audit_accuracy"] == second["audit_accuracy"]


def test_ensure_default_model_reuses_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = train_default.train_default_model

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_default, "train_default_model", counting)
    spec = SyntheticSpec(n_train=24, n_audit=16)
    path = ensure_default_model(tmp_path, spec, epochs=1, width=4)
    assert path.is_file() and path.with_suffix(".json").is_file() and len(calls) == 1
    stamp = path.stat().st_mtime_ns
    assert ensure_default_model(tmp_path, spec, epochs=1, width=4) == path
    assert len(calls) == 1 and path.stat().st_mtime_ns == stamp
    # Different training settings are a different cache entry.
    other = ensure_default_model(tmp_path, spec, epochs=2, width=4)
    assert other != path and len(calls) == 2


def test_input_normalisation_is_local() -> None:
    """A change at one pixel moves LocalContrastNorm outputs only within +-8 px (two 9x9 windows)."""
    norm = AuditNet(num_classes=2).features[0]
    image = torch.randn(1, 3, 96, 96)
    changed = image.clone()
    changed[0, :, 50, 50] += 5.0
    moved = (norm(changed) - norm(image)).abs().amax(dim=1)[0] > 1e-6
    rows, cols = torch.nonzero(moved, as_tuple=True)
    assert moved[50, 50]
    assert rows.min() >= 42 and rows.max() <= 58 and cols.min() >= 42 and cols.max() <= 58
