"""`lightbrain export`: a checkpoint to a Hugging Face Transformers folder, or such a folder back.

  lightbrain export --format hf --checkpoint models/lightbrain_tiny_v1.0.pt exports/lightbrain-tiny/
  lightbrain export --from-hf exports/lightbrain-tiny/ models/imported.pt
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n", 1)[1]
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="CKPT", help="LightBrain checkpoint to export")
    source.add_argument("--from-hf", metavar="DIR",
                        help="Transformers GPT-2 or Llama folder to import as a LightBrain checkpoint")
    parser.add_argument("out", metavar="OUT", help="folder to write (export) or checkpoint file to write (--from-hf)")
    parser.add_argument("--format", choices=["hf"], default="hf",
                        help="export format: hf = Transformers folder, GPT2LMHeadModel for the seed "
                        "architecture, LlamaForCausalLM for rope/rmsnorm/swiglu (default)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it already exists")


def run(args: argparse.Namespace) -> int:
    from lightbrain import DISCLAIMER
    from lightbrain.export.hf import export_hf, import_hf_checkpoint

    if args.from_hf:
        path = import_hf_checkpoint(args.from_hf, args.out, force=args.force)
        print(f"imported {args.from_hf} -> {path}")
        return 0
    folder = export_hf(args.checkpoint, args.out, force=args.force)
    print(f"exported {args.checkpoint} -> {folder}/ ({', '.join(sorted(p.name for p in folder.iterdir()))})")
    print(f"load it with AutoModelForCausalLM.from_pretrained({str(folder)!r}) and AutoTokenizer.from_pretrained(...)")
    print(DISCLAIMER)
    return 0
