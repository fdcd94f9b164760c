#!/usr/bin/env bash
# From a fresh clone to a trained LightBrain-Tiny model in one command: environment, data, training,
# evaluation, plots and sample text, then a list of where everything is.
#
#   bash scripts/quickstart.sh                          # PubMedQA from the Hugging Face hub
#   SOURCE=../shared/data bash scripts/quickstart.sh    # local data instead (same as --source ../shared/data)
#   MINUTES=3 bash scripts/quickstart.sh                # training time budget (default 12; 0 = the recipe's own)
#   CONFIG=configs/tiny_cpu.yaml bash scripts/quickstart.sh   # the recipe (default: configs/cpu_speedrun.yaml)
#   QUICK=1 bash scripts/quickstart.sh                  # smoke run: toy model, about a minute, in runs/quick/
#   bash scripts/quickstart.sh train.batch_size=8       # extra section.key=value overrides go to training
#
# Options (each also an environment variable): --source PATH|hub (SOURCE), --config FILE (CONFIG),
# --minutes N (MINUTES), --eval-tokens N (EVAL_TOKENS: validation tokens scored; default 0 = the whole split),
# --quick (QUICK=1), --out DIR (OUT: where data/, models/ and logs/ go; default
# the repository root, runs/quick with --quick), --no-setup (SETUP=0: use the existing environment).
# A GPU is used when present (train.device=auto). On 2 CPU cores the default run takes about 12-15 minutes.
set -euo pipefail
ORIG_PWD=$PWD
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")/.."

SOURCE=${SOURCE:-hub}
QUICK=${QUICK:-0}
SETUP=${SETUP:-1}
OVERRIDES=()
usage() { sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --source) SOURCE=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --minutes) MINUTES=$2; shift 2 ;;
    --eval-tokens) EVAL_TOKENS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --no-setup) SETUP=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *=*) OVERRIDES+=("$1"); shift ;;
    *) echo "quickstart: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$QUICK" = 1 ]; then
  CONFIG=${CONFIG:-configs/test_tiny.yaml}
  MINUTES=${MINUTES:-1}
  OUT=${OUT:-$PWD/runs/quick}
  NEW_TOKENS=${NEW_TOKENS:-30}
  EVAL_TOKENS=${EVAL_TOKENS:-8192}
else
  CONFIG=${CONFIG:-configs/cpu_speedrun.yaml}  # the best CPU recipe measured (docs/experiments.md)
  MINUTES=${MINUTES:-12}
  OUT=${OUT:-$PWD}
  NEW_TOKENS=${NEW_TOKENS:-100}
  EVAL_TOKENS=${EVAL_TOKENS:-0}  # the whole split: a prefix is one source only, not comparable
fi

# Paths given by the user are relative to where they ran the script; recipes may also be named
# relative to the repository (configs/...).
from_caller() { case "$1" in /*) echo "$1" ;; *) echo "$ORIG_PWD/$1" ;; esac; }
if [ "$SOURCE" != hub ]; then SOURCE=$(from_caller "$SOURCE"); fi
if [ -f "$(from_caller "$CONFIG")" ]; then CONFIG=$(from_caller "$CONFIG"); fi
OUT=$(from_caller "$OUT")
DATA_DIR=$OUT/data/processed
MODELS=$OUT/models
LOGS=$OUT/logs
PROMPT_1="The patient presented with symptoms of fever and cough."
PROMPT_2="In a study on cardiovascular disease,"
START=$SECONDS

step() { echo; echo "==> [$1/7] $2"; }
fail() { echo >&2; echo "quickstart: $1" >&2; exit "${2:-1}"; }

step 1 "Environment"
if [ "$SETUP" = 1 ]; then
  bash scripts/setup_env.sh || fail "creating the environment failed (see above); scripts/setup_env.sh explains its options"
fi
source scripts/env.sh
# one interpreter start for what the steps below need: device, versions, the disclaimer
INFO=$("$PY" -c "import lightbrain, torch
print('cuda' if torch.cuda.is_available() else 'cpu')
print('lightbrain', lightbrain.__version__, 'torch', torch.__version__)
print(lightbrain.DISCLAIMER)" 2>/dev/null) \
  || fail "no Python environment with lightbrain installed; run without --no-setup (or: bash scripts/setup_env.sh)"
{ read -r DEVICE; read -r VERSIONS; read -r DISCLAIMER; } <<< "$INFO"
QUIET=()
if [ ! -t 2 ]; then  # no progress bars when the output goes to a file or a pipe
  export TQDM_DISABLE=1
  QUIET=(--quiet)
fi
echo "python: $PY ($VERSIONS)"
echo "device: $DEVICE; recipe: $CONFIG; data: $SOURCE; outputs under: $OUT"
"$PY" create_project_structure.py --root "$OUT" --quiet

step 2 "Data: clean, split and tokenize ($SOURCE)"
# the recipe's data section picks the tokenizer (the speedrun recipe's medical BPE, for one)
if ! "$PY" -m lightbrain prepare -c "$CONFIG" --source "$SOURCE" --out "$DATA_DIR" ${QUIET[@]+"${QUIET[@]}"}; then
  if [ "$SOURCE" = hub ]; then
    fail "the data could not be prepared from the Hugging Face hub (see the error above).
No network, or the hub is blocked? Run the quickstart on a local copy of the data instead:
  SOURCE=/path/to/data bash scripts/quickstart.sh        (or: bash scripts/quickstart.sh --source /path/to/data)
for example SOURCE=../shared/data, a folder holding pubmedqa/ori_pqal.json, medquad/ and/or mts_dialog/
(any folder of .txt/.jsonl/.csv/.parquet files works too; see docs/data.md)."
  fi
  fail "the data in $SOURCE could not be prepared (see the error above). Point SOURCE (or --source) at a folder
with pubmedqa/ori_pqal.json, medquad/ and/or mts_dialog/, or at .txt/.jsonl/.csv/.parquet files, or use SOURCE=hub."
fi

step 3 "Training ($CONFIG, $( [ "$MINUTES" = 0 ] && echo "the recipe's time budget" || echo "$MINUTES min budget"))"
TRAIN_ARGS=(-c "$CONFIG" --data-dir "$DATA_DIR" --out-dir "$MODELS" "train.log_dir=$LOGS")
if [ "$MINUTES" != 0 ]; then TRAIN_ARGS+=(--time-budget "$MINUTES"); fi
"$PY" -m lightbrain train "${TRAIN_ARGS[@]}" ${OVERRIDES[@]+"${OVERRIDES[@]}"} > "$LOGS/train_result.json" \
  || fail "training failed (see above; the log is $LOGS/training.log and docs/training.md has a troubleshooting section)"
cat "$LOGS/train_result.json"
CKPT=$(sed -n 's/^ *"best_checkpoint": "\(.*\)",\{0,1\}$/\1/p' "$LOGS/train_result.json")
[ -f "$CKPT" ] || fail "training ended without a checkpoint at $CKPT (did it stop before the first step?)"

if [ "$EVAL_TOKENS" = 0 ]; then
  step 4 "Evaluation on the whole validation split"
  EVAL_ARGS=()
else
  step 4 "Evaluation on the first $EVAL_TOKENS validation tokens (EVAL_TOKENS=0 scores them all)"
  EVAL_ARGS=(--max-tokens "$EVAL_TOKENS")
fi
"$PY" -m lightbrain eval --checkpoint "$CKPT" --data-dir "$DATA_DIR" --device "$DEVICE" -o "$LOGS/eval.json" \
  ${EVAL_ARGS[@]+"${EVAL_ARGS[@]}"} || fail "evaluation failed (see above)"

step 5 "Plots"
"$PY" -m lightbrain plot loss --log-dir "$LOGS" -o "$LOGS/training_curves.png" || fail "plotting the curves failed"
"$PY" -m lightbrain plot attention --checkpoint "$CKPT" -p "$PROMPT_1" -o "$LOGS/attention.png" \
  || fail "plotting attention failed"

step 6 "Generation (research use only; not medical advice)"
{
  echo "# $DISCLAIMER"
  "$PY" -m lightbrain generate --checkpoint "$CKPT" -p "$PROMPT_1" -p "$PROMPT_2" -n "$NEW_TOKENS" \
    --seed 1337 --device "$DEVICE" --no-stream 2> "$LOGS/generate.err"
} > "$LOGS/samples.txt" || { cat "$LOGS/generate.err" >&2; fail "generation failed (see above)"; }
rm -f "$LOGS/generate.err"
cat "$LOGS/samples.txt"

step 7 "Done in $(( (SECONDS - START) / 60 ))m $(( (SECONDS - START) % 60 ))s"
cat <<EOF
Everything this run made:
  prepared data     $DATA_DIR/ (train.bin, validation.bin, meta.json)
  best checkpoint   $CKPT
  resumable state   ${CKPT%.pt}.last.pt
  model card        $(dirname "$CKPT")/MODEL_CARD.md
  training summary  $LOGS/train_result.json
  metrics (JSONL)   $LOGS/metrics.jsonl   (TensorBoard: $LOGS/tensorboard, text log: $LOGS/training.log)
  evaluation        $LOGS/eval.json
  loss curves       $LOGS/training_curves.png
  attention maps    $LOGS/attention.png
  sample text       $LOGS/samples.txt

Next:
  $PY -m lightbrain generate --checkpoint $CKPT -p "Your prompt"
  $PY -m lightbrain train -c $CONFIG --data-dir $DATA_DIR --out-dir $MODELS train.log_dir=$LOGS --resume --time-budget 10
  tensorboard --logdir $LOGS/tensorboard
EOF
echo
echo "$DISCLAIMER"
