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


def _metrics(nats: float, tokens: int, num_bytes: int) -> dict[str, float]:
    loss = nats / tokens if tokens else float("nan")
    return {"loss": loss, "perplexity": math.exp(min(loss, 700)), "tokens": tokens, "bytes": int(num_bytes),
            "bits_per_byte": nats / math.log(2) / num_bytes if num_bytes else float("nan")}


def source_segments(split_meta: dict) -> list[dict]:
    """Where each source's tokens lie in a split file, from meta.json's per-source counts (file order):
    [{"name", "start", "end", "bytes"}], named by source type (`jsonl #2` for a type's second source);
    empty for builds that predate those counts."""
    out, start = [], 0
    entries = split_meta.get("sources") or []
    if any(entry.get("copies", 1) != 1 for entry in entries):
        return []  # repeated sources are spread over the file: their counts are no map of it
    types = [entry["type"] for entry in entries]
    for i, entry in enumerate(entries):
        kind = entry["type"]
        name = kind if types.count(kind) == 1 else f"{kind} #{types[:i + 1].count(kind)}"
        out.append({"name": name, "start": start, "end": start + entry["tokens"], "bytes": entry["bytes"]})
        start += entry["tokens"]
    if start != split_meta.get("tokens"):
        return []
    return out


@torch.no_grad()
def evaluate_tokens(model: torch.nn.Module, tokens: np.ndarray, num_bytes: int, batch_size: int = 16,
                    device: str | torch.device | None = None, ctx=None, progress: bool = False,
                    segments: list[dict] | None = None) -> dict:
    """Score every token of `tokens` once (each predicted from up to block_size tokens before it,
    within non-overlapping windows). `num_bytes` is the UTF-8 size of the text the tokens encode.
    With `segments` (see `source_segments`), the result also has `by_source`: the same metrics for each
    source's stretch of the file, each token counted where it lies."""
    device = device or next(model.parameters()).device
    ctx = ctx or contextlib.nullcontext()
    block = model.config.block_size
    was_training = model.training
    model.eval()
    total_nats, total_tokens = 0.0, 0
    # per-target nats by position in the file, only when a per-source split is asked for
    nats_at = np.zeros(len(tokens), dtype=np.float64) if segments else None
    window = 0
    batches = sequential_batches(tokens, block, batch_size, device)
    if progress:
        from tqdm.auto import tqdm

        n_windows = math.ceil((len(tokens) - 1) / block)
        batches = tqdm(batches, total=math.ceil(n_windows / batch_size), desc="eval", unit="batch")
    for x, y in batches:
        with ctx:
            logits, _ = model(x)
        nats = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), ignore_index=-1, reduction="none")
        total_nats += nats.sum().item()
        total_tokens += int((y != -1).sum())
        if nats_at is not None:
            # row r of this batch is window `window + r`; its target t is the file's token start + 1 + t
            targets = (window + np.arange(len(y)))[:, None] * block + 1 + np.arange(y.size(1))[None, :]
            valid = (y != -1).cpu().numpy()
            nats_at[targets[valid]] = nats.view(y.shape).double().cpu().numpy()[valid]
        window += len(y)
    model.train(was_training)
    result = _metrics(total_nats, total_tokens, num_bytes)
    if nats_at is not None:
        result["by_source"] = {
            seg["name"]: _metrics(float(nats_at[seg["start"]:seg["end"]].sum()),
                                  seg["end"] - max(seg["start"], 1), seg["bytes"])
            for seg in segments}
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
