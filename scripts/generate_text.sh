#!/usr/bin/env bash
# Generate text from a checkpoint: `lightbrain generate` with every argument passed through.
# Research and education only: the output is not medical advice.
#   bash scripts/generate_text.sh -p "The patient presented with symptoms of fever and cough."
#   bash scripts/generate_text.sh --checkpoint models/lightbrain_tiny_v1.0.pt -p "..." -n 200 --top-p 0.9
# Run from anywhere; paths are relative to the repository root. See `lightbrain generate --help`.
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$PY" -m lightbrain generate "$@"
