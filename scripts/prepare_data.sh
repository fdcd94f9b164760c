#!/usr/bin/env bash
# Clean, split and tokenize medical text: `lightbrain prepare` with every argument passed through.
#   bash scripts/prepare_data.sh                               # PubMedQA from the Hugging Face hub
#   bash scripts/prepare_data.sh --source ../shared/data       # local data
#   bash scripts/prepare_data.sh --source data/raw --tokenizer medical-bpe --vocab-size 8192
# Run from anywhere; paths are relative to the repository root. See `lightbrain prepare --help`.
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$PY" -m lightbrain prepare "$@"
