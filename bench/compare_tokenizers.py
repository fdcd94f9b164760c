"""Compare GPT-2 BPE with medical BPEs of several vocabulary sizes on the same data.

    python bench/compare_tokenizers.py --source ../shared/data                      # statistics only
    python bench/compare_tokenizers.py --source ../shared/data --train-minutes 5    # plus bpb after training

For each tokenizer: prepare the data (cached under --work), measure tokens per word and bytes per token
on the validation documents, show how medical terms split, and optionally train the same recipe for
the same wall time and report validation bits per byte. Writes a markdown report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="../shared/data")
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--work", default="data/compare", help="where prepared data and runs go")
    parser.add_argument("--train-minutes", type=float, default=0.0, help="0 = statistics only")
    parser.add_argument("--config", default=str(REPO / "configs" / "tiny_cpu.yaml"), help="recipe for the training runs")
    parser.add_argument("--output", default="bench/TOKENIZERS.md")
    args = parser.parse_args()

    import numpy as np

    from lightbrain.config import DataConfig, load_config
    from lightbrain.data.prepare import prepare_data
    from lightbrain.data.token_files import open_split, split_documents
    from lightbrain.data.tokenizer_report import markdown_report, term_splits, text_stats
    from lightbrain.data.tokenizers import load_data_tokenizer

    work = Path(args.work)
    candidates = [("gpt2", "gpt2", 0)] + [(f"medical-bpe-{v}", "medical-bpe", v) for v in args.vocab_sizes]
    rows, splits = {}, {}
    val_texts = None
    for name, kind, vocab in candidates:
        out = work / name
        cfg = DataConfig(sources=[args.source], tokenizer=kind, out_dir=str(out), **({"bpe_vocab_size": vocab} if vocab else {}))
        cfg.validate()
        meta = prepare_data(cfg, progress=False)
        tok = load_data_tokenizer(out)
        if val_texts is None:  # the same held-out documents for every tokenizer, decoded from the first
            val = open_split(out, "validation")
            val_texts = [tok.decode(np.asarray(d).tolist()) for d in split_documents(val.tokens, tok.eot_id)]
        row = {"vocab_size": tok.vocab_size, **text_stats(tok, val_texts)}
        splits[name] = term_splits(tok)
        if args.train_minutes > 0:
            from lightbrain.evaluation.language_modeling import evaluate_tokens
            from lightbrain.training.checkpoint import load_model
            from lightbrain.training.trainer import train

            run = work / "runs" / name
            tcfg = load_config(args.config, overrides=[
                "model.vocab_size=null", f"train.data_dir={out}", f"train.out_dir={run}/models",
                f"train.log_dir={run}/logs", f"train.time_budget_minutes={args.train_minutes}", "train.max_iters=1000000",
                "train.progress=false"])
            result = train(tcfg)
            model, _, _ = load_model(result.best_checkpoint)
            val = open_split(out, "validation")
            ev = evaluate_tokens(model, val.tokens, meta["splits"]["validation"]["bytes"], batch_size=32)
            row.update(val_bpb=ev["bits_per_byte"], val_loss=ev["loss"], iters=result.iter_num,
                       tokens_seen=result.tokens_seen, params=model.get_num_params(),
                       load_avg=round(os.getloadavg()[0], 2))
        rows[name] = row
        print(name, json.dumps(row), file=sys.stderr)

    report = ["# Tokenizer comparison", "",
              f"Data: `{args.source}` prepared with each tokenizer; statistics on the {len(val_texts):,} validation "
              "documents (held out from BPE training).", ""]
    if args.train_minutes > 0:
        report += [f"Training: `{Path(args.config).name}` with `model.vocab_size` following the tokenizer, "
                   f"{args.train_minutes:g} minutes of training each; bits per byte over the whole validation split.", ""]
    report.append(markdown_report(rows, splits))
    Path(args.output).write_text("\n".join(report), encoding="utf-8")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
