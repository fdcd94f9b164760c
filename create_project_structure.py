#!/usr/bin/env python3
"""Create the folders a LightBrain project writes into; safe to run again (existing folders are kept).

  python create_project_structure.py              # in the repository
  python create_project_structure.py --root runs/experiment-1

  data/raw                 your own source files (text, JSONL, CSV, parquet)
  data/processed           token files from `lightbrain prepare` (train.bin, validation.bin, meta.json)
  data/external/pretrained weights or tokenizers obtained elsewhere
  models                   checkpoints and MODEL_CARD.md from `lightbrain train`
  logs/tensorboard         metrics.jsonl, training.log and TensorBoard event files
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FOLDERS = ("data/raw", "data/processed", "data/external/pretrained", "models", "logs/tensorboard")


def create_structure(root: str | Path) -> list[Path]:
    """Make every folder in FOLDERS under root; returns the ones that did not exist before."""
    root = Path(root)
    created = []
    for folder in FOLDERS:
        path = root / folder
        if path.exists() and not path.is_dir():
            raise SystemExit(f"create_project_structure: {path} exists and is not a folder; move it aside and re-run")
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            created.append(path)
    return created


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=Path(__file__).resolve().parent,
                        help="where to create the folders (default: the repository)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing")
    args = parser.parse_args(argv)
    created = create_structure(args.root)
    if not args.quiet:
        for folder in FOLDERS:
            path = Path(args.root) / folder
            print(f"{'created' if path in created else 'exists '}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
