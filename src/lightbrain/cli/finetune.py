"""`lightbrain finetune`: full or LoRA fine-tuning of a checkpoint on PubMedQA / MedQuAD instruction
examples, and `lightbrain finetune merge`: an adapter folder + its base -> a full checkpoint.
docs/finetuning.md describes the data, the outputs and the commands."""

from __future__ import annotations

import argparse
import json


def configure(parser: argparse.ArgumentParser) -> None:
    # Flags default to None so that only the ones given override a recipe (--config) or the defaults.
    parser.add_argument("--config", "-c", help="YAML recipe with a `finetune:` section, e.g. configs/finetune_lora.yaml")
    parser.add_argument("--checkpoint", help="pretrained base checkpoint (default models/lightbrain_tiny_v1.0.pt)")
    parser.add_argument("--data", choices=("pubmedqa", "medquad", "both"), help="instruction data (default both)")
    parser.add_argument("--source", help="folder holding pubmedqa/ and/or medquad/ (default ../shared/data)")
    parser.add_argument("--pubmedqa-tasks", help="comma-separated: decision, conclusion (default both)")
    parser.add_argument("--method", choices=("lora", "full"), help="LoRA adapters (default) or every weight")
    parser.add_argument("--rank", type=int, help="LoRA rank (default 8)")
    parser.add_argument("--alpha", type=float, help="LoRA alpha; the update is scaled by alpha / rank (default 16)")
    parser.add_argument("--lora-dropout", type=float, help="dropout on the LoRA path (default 0.05)")
    parser.add_argument("--lr", type=float, dest="learning_rate", help="peak learning rate (default 1e-3 LoRA, 1e-4 full)")
    parser.add_argument("--epochs", type=float, help="passes over the training examples (default 1)")
    parser.add_argument("--max-iters", type=int, help="optimizer steps; replaces --epochs")
    parser.add_argument("--batch-size", type=int, help="examples per step (default 16)")
    parser.add_argument("--limit", type=int, help="at most N training examples per source (quick runs)")
    parser.add_argument("--validation-one-in", type=int,
                        help="MedQuAD split rule (default: the base checkpoint's data.validation_one_in)")
    parser.add_argument("--eval-pubmedqa", action="store_true", default=None,
                        help="PubMedQA test-split accuracy before and after fine-tuning")
    parser.add_argument("--out", dest="out_dir", help="output folder (default models/finetune)")
    parser.add_argument("--force", action="store_true", default=None, help="replace an earlier run's outputs in --out")
    parser.add_argument("--device", help="auto, cpu, cuda, mps (default auto)")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), help="default auto")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--no-progress", action="store_false", dest="progress", default=None)

    sub = parser.add_subparsers(dest="action", metavar="merge")
    merge = sub.add_parser("merge", help="merge a LoRA adapter into its base checkpoint",
                           description="Merge a LoRA adapter folder into its base checkpoint, writing a standard "
                                       "checkpoint that generate/eval/export read as is.")
    merge.add_argument("--base", required=True, help="the checkpoint the adapter was fine-tuned from")
    merge.add_argument("--adapter", required=True, help="adapter folder (OUT/adapter of `lightbrain finetune`)")
    merge.add_argument("--out", required=True, help="merged checkpoint to write (.pt)")


FLAGS = ("checkpoint", "data", "source", "method", "rank", "alpha", "lora_dropout", "learning_rate", "epochs",
         "max_iters", "batch_size", "limit", "validation_one_in", "eval_pubmedqa", "out_dir", "force", "device",
         "dtype", "seed", "progress")


def run(args: argparse.Namespace) -> int:
    from lightbrain import DISCLAIMER

    if args.action == "merge":
        from lightbrain.training.finetune import merge_adapter

        path = merge_adapter(args.base, args.adapter, args.out)
        print(f"wrote {path}: {args.adapter} merged into {args.base}")
        return 0

    from lightbrain.training.finetune import finetune, load_finetune_config

    overrides = {name: getattr(args, name) for name in FLAGS}
    if args.pubmedqa_tasks:
        overrides["pubmedqa_tasks"] = [t.strip() for t in args.pubmedqa_tasks.split(",") if t.strip()]
    config = load_finetune_config(args.config, **overrides)
    summary = finetune(config)
    shown = {k: summary.get(k) for k in ("method", "examples", "iters", "train_loss", "held_out_loss_before",
                                         "held_out_loss_after", "pubmedqa_before", "pubmedqa_after", "checkpoint",
                                         "adapter") if summary.get(k) is not None}
    print(json.dumps(shown, indent=2))
    print(f"[{DISCLAIMER}]")
    return 0
