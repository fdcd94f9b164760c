"""Run one speedrun experiment: train a recipe with overrides for a time budget, then score the whole
validation split. Appends one JSON line to runs/experiments.jsonl (the rows of docs/experiments.md).

    python bench/speedrun_experiment.py NAME --minutes 3 [-c configs/cpu_speedrun.yaml] [section.key=value ...]
    python bench/speedrun_experiment.py NAME --steps 2179 [section.key=value ...]

--steps trains for a fixed number of steps with no time budget, so the schedule (warmup, cosine, anneal,
short windows) follows the steps alone. Its score does not depend on how fast the machine runs that hour,
which a timed run's does: compare two options at the step counts a bench/train_step.py timing says each
would reach in the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("-c", "--config", default=str(REPO / "configs" / "cpu_speedrun.yaml"))
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--steps", type=int, default=None,
                        help="train for this many steps with no time budget (--minutes is then ignored)")
    parser.add_argument("--runs", default="runs/experiments")
    args = parser.parse_intermixed_args()
    if args.steps is not None and args.steps < 1:  # before the imports below, which take seconds
        parser.error(f"--steps must be at least 1, got {args.steps}")

    from lightbrain.config import load_config
    from lightbrain.data.token_files import open_split, read_meta
    from lightbrain.evaluation.language_modeling import evaluate_tokens, source_segments
    from lightbrain.training.checkpoint import load_model
    from lightbrain.training.trainer import train

    run = Path(args.runs) / args.name
    budget = ([f"train.max_iters={args.steps}", "train.time_budget_minutes=null"] if args.steps is not None
              else [f"train.time_budget_minutes={args.minutes}"])
    overrides = [f"train.out_dir={run}/models", f"train.log_dir={run}/logs", "train.progress=false",
                 *budget, *args.overrides]
    cfg = load_config(args.config, overrides=overrides)
    load_before = os.getloadavg()[0]
    wall = time.time()
    result = train(cfg)
    wall = time.time() - wall
    model, _, _ = load_model(result.best_checkpoint)
    data_dir = cfg.data_dir
    meta = read_meta(data_dir)
    ev = evaluate_tokens(model, open_split(data_dir, "validation").tokens, meta["splits"]["validation"]["bytes"],
                         batch_size=64, segments=source_segments(meta["splits"]["validation"]))
    row = {"name": args.name, "overrides": args.overrides, "config": Path(args.config).name,
           "budget": f"{args.steps} steps" if args.steps is not None else f"{args.minutes:g} minutes",
           "tokenizer": f"{meta['tokenizer']['name']} {meta['vocab_size']}", "params": model.get_num_params(),
           "iters": result.iter_num, "tokens_seen": result.tokens_seen, "train_seconds": round(result.train_seconds, 1),
           "wall_seconds": round(wall, 1), "val_loss": round(ev["loss"], 4), "val_bpb": round(ev["bits_per_byte"], 4),
           "val_ppl": round(ev["perplexity"], 2),
           "val_bpb_by_source": {k: round(v["bits_per_byte"], 4) for k, v in ev.get("by_source", {}).items()},
           "load_avg_before": round(load_before, 2),
           "load_avg_after": round(os.getloadavg()[0], 2)}
    Path(args.runs).mkdir(parents=True, exist_ok=True)
    with open(Path(args.runs) / "experiments.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
