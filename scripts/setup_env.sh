#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install LightBrain with its extras.
#   bash scripts/setup_env.sh            # everything: hub datasets, export, LoRA, plots, serving, tests
#   EXTRAS=hf,viz bash scripts/setup_env.sh
#   TORCH_SPEC="torch==2.13.0" PYTHON=python3.11 bash scripts/setup_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first and pinned, so the resolver never swaps in a different (multi-GB) build
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
"$VENV/bin/python" -m pip install -q -e ".[${EXTRAS}]"

# tiktoken downloads GPT-2's BPE files on first use; offline, seed its cache from a local copy.
GPT2_DIR=${GPT2_DIR:-../shared/data/gpt2}
if [ -f "$GPT2_DIR/seed_tiktoken_cache.sh" ]; then
  sh "$GPT2_DIR/seed_tiktoken_cache.sh" .cache/tiktoken >/dev/null
  echo "seeded tiktoken's GPT-2 files into .cache/tiktoken (export TIKTOKEN_CACHE_DIR=$PWD/.cache/tiktoken)"
fi
echo "environment ready: source $VENV/bin/activate"
