"""The command-line arguments that name a recipe, shared by the benchmarks that time one (train_step.py,
muon_step.py): a config, section.key=value overrides, and the vocabulary size where the recipe takes it
from prepared data that a benchmark on random tokens does not have (and the end-of-text id)."""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    parser.add_argument("-c", "--config", default=str(REPO / "configs" / "cpu_speedrun.yaml"))
    parser.add_argument("--vocab-size", type=int, default=8192, help="when the recipe takes it from the data")


def load_recipe(args: argparse.Namespace, overrides: list[str]):
    """The recipe's LightBrainConfig with these overrides and a vocabulary size filled in."""
    from lightbrain.config import load_config

    cfg = load_config(args.config, overrides=overrides)
    if cfg.model.vocab_size is None:
        cfg.model.vocab_size = args.vocab_size
    if cfg.model.eot_id is None:
        cfg.model.eot_id = 0  # the medical BPE's end-of-text id; random tokens hold it now and then
    return cfg
