#!/usr/bin/env bash
# Set up the environment if needed, then run the test suite. Extra arguments go to pytest.
#   bash scripts/run_tests.sh            # everything
#   bash scripts/run_tests.sh -k model   # a subset
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
if [ -d .cache/tiktoken ]; then export TIKTOKEN_CACHE_DIR=${TIKTOKEN_CACHE_DIR:-$PWD/.cache/tiktoken}; fi
exec .venv/bin/python -m pytest "$@"
