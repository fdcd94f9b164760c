"""The `lightbrain` command: thin verbs over the library's functions.

Each verb lives in its own module here (`lightbrain.cli.<verb>`) with `configure(parser)` and
`run(args) -> exit code`; heavy imports happen inside `run`, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from lightbrain import __version__

# verb -> one-line help; the module lightbrain.cli.<verb> implements it
COMMANDS = {
    "prepare": "clean, split and tokenize medical text into token files",
    "train": "train a model from a YAML recipe",
    "eval": "loss, perplexity and bits per byte of a checkpoint (and medical benchmarks)",
    "generate": "generate text from a checkpoint (research use only)",
    "plot": "loss and learning-rate curves, attention heatmaps",
    "export": "export a checkpoint to a Hugging Face Transformers folder, or import one back",
    "finetune": "full or LoRA fine-tuning on instruction-style medical data",
    "serve": "OpenAI-compatible HTTP API and a web page (research use only)",
}


def add_config_args(parser: argparse.ArgumentParser, default_config: str | None = None) -> None:
    parser.add_argument("--config", "-c", action="append", default=None,
                        help="YAML recipe (repeatable; later files override earlier ones)"
                        + (f"; default {default_config}" if default_config else ""))
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="override a config value, e.g. train.learning_rate=3e-4")
    parser.set_defaults(_default_config=default_config)


def config_from_args(args: argparse.Namespace):
    from lightbrain.config import load_config

    paths = args.config or ([args._default_config] if args._default_config else [])
    return load_config(*paths, overrides=args.overrides)


def add_quantize_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quantize", choices=["none", "bf16", "int8"], default="none",
                        help="run a copy of the model with bf16 or int8 weights: faster CPU decoding at a small "
                             "cost in bits per byte (default none: the checkpoint's full precision)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightbrain", description="LightBrain: small GPT-style models for medical "
                                     "text. Research and education only; never medical advice.")
    parser.add_argument("--version", action="version", version=f"lightbrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for verb, help_text in COMMANDS.items():
        try:
            module = importlib.import_module(f"lightbrain.cli.{verb}")
        except ModuleNotFoundError as exc:
            if exc.name != f"lightbrain.cli.{verb}":
                raise
            continue  # verb not built yet in this checkout
        p = sub.add_parser(verb, help=help_text, description=help_text)
        module.configure(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from lightbrain.config import ConfigError

    parser = build_parser()
    # Overrides may come after options too (`train --resume train.max_iters=10`): argparse stops
    # collecting the positional list at the first option, so gather the stragglers here.
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if not ("=" in a and hasattr(args, "overrides"))]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except ConfigError as exc:
        print(f"lightbrain {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lightbrain {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as exc:
        # Errors are written for users: print the message, not a traceback (LIGHTBRAIN_DEBUG=1 shows it).
        if os.environ.get("LIGHTBRAIN_DEBUG") == "1":
            raise
        print(f"lightbrain {args.command}: error: {exc}", file=sys.stderr)
        return 1

if __name__ == "__main__":
    sys.exit(main())
