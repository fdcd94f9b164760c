"""Text generation with a KV cache: one loop that the CLI, the Python API and the server all use.

Sliding window: the model sees at most `block_size` tokens. When prompt + output would exceed it,
the most recent `block_size // 2` tokens are kept, the cache is rebuilt from them (one prefill),
and decoding continues; halving, rather than dropping one token at a time, means the rebuild
happens only once every `block_size // 2` new tokens, so long outputs stay fast.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick next tokens (B,) from logits (B, vocab). Temperature 0 is greedy (argmax).

    top_k keeps the k highest logits (ties at the k-th are broken by position), top_p then keeps the
    smallest set of those whose probability reaches top_p; the draw is among what is left."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    candidates = None  # vocabulary ids of the columns of `logits` once it is cut down and sorted
    if top_k is not None and 0 < top_k < logits.size(-1):
        # softmax and draw over k values, not the whole vocabulary: most of a sampling step's cost otherwise
        logits, candidates = torch.topk(logits, top_k, dim=-1)  # sorted, highest first
    if top_p is not None and 0 < top_p < 1:
        if candidates is None:
            logits, candidates = torch.sort(logits, descending=True, dim=-1)
        probs = logits.softmax(dim=-1)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        logits = logits.masked_fill(probs.cumsum(dim=-1) - probs >= top_p, float("-inf"))
    choice = torch.multinomial(logits.softmax(dim=-1), num_samples=1, generator=generator)  # (B, 1)
    if candidates is not None:
        choice = candidates.gather(-1, choice)
    return choice.squeeze(-1)


def _check_prompt(idx: torch.Tensor) -> torch.Tensor:
    if idx.dim() == 1:
        idx = idx.unsqueeze(0)
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError("the prompt is empty: give at least one token (e.g. the end-of-text token)")
    return idx


@torch.inference_mode()
def generate_stream(model: torch.nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                    top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                    generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, (B,), one step at a time."""
    idx = _check_prompt(idx)
    if max_new_tokens <= 0:
        return
    block_size = model.config.block_size
    device = idx.device
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    batch = idx.size(0)
    window = idx[:, -block_size:]
    # `held` is the window the cache holds, written in place, so no step allocates a growing tensor
    held = torch.empty(batch, block_size, dtype=idx.dtype, device=device)
    held[:, :window.size(1)] = window
    cache = model.new_kv_cache(batch)
    logits, _ = model(window, kv_cache=cache, last_only=True)
    keep = max(1, block_size // 2)
    for step in range(max_new_tokens):
        next_token = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B,)
        yield next_token
        if step == max_new_tokens - 1:
            break
        if cache.pos >= block_size:  # context full: keep the recent half (ending with next_token), rebuild the cache
            held[:, :keep - 1] = held[:, block_size - keep + 1:].clone()
            held[:, keep - 1] = next_token
            cache.reset()
            logits, _ = model(held[:, :keep], kv_cache=cache, last_only=True)
        else:
            held[:, cache.pos] = next_token
            logits, _ = model(next_token[:, None], kv_cache=cache, last_only=True)


def generate(model: torch.nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Continue the prompts idx (B, T) by max_new_tokens; returns (B, T + max_new_tokens)."""
    idx = _check_prompt(idx)
    was_training = model.training
    model.eval()
    try:
        new = list(generate_stream(model, idx, max_new_tokens, temperature, top_k, top_p, seed, generator))
    finally:
        model.train(was_training)
    if not new:
        return idx
    return torch.cat([idx, torch.stack(new, dim=1)], dim=1)


def generate_text(model: torch.nn.Module, tokenizer, prompt: str, max_new_tokens: int = 100, temperature: float = 0.8,
                  top_k: int | None = 50, top_p: float | None = None, seed: int | None = None,
                  stop_at_eot: bool = True) -> str:
    """Prompt string in, continuation string out (without the prompt)."""
    for_text = list(stream_text(model, tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed, stop_at_eot))
    return "".join(for_text)


def stream_text(model: torch.nn.Module, tokenizer, prompt: str, max_new_tokens: int = 100, temperature: float = 0.8,
                top_k: int | None = 50, top_p: float | None = None, seed: int | None = None,
                stop_at_eot: bool = True, on_token: Callable[[int], None] | None = None) -> Iterator[str]:
    """Yield pieces of text as they are generated. Bytes of a character split across tokens are held
    back until the character is complete, so every piece is valid UTF-8. `on_token` sees every
    sampled token id (end-of-text included), e.g. for the server's token counts."""
    ids = tokenizer.encode(prompt) if prompt else []
    if not ids:
        ids = [tokenizer.eot_id]  # an empty prompt starts a fresh document
    device = next(model.parameters()).device
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    pending: list[int] = []
    try:
        for token in generate_stream(model, idx, max_new_tokens, temperature, top_k, top_p, seed):
            tok = int(token[0])
            if on_token is not None:
                on_token(tok)
            if stop_at_eot and tok == tokenizer.eot_id:
                break
            pending.append(tok)
            data = tokenizer.decode_bytes(pending)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                if len(pending) < 8:
                    continue  # wait for the rest of the character
                text = data.decode("utf-8", errors="replace")
            pending = []
            yield text
        if pending:
            yield tokenizer.decode_bytes(pending).decode("utf-8", errors="replace")
    finally:
        model.train(was_training)
