"""`lightbrain generate`: continue a prompt with a trained checkpoint (research use only)."""

from __future__ import annotations

import argparse
import sys

from lightbrain.cli import add_quantize_arg


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="models/lightbrain_tiny_v1.0.pt", help="model checkpoint (.pt)")
    parser.add_argument("--prompt", "-p", action="append", help="prompt text (repeatable); default: read stdin")
    parser.add_argument("--max-new-tokens", "-n", type=int, default=100)
    parser.add_argument("--temperature", "-t", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=50, help="0 = no top-k filter")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass, e.g. 0.9")
    parser.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument("--no-stream", action="store_true", help="print each text when complete")
    add_quantize_arg(parser)


def run(args: argparse.Namespace) -> int:
    from lightbrain import DISCLAIMER
    from lightbrain.inference.generate import stream_text
    from lightbrain.inference.quantize import quantize_if_asked
    from lightbrain.training.checkpoint import load_model

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    prompts = args.prompt if args.prompt else [sys.stdin.read()]
    model, tokenizer, _ = load_model(args.checkpoint, args.device)
    model = quantize_if_asked(model, args.quantize)
    print(f"[{DISCLAIMER}]", file=sys.stderr)
    for i, prompt in enumerate(prompts):
        if i:
            print("\n" + "-" * 40)
        print(prompt, end="", flush=True)
        pieces = stream_text(model, tokenizer, prompt, args.max_new_tokens, args.temperature,
                             args.top_k or None, args.top_p, None if args.seed is None else args.seed + i)
        if args.no_stream:
            print("".join(pieces))
        else:
            for piece in pieces:
                print(piece, end="", flush=True)
            print()
    return 0
