"""`lightbrain serve`: an OpenAI-compatible HTTP API and a web page for a checkpoint (research use only)."""

from __future__ import annotations

import argparse

from lightbrain.cli import add_quantize_arg

# ServeLimits field -> help; each becomes an option, e.g. --max-prompt-tokens
LIMITS_HELP = {
    "max_prompt_tokens": "longest prompt accepted, in tokens",
    "max_tokens": "most tokens one completion may ask for",
    "max_body_bytes": "largest request body, in bytes",
    "max_choices": "most completions (n x prompts) per request",
    "max_active": "requests generated at once",
    "max_queued": "requests waiting for a slot before the server answers 503",
}


def configure(parser: argparse.ArgumentParser) -> None:
    from lightbrain.inference.serve import ServeLimits

    defaults = ServeLimits()
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (.pt) to serve")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; the server has no authentication)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument("--model-name", default="lightbrain-tiny",
                        help="model id in /v1/models and in requests (default lightbrain-tiny)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    for key, text in LIMITS_HELP.items():
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=getattr(defaults, key),
                            help=f"{text} (default {getattr(defaults, key)})")
    add_quantize_arg(parser)
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def run(args: argparse.Namespace) -> int:
    import torch

    from lightbrain.inference.serve import ServeLimits, app_from_checkpoint, serve

    if args.threads:
        torch.set_num_threads(args.threads)
    limits = ServeLimits(**{key: getattr(args, key) for key in LIMITS_HELP})
    app = app_from_checkpoint(args.checkpoint, device=args.device, model_name=args.model_name, limits=limits,
                              quantize=args.quantize)
    serve(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
