#!/usr/bin/env bash
# One-shot accelerator check (a benchmark, not a test): this project's SimCLR ResNet-50 1x step at
# 224 px in bf16 against the same step in PyTorch, in one run, plus the NumPy host pipeline's rate
# on real image files. Prints one table; --out=FILE keeps every number as JSON.
#   bash launch/gpu_check.sh [--batch_sizes=256,512] [--images=DIR] [--out=gpu_check.json]
# Uses the python3 on PATH (JAX with CUDA; PyTorch + torchvision for the PyTorch row).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m benchmarks.accelerator_check "$@"
