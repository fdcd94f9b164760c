#!/usr/bin/env bash
# Train a model: `lightbrain train` with every argument passed through (recipe, options, overrides).
#   bash scripts/train_model.sh                                   # configs/tiny_cpu.yaml
#   bash scripts/train_model.sh -c configs/training_config.yaml train.batch_size=16
#   bash scripts/train_model.sh --resume --time-budget 30
# Several GPUs: torchrun --nproc_per_node=4 -m lightbrain train -c configs/training_config.yaml
# Run from anywhere; paths are relative to the repository root. See `lightbrain train --help`.
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$PY" -m lightbrain train "$@"
