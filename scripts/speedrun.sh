#!/usr/bin/env bash
# Reproduce a speedrun: prepare the data with the recipe's tokenizer, train for the recipe's time budget
# (15 minutes on a CPU), then score the whole validation split (loss, perplexity, bits per byte).
#   bash scripts/speedrun.sh                          # ../shared/data, configs/cpu_speedrun.yaml
#   SOURCE=/path/to/data bash scripts/speedrun.sh train.time_budget_minutes=5
#   CONFIG=configs/cpu_speedrun_slow.yaml bash scripts/speedrun.sh   # 192 wide, for slower CPUs
#   CONFIG=configs/cpu_speedrun_fp32.yaml bash scripts/speedrun.sh   # 128 wide, float32: CPUs without fast bf16
#   CONFIG=configs/gpu_speedrun.yaml bash scripts/speedrun.sh        # 512 wide with dropout: 90 s on one GPU
# Extra section.key=value arguments go to training. Results: {train_result,eval}.json in the
# recipe's train.log_dir (logs/speedrun/, logs/speedrun_slow/, logs/speedrun_fp32/ or logs/speedrun_gpu/).
set -euo pipefail
source "$(dirname "$0")/env.sh"
SOURCE=${SOURCE:-../shared/data}
CONFIG=${CONFIG:-configs/cpu_speedrun.yaml}
LOGS=$("$PY" -c "from lightbrain.config import load_config; print(load_config('$CONFIG').train.log_dir)")
mkdir -p "$LOGS"
"$PY" -m lightbrain prepare -c "$CONFIG" --source "$SOURCE"
"$PY" -m lightbrain train -c "$CONFIG" "$@" | tee "$LOGS/train_result.json"
CKPT=$("$PY" -c "import json; print(json.load(open('$LOGS/train_result.json'))['best_checkpoint'])")
"$PY" -m lightbrain eval --checkpoint "$CKPT" --batch-size 64 -o "$LOGS/eval.json"
