#!/usr/bin/env bash
# One-shot accelerator check (a benchmark, not a test): this project's SimCLR ResNet-50 1x step at
# 224 px in bf16 against the same step in PyTorch, in one run, the host pipeline's rate on real
# image files, and the real pretraining loop end to end (`medssl-jax throughput --end_to_end`) from
# the covid_cxr_multi images, as the original files and as records at a 256-px short side
# (`medssl-jax prepare-data --short_side=256`): loop pairs/s beside the step-only rate and the
# share of the loop's time spent waiting for input. Prints one table; --out=FILE keeps every number.
#   bash launch/gpu_check.sh [--batch_sizes=512] [--images=DIR] [--out=gpu_check.json]
#   bash launch/gpu_check.sh --part=e2e --e2e_dry_run    # prints the end-to-end commands only (any machine)
#   bash launch/gpu_check.sh --part=jax --methods=all    # every method's step beside SimCLR's (a few minutes more)
# Defaults sized for its 5-minute budget on one GPU: the step at batch 512 only (128 and 256 gave no
# gain, benchmarks/README.md), the end-to-end runs at batch 256, 40 steps from the files (input-bound)
# and 100 from the records, sharing one XLA cache. Later arguments override these defaults.
# Uses the python3 on PATH (JAX with CUDA; PyTorch + torchvision for the PyTorch row; grain).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m benchmarks.accelerator_check --batch_sizes=512 --end_to_end \
  --images=../shared/data/covid_cxr_multi --image_size=224 "$@"
