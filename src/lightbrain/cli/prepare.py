"""`lightbrain prepare`: clean, split and tokenize medical text into token files (see docs/data.md)."""

from __future__ import annotations

import argparse
import time

from lightbrain.cli import add_config_args, config_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", "-s", action="append", default=None, metavar="PATH_OR_hub",
                        help="a data folder or file, or 'hub' for PubMedQA from the Hugging Face hub "
                        "(repeatable; replaces data.sources), e.g. --source ../shared/data")
    parser.add_argument("--tokenizer", choices=("gpt2", "medical-bpe"), help="data.tokenizer (default gpt2)")
    parser.add_argument("--vocab-size", type=int, metavar="N", help="data.bpe_vocab_size for medical-bpe")
    parser.add_argument("--out", metavar="DIR", help="data.out_dir (default data/processed)")
    parser.add_argument("--workers", type=int, metavar="N", help="tokenizer threads (data.num_workers; 0 = all cores)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the inputs are unchanged")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    add_config_args(parser)


def run(args: argparse.Namespace) -> int:
    from lightbrain.data.prepare import prepare_data

    data = config_from_args(args).data
    for attr, value in (("sources", args.source), ("tokenizer", args.tokenizer), ("bpe_vocab_size", args.vocab_size),
                        ("out_dir", args.out), ("num_workers", args.workers), ("force", args.force or None)):
        if value is not None:
            setattr(data, attr, value)
    start = time.perf_counter()
    meta = prepare_data(data, progress=not args.quiet)
    elapsed = time.perf_counter() - start

    print(f"tokenizer {meta['tokenizer']['name']} (vocab {meta['vocab_size']:,}, {meta['dtype']})")
    for split, s in meta["splits"].items():
        print(f"{split:>10}: {s['documents']:>8,} documents {s['tokens']:>12,} tokens {s['bytes']:>13,} bytes")
    for source in meta["sources"]:
        print(f"  source {source['type']} {source.get('path') or source.get('name')}: {source['documents']:,} documents")
    print(f"wrote {data.out_dir}/ (train.bin, validation.bin, meta.json) in {elapsed:.1f}s")
    return 0
