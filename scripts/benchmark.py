"""Speed of the audit against plain inference, in one process, on the same model and batches.

    python scripts/benchmark.py [hydra overrides]      # e.g. runtime.device=cuda runtime.batch_size=128

Prints images/s for
  (a) forward-only inference (``torch.inference_mode``),
  (b) the audit's compute path: one forward, the maps of the predicted and the true class, every score,
  (c) the full audit: loading, decoding, compute, Parquet parts and overlays (``run_audit``'s loop),
and the ratios (b)/(a) and (c)/(a). (a) and (b) time the same in-memory batches, alternating rounds so
that machine noise hits both alike; the best round of each is reported.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.data.dataset import AuditDataset, collate_samples  # noqa: E402
from pipeline.run import audit_batch, prepare, run_audit  # noqa: E402


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=4, help="batches held in memory for (a) and (b)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds of (a) and (b)")
    parser.add_argument("--full-images", type=int, default=512, help="images in the full-audit run (c)")
    args, overrides = parser.parse_known_args()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with open_dict(cfg):
        cfg.runtime.progress = False
    with tempfile.TemporaryDirectory() as tmp:
        setup = prepare(cfg, Path(tmp) / "prepare")
        device = setup.device
        good = [r for r in setup.records if not r.problem]
        dataset = AuditDataset(good, setup.preprocess)
        size = int(cfg.runtime.batch_size)
        batches = [collate_samples([dataset[i] for i in range(b * size, (b + 1) * size)]) for b in range(args.batches)]
        labels = [torch.tensor([good[i].label for i in batch["index"].tolist()]) for batch in batches]
        mean, std = setup.input_mean, setup.input_std
        model = setup.engine.model
        autocast = setup.engine.autocast_dtype

        def forward_only() -> float:
            synchronise(device)
            start = time.perf_counter()
            with torch.inference_mode(), torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                for batch in batches:
                    images = (batch["image"].to(device, non_blocking=True).float() / 255 - mean) / std
                    model(images).float().softmax(1).max(1)
            synchronise(device)
            return time.perf_counter() - start

        def audit_compute() -> float:
            synchronise(device)
            start = time.perf_counter()
            for batch, label in zip(batches, labels):
                columns, _, _ = audit_batch(setup, cfg, batch, label)
            synchronise(device)
            return time.perf_counter() - start

        forward_only(), audit_compute()  # warm-up
        times_a, times_b = [], []
        for _ in range(args.rounds):
            times_a.append(forward_only())
            times_b.append(audit_compute())
        n = size * len(batches)
        rate_a, rate_b = n / min(times_a), n / min(times_b)

        with open_dict(cfg):
            cfg.data.limit = args.full_images
            cfg.resume = False
        summary = run_audit(cfg, Path(tmp) / "full")
        rate_c = summary["images_per_second"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\ndevice: {name}; model: {setup.model.info.get('name')}; method: {cfg.cam.method}; batch {size}; precision {cfg.runtime.precision}")
    print(f"(a) forward-only inference : {rate_a:9.1f} images/s")
    print(f"(b) audit compute path     : {rate_b:9.1f} images/s   (b)/(a) = {rate_b / rate_a:.2f}")
    print(f"(c) full audit (I/O incl.) : {rate_c:9.1f} images/s   (c)/(a) = {rate_c / rate_a:.2f}")


if __name__ == "__main__":
    main()
