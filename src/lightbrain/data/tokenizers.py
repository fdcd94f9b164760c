"""Tokenizers: GPT-2's BPE (through tiktoken) and a byte-level medical BPE trained on our own data.

Both expose the same small surface: `encode`, `encode_batch`, `decode`, `vocab_size`, `eot_id`,
`name`, `to_dict()` (what checkpoints and meta.json store) and `fingerprint()`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

EOT = "<|endoftext|>"


class TokenizerError(RuntimeError):
    pass


class GPT2Tokenizer:
    """tiktoken's `gpt2` encoding: 50,257 tokens, end-of-text = 50256."""

    name = "gpt2"

    def __init__(self) -> None:
        import tiktoken

        try:
            self._enc = tiktoken.get_encoding("gpt2")
        except Exception as exc:  # tiktoken downloads its BPE files on first use
            raise TokenizerError(
                "could not load tiktoken's GPT-2 files (they are downloaded on first use). Offline, seed a cache "
                "and point tiktoken at it:\n"
                "  sh ../shared/data/gpt2/seed_tiktoken_cache.sh .cache/tiktoken\n"
                "  export TIKTOKEN_CACHE_DIR=$PWD/.cache/tiktoken\n"
                f"(cause: {type(exc).__name__}: {exc})"
            ) from None
        self.vocab_size = self._enc.n_vocab
        self.eot_id = self._enc.eot_token

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(texts, num_threads=max(1, num_threads))

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode(list(ids), errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self._enc.decode_bytes(list(ids))

    def to_dict(self) -> dict:
        return {"name": self.name}

    def fingerprint(self) -> str:
        return "gpt2-tiktoken-r50k"


class MedicalBPETokenizer:
    """A byte-level BPE from Hugging Face `tokenizers`, trained on the training split only."""

    name = "medical-bpe"

    def __init__(self, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer

        self._json = tokenizer_json
        self._tok = Tokenizer.from_str(tokenizer_json)
        # A literal "<|endoftext|>" in a document is text, not a document boundary (as GPT-2's encode_ordinary).
        self._tok.encode_special_tokens = True
        eot = self._tok.token_to_id(EOT)
        if eot is None:
            raise TokenizerError(f"the medical BPE has no {EOT} token; retrain it with lightbrain prepare")
        self.eot_id = eot
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self._token_bytes: list[bytes] | None = None  # built on first decode_bytes

    @classmethod
    def from_file(cls, path: str | Path) -> "MedicalBPETokenizer":
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"tokenizer file not found: {path}")
        return cls(path.read_text(encoding="utf-8"))

    def save(self, path: str | Path) -> None:
        from lightbrain.atomic_io import atomic_write_text

        atomic_write_text(Path(path), self._json)

    def encode(self, text: str) -> list[int]:
        # Special tokens in the input are ordinary text here, as with GPT-2's encode_ordinary.
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        # tokenizers parallelises batches itself (RAYON_RS_NUM_THREADS / TOKENIZERS_PARALLELISM).
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        # Token by token through the byte-level alphabet, so a token holding part of a UTF-8
        # sequence gives exactly its bytes (decode() would replace them with U+FFFD).
        if self._token_bytes is None:
            byte_of = _byte_level_inverse()
            self._token_bytes = [
                bytes(byte_of[ch] for ch in tok) if all(ch in byte_of for ch in tok) else tok.encode("utf-8")
                for tok in (self._tok.id_to_token(i) or "" for i in range(self.vocab_size))
            ]
        return b"".join(self._token_bytes[i] for i in ids)

    def to_dict(self) -> dict:
        return {"name": self.name, "tokenizer_json": self._json}

    def fingerprint(self) -> str:
        return hashlib.sha256(self._json.encode("utf-8")).hexdigest()


def _byte_level_inverse() -> dict[str, int]:
    """Character -> byte for the byte-level BPE alphabet (GPT-2's table: printable bytes stand for
    themselves, the other bytes for the characters from U+0100 on, in byte order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    others = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + n): b for n, b in enumerate(others)})
    return table


def train_medical_bpe(texts: Iterable[str], vocab_size: int = 8192, show_progress: bool = False) -> MedicalBPETokenizer:
    """Train a byte-level BPE on `texts` (the training split only: never on held-out text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknown tokens
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return MedicalBPETokenizer(tok.to_str())


def tokenizer_from_dict(spec: dict) -> GPT2Tokenizer | MedicalBPETokenizer:
    """Rebuild a tokenizer from `to_dict()` output (stored in meta.json and checkpoints)."""
    name = spec.get("name")
    if name == "gpt2":
        return GPT2Tokenizer()
    if name == "medical-bpe":
        if "tokenizer_json" in spec:
            return MedicalBPETokenizer(spec["tokenizer_json"])
        if "path" in spec:
            return MedicalBPETokenizer.from_file(spec["path"])
        raise TokenizerError("medical-bpe tokenizer spec has neither tokenizer_json nor path")
    raise TokenizerError(f"unknown tokenizer {name!r}; expected 'gpt2' or 'medical-bpe'")


def load_data_tokenizer(data_dir: str | Path) -> GPT2Tokenizer | MedicalBPETokenizer:
    """The tokenizer that produced the token files in `data_dir` (from its meta.json)."""
    meta_path = Path(data_dir) / "meta.json"
    if not meta_path.is_file():
        raise TokenizerError(f"{meta_path} not found: run `lightbrain prepare` first")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    spec = dict(meta["tokenizer"])
    if spec.get("name") == "medical-bpe" and "tokenizer_json" not in spec:
        spec["path"] = str(Path(data_dir) / spec.get("file", "tokenizer.json"))
    return tokenizer_from_dict(spec)


def default_num_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
