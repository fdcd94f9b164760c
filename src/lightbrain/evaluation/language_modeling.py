"""Whole-split language-modelling metrics: loss (nats per token), perplexity and bits per byte.

Bits per byte divides the total cross-entropy (in bits) by the UTF-8 bytes of the text, so models
with different tokenizers compare fairly: a tokenizer with longer tokens has fewer, harder
predictions, and bpb accounts for that where per-token loss does not.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lightbrain.data.loader import sequential_batches


@torch.no_grad()
def evaluate_tokens(model: torch.nn.Module, tokens: np.ndarray, num_bytes: int, batch_size: int = 16,
                    device: str | torch.device | None = None, ctx=None, progress: bool = False) -> dict[str, float]:
    """Score every token of `tokens` once (each predicted from up to block_size tokens before it,
    within non-overlapping windows). `num_bytes` is the UTF-8 size of the text the tokens encode."""
    device = device or next(model.parameters()).device
    ctx = ctx or contextlib.nullcontext()
    block = model.config.block_size
    was_training = model.training
    model.eval()
    total_nats, total_tokens = 0.0, 0
    batches = sequential_batches(tokens, block, batch_size, device)
    if progress:
        from tqdm.auto import tqdm

        n_windows = math.ceil((len(tokens) - 1) / block)
        batches = tqdm(batches, total=math.ceil(n_windows / batch_size), desc="eval", unit="batch")
    for x, y in batches:
        with ctx:
            logits, _ = model(x)
        nats = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), ignore_index=-1, reduction="sum")
        total_nats += nats.item()
        total_tokens += int((y != -1).sum())
    model.train(was_training)
    loss = total_nats / total_tokens
    result = {"loss": loss, "perplexity": math.exp(min(loss, 700)), "tokens": total_tokens, "bytes": int(num_bytes)}
    result["bits_per_byte"] = total_nats / math.log(2) / num_bytes if num_bytes else float("nan")
    return result


def evaluate_text(model: torch.nn.Module, tokenizer, text: str, **kwargs) -> dict[str, float]:
    """The same metrics for any text: documents separated by blank lines are joined with end-of-text."""
    docs = [d.strip() for d in text.split("\n\n") if d.strip()] or [text]
    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer.encode(doc))
        ids.append(tokenizer.eot_id)
    num_bytes = sum(len(d.encode("utf-8")) for d in docs)
    return evaluate_tokens(model, np.asarray(ids, dtype=np.int64), num_bytes, **kwargs)


def evaluate_text_file(model: torch.nn.Module, tokenizer, path: str | Path, **kwargs) -> dict[str, float]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 (bad byte at offset {exc.start}); convert it first, "
                         "e.g. iconv -f latin1 -t utf-8") from None
    if not text.strip():
        raise ValueError(f"{path} is empty: nothing to score")
    return evaluate_text(model, tokenizer, text, **kwargs)
