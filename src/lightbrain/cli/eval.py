"""`lightbrain eval`: loss, perplexity and bits per byte of a checkpoint on the whole validation split
(or any UTF-8 text file), plus medical benchmarks (`--task pubmedqa`, `--task rouge`), as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lightbrain.cli import add_quantize_arg

TASKS = ("lm", "pubmedqa", "rouge")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="models/lightbrain_tiny_v1.0.pt", help="model checkpoint (.pt)")
    parser.add_argument("--task", action="append", choices=TASKS,
                        help="lm (loss/perplexity/bpb, always run), pubmedqa (yes/no/maybe accuracy on the official "
                             "500 test items), rouge (ROUGE of generated conclusions); repeatable")
    parser.add_argument("--data-dir", default=None,
                        help="prepared token files (default: the data the checkpoint was trained on)")
    parser.add_argument("--split", default="validation", help="which split to score (validation or train)")
    parser.add_argument("--text-file", help="score this UTF-8 text file instead of a split")
    parser.add_argument("--pubmedqa", metavar="DIR", help="local PubMedQA folder with ori_pqal.json and "
                        "test_ground_truth.json (e.g. ../shared/data/pubmedqa)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N PubMedQA items")
    parser.add_argument("--max-tokens", type=int, default=None, metavar="N",
                        help="score only the split's first N tokens, a quicker estimate (default: the whole split)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps")
    add_quantize_arg(parser)
    parser.add_argument("--output", "-o", help="also write the JSON result to this file")
    parser.add_argument("--markdown", help="also write a short markdown table of the results to this file")


def _lm_metrics(args, model, tokenizer, ckpt) -> dict:
    from lightbrain.data.token_files import open_split, read_meta
    from lightbrain.evaluation.language_modeling import evaluate_text_file, evaluate_tokens, source_segments

    if args.text_file:
        return {"text_file": str(args.text_file),
                **evaluate_text_file(model, tokenizer, args.text_file, batch_size=args.batch_size, progress=True)}
    saved = ckpt["config"]
    data_dir = args.data_dir or saved["train"].get("data_dir") or saved.get("data", {}).get("out_dir", "data/processed")
    meta = read_meta(data_dir)
    if meta.get("tokenizer_fingerprint") and meta["tokenizer_fingerprint"] != tokenizer.fingerprint():
        raise ValueError(f"{data_dir} was tokenized with a different tokenizer than {args.checkpoint}'s; "
                         "point --data-dir at the data the model was trained on, or use --text-file")
    split = open_split(data_dir, args.split)
    tokens, num_bytes = split.tokens, meta["splits"][args.split]["bytes"]
    segments = source_segments(meta["splits"][args.split])  # bits per byte of each source, beside the total
    if args.max_tokens and args.max_tokens < len(tokens):
        # bits per byte needs the bytes those tokens spell, end-of-text markers excluded as in meta.json
        tokens = tokens[:args.max_tokens]
        num_bytes = len(tokenizer.decode_bytes(int(t) for t in tokens if t != tokenizer.eot_id))
        segments = None
    return {"data_dir": str(data_dir), "split": args.split,
            **evaluate_tokens(model, tokens, num_bytes, batch_size=args.batch_size, progress=True, segments=segments)}


def run(args: argparse.Namespace) -> int:
    from lightbrain.inference.quantize import quantize_if_asked
    from lightbrain.training.checkpoint import load_model

    tasks = args.task or ["lm"]
    model, tokenizer, ckpt = load_model(args.checkpoint, args.device)
    result: dict = {"checkpoint": str(args.checkpoint), "tokenizer": tokenizer.name,
                    "parameters": model.get_num_params(), "quantize": args.quantize}
    model = quantize_if_asked(model, args.quantize)
    # Bits per byte goes into every evaluation, so models with different tokenizers compare fairly.
    result.update(_lm_metrics(args, model, tokenizer, ckpt))
    benchmarks = []
    if "pubmedqa" in tasks or "rouge" in tasks:
        from lightbrain.evaluation import medical_tasks

        if not args.pubmedqa:
            raise ValueError("--task pubmedqa/rouge needs --pubmedqa DIR, a local PubMedQA folder with ori_pqal.json "
                             "and test_ground_truth.json (e.g. ../shared/data/pubmedqa)")
        items = medical_tasks.load_pubmedqa_test_items(args.pubmedqa)
        if args.limit:
            items = items[:args.limit]
        if "pubmedqa" in tasks:
            r = medical_tasks.evaluate_pubmedqa(model, tokenizer, items, batch_size=args.batch_size, keep_predictions=False)
            benchmarks.append(r)
            result["pubmedqa"] = r
        if "rouge" in tasks:
            r = medical_tasks.evaluate_long_answer_rouge(model, tokenizer, items, batch_size=args.batch_size,
                                                         keep_examples=False)
            benchmarks.append(r)
            result["rouge"] = r
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        from lightbrain.atomic_io import atomic_write_text

        atomic_write_text(Path(args.output), text + "\n")
    if args.markdown:
        if not benchmarks:
            print("lightbrain eval: --markdown tables cover --task pubmedqa/rouge; none was run", file=sys.stderr)
        else:
            medical_tasks.write_results(benchmarks, md_path=args.markdown)
    return 0
