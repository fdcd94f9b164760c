"""`lightbrain plot`: training curves from a run's logs, or attention heatmaps of a checkpoint, as PNG.

  lightbrain plot loss --log-dir logs                 # -> logs/training_curves.png
  lightbrain plot attention --checkpoint models/lightbrain_tiny_v1.0.pt \\
      --prompt "The patient presented with fever and cough." --layer 0 -o logs/attention.png
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n", 1)[1]
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    loss = sub.add_parser("loss", help="train/validation loss and learning rate from metrics.jsonl")
    loss.add_argument("--log-dir", default="logs", help="the run's train.log_dir, or its metrics.jsonl (default logs)")
    loss.add_argument("--output", "-o", help="PNG to write (default: training_curves.png in the log folder)")
    loss.add_argument("--title", help="figure title")
    attn = sub.add_parser("attention", help="attention heatmaps per layer and head for a prompt")
    attn.add_argument("--checkpoint", default="models/lightbrain_tiny_v1.0.pt", help="model checkpoint (.pt)")
    attn.add_argument("--prompt", "-p", default="The patient presented with symptoms of fever and cough.",
                      help="text to look at (best around 10 to 30 tokens)")
    attn.add_argument("--layer", type=int, action="append", help="only this layer (repeatable; default all)")
    attn.add_argument("--head", type=int, action="append", help="only this head (repeatable; default all)")
    attn.add_argument("--output", "-o", default="logs/attention.png", help="PNG to write (default logs/attention.png)")
    attn.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    try:
        from lightbrain.visualization import plot_attention, plot_training_curves
    except ModuleNotFoundError as exc:
        if exc.name != "matplotlib":
            raise
        raise RuntimeError("lightbrain plot needs matplotlib: pip install 'lightbrain[viz]'") from None

    if args.what == "loss":
        path = plot_training_curves(args.log_dir, args.output, title=args.title)
    else:
        path = plot_attention(args.checkpoint, args.prompt, args.output, args.layer, args.head, args.device)
    print(f"wrote {path}")
    return 0
