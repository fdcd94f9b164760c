"""`lightbrain train`: train from a recipe; `--resume` continues the last checkpoint exactly."""

from __future__ import annotations

import argparse
import json

from lightbrain.cli import add_config_args, config_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, default_config="configs/tiny_cpu.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in train.out_dir")
    parser.add_argument("--data-dir", help="prepared token files (overrides train.data_dir; default data.out_dir)")
    parser.add_argument("--out-dir", help="where checkpoints go (overrides train.out_dir)")
    parser.add_argument("--max-iters", type=int, help="optimizer steps (overrides train.max_iters)")
    parser.add_argument("--time-budget", type=float, metavar="MINUTES",
                        help="stop after this much training time (overrides train.time_budget_minutes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs still written)")


def run(args: argparse.Namespace) -> int:
    from lightbrain.training.trainer import train

    config = config_from_args(args)
    if args.data_dir:
        config.train.data_dir = args.data_dir
    if args.out_dir:
        config.train.out_dir = args.out_dir
    if args.max_iters is not None:
        config.train.max_iters = args.max_iters
    if args.time_budget is not None:
        config.train.time_budget_minutes = args.time_budget
    config.validate()
    result = train(config, resume=args.resume, progress=not args.no_progress)
    summary = {k: v for k, v in vars(result).items() if k != "history"}
    print(json.dumps(summary, indent=2))
    return 0
