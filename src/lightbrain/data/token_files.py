"""Memory-mapped token files: `{split}.bin` (flat uint16/uint32 token ids, each document followed by
the end-of-text token) described by `meta.json` beside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from lightbrain.atomic_io import atomic_path, atomic_write_text

META_FILE = "meta.json"
FORMAT_VERSION = 1


class TokenFileError(RuntimeError):
    pass


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (vocab <= 65,535 as the format promises), uint32 beyond."""
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


def write_token_file(path: str | Path, chunks: Iterable[np.ndarray], dtype: np.dtype) -> int:
    """Write token arrays one after another, atomically. Returns the number of tokens written."""
    total = 0
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                arr = np.asarray(chunk)
                if arr.size and int(arr.max()) > np.iinfo(dtype).max:
                    raise TokenFileError(f"token id {int(arr.max())} does not fit {dtype} while writing {path}")
                if arr.size and int(arr.min()) < 0:  # astype would wrap it to a large, valid-looking id
                    raise TokenFileError(f"negative token id {int(arr.min())} while writing {path}")
                f.write(arr.astype(dtype, copy=False).tobytes())
                total += arr.size
    return total


def read_meta(data_dir: str | Path) -> dict[str, Any]:
    path = Path(data_dir) / META_FILE
    if not path.is_file():
        raise TokenFileError(f"{path} not found: run `lightbrain prepare` to create the token files first")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TokenFileError(f"{path} is not valid JSON ({exc}); re-run `lightbrain prepare --force`") from None
    for key in ("dtype", "vocab_size", "eot_id", "splits", "tokenizer"):
        if key not in meta:
            raise TokenFileError(f"{path} lacks the key {key!r}; re-run `lightbrain prepare --force`")
    return meta


def write_meta(data_dir: str | Path, meta: dict[str, Any]) -> None:
    atomic_write_text(Path(data_dir) / META_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")


class TokenFile:
    """One split's tokens as a read-only numpy memmap (nothing is loaded until sliced)."""

    def __init__(self, path: str | Path, dtype: np.dtype | str):
        self.path = Path(path)
        if not self.path.is_file():
            raise TokenFileError(f"token file not found: {self.path}; run `lightbrain prepare`")
        self.dtype = np.dtype(dtype)
        size = self.path.stat().st_size
        if size % self.dtype.itemsize:
            raise TokenFileError(f"{self.path} is {size} bytes, not a whole number of {self.dtype} tokens: "
                                 "it is truncated or was written with another dtype")
        self.tokens = np.memmap(self.path, dtype=self.dtype, mode="r") if size else np.zeros(0, self.dtype)

    def __len__(self) -> int:
        return len(self.tokens)


def open_split(data_dir: str | Path, split: str) -> TokenFile:
    meta = read_meta(data_dir)
    if split not in meta["splits"]:
        raise TokenFileError(f"{data_dir}: no split {split!r}; have {sorted(meta['splits'])}")
    tf = TokenFile(Path(data_dir) / f"{split}.bin", meta["dtype"])
    expected = meta["splits"][split].get("tokens")
    if expected is not None and expected != len(tf):
        raise TokenFileError(f"{tf.path} holds {len(tf)} tokens but meta.json says {expected}: "
                             "the file is incomplete or stale; re-run `lightbrain prepare --force`")
    return tf


def split_documents(tokens: np.ndarray, eot_id: int) -> list[np.ndarray]:
    """Cut a split back into its documents (each was written followed by `eot_id`)."""
    ends = np.flatnonzero(np.asarray(tokens) == eot_id)
    docs, start = [], 0
    for end in ends:
        docs.append(np.asarray(tokens[start:end]))
        start = end + 1
    return docs
