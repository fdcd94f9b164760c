"""`lightbrain eval`: loss, perplexity and bits per byte of a checkpoint on the whole validation split
(or any UTF-8 text file), as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="models/lightbrain_tiny_v1.0.pt", help="model checkpoint (.pt)")
    parser.add_argument("--data-dir", default=None,
                        help="prepared token files (default: the train.data_dir stored in the checkpoint)")
    parser.add_argument("--split", default="validation", help="which split to score (validation or train)")
    parser.add_argument("--text-file", help="score this UTF-8 text file instead of a split")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", "-o", help="also write the JSON result to this file")


def run(args: argparse.Namespace) -> int:
    from lightbrain.evaluation.language_modeling import evaluate_text_file, evaluate_tokens
    from lightbrain.training.checkpoint import load_model

    model, tokenizer, ckpt = load_model(args.checkpoint, args.device)
    result: dict = {"checkpoint": str(args.checkpoint), "tokenizer": tokenizer.name,
                    "parameters": model.get_num_params()}
    if args.text_file:
        result["text_file"] = str(args.text_file)
        result.update(evaluate_text_file(model, tokenizer, args.text_file, batch_size=args.batch_size, progress=True))
    else:
        from lightbrain.data.token_files import open_split, read_meta

        data_dir = args.data_dir or ckpt["config"]["train"]["data_dir"]
        meta = read_meta(data_dir)
        if meta.get("tokenizer_fingerprint") and meta["tokenizer_fingerprint"] != tokenizer.fingerprint():
            raise ValueError(f"{data_dir} was tokenized with a different tokenizer than {args.checkpoint}'s; "
                             "point --data-dir at the data the model was trained on, or use --text-file")
        split = open_split(data_dir, args.split)
        result.update({"data_dir": str(data_dir), "split": args.split})
        result.update(evaluate_tokens(model, split.tokens, meta["splits"][args.split]["bytes"],
                                      batch_size=args.batch_size, progress=True))
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        from lightbrain.atomic_io import atomic_write_text

        atomic_write_text(Path(args.output), text + "\n")
    return 0
