# Sourced by the scripts in this folder: move to the repository root and find the project's Python.
# Sets PY (PYTHON_BIN, else $VENV/bin/python from scripts/setup_env.sh, else python3) and points tiktoken
# at the GPT-2 files setup_env.sh seeded in .cache/tiktoken, so GPT-2 tokenization works offline.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON_BIN:-${VENV:-.venv}/bin/python}
if [ ! -x "$PY" ]; then PY=$(command -v python3 || echo python3); fi
if [ -z "${TIKTOKEN_CACHE_DIR:-}" ] && [ -n "$(ls -A .cache/tiktoken 2>/dev/null)" ]; then
  export TIKTOKEN_CACHE_DIR=$PWD/.cache/tiktoken
fi
