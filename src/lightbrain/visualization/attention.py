"""Attention heatmaps: which earlier tokens each token attends to, per layer and head.

The model's attention runs through PyTorch's fused scaled_dot_product_attention, which never
materialises the weights. Here they are recomputed from each layer's own input and c_attn weights
(q.k / sqrt(head_dim), causal mask, softmax), the same arithmetic SDPA performs, so the fast path
stays untouched and the maps match what the model computes.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from lightbrain.models.lightbrain_tiny import CausalSelfAttention, apply_rope
from lightbrain.visualization.plots import new_figure, save_figure


def attention_from_input(attn: CausalSelfAttention, x: torch.Tensor, rope=None,
                         allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention weights (B, n_head, T, T) of `attn` for its input x (B, T, C); rows sum to 1.
    `allowed` (B, 1, T, T), the model's document mask where it has one, replaces the causal mask."""
    B, T, _ = x.shape
    q, k, _ = attn.c_attn(x).split(attn.n_embd, dim=2)
    q = q.view(B, T, attn.n_head, attn.head_dim).transpose(1, 2)  # (B, nh, T, hs)
    k = k.view(B, T, attn.n_head, attn.head_dim).transpose(1, 2)
    if attn.qk_norm:
        q, k = attn.q_norm(q), attn.k_norm(k)
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(attn.head_dim)  # (B, nh, T, T)
    visible = allowed if allowed is not None else torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    return scores.masked_fill(~visible, float("-inf")).softmax(dim=-1)


@torch.no_grad()
def attention_maps(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """Attention weights of every layer and head for one sequence of token ids: (n_layer, n_head, T, T).

    Each layer's input is captured with a forward pre-hook during an ordinary forward pass (eval mode,
    no KV cache), then its weights are recomputed by `attention_from_input`."""
    if idx.dim() == 1:
        idx = idx.unsqueeze(0)
    if idx.size(0) != 1:
        raise ValueError(f"attention_maps takes one sequence, got a batch of {idx.size(0)}")
    inputs: dict[int, tuple] = {}
    blocks = model.transformer.h
    hooks = [block.attn.register_forward_pre_hook(lambda mod, args, i=i: inputs.__setitem__(i, args))
             for i, block in enumerate(blocks)]
    was_training = model.training
    model.eval()
    try:
        model(idx)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    # the arguments Block passes: (x, rope, kv_cache, v_first, return_values, v_embed, allowed)
    maps = []
    for i, block in enumerate(blocks):
        args = inputs[i]
        maps.append(attention_from_input(block.attn, args[0], args[1] if len(args) > 1 else None,
                                         args[6] if len(args) > 6 else None))
    return torch.cat(maps).float().cpu()  # (n_layer, nh, T, T)


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """One readable label per token: a leading space shown as '·', newlines as '\\n'."""
    labels = []
    for i in ids:
        text = tokenizer.decode_bytes([i]).decode("utf-8", errors="replace")
        if i == tokenizer.eot_id:
            text = "<eot>"
        text = text.replace("\n", "\\n").replace("\t", "\\t")
        labels.append("·" + text[1:] if text.startswith(" ") else text or "∅")
    return labels


def draw_attention(weights: torch.Tensor, labels: list[str], layers: list[int] | None = None,
                   heads: list[int] | None = None, title: str | None = None) -> Figure:
    """A grid of heatmaps (rows: layers, columns: heads) of weights (n_layer, n_head, T, T); returns the figure.
    Rows of each map are the attending (query) tokens, columns the tokens attended to (keys)."""
    n_layer, n_head, T, _ = weights.shape
    if len(labels) != T:
        raise ValueError(f"{len(labels)} token labels for {T} positions")
    layers = list(range(n_layer)) if layers is None else list(layers)
    heads = list(range(n_head)) if heads is None else list(heads)
    for name, chosen, count in (("layer", layers, n_layer), ("head", heads, n_head)):
        bad = [c for c in chosen if not 0 <= c < count]
        if bad:
            raise ValueError(f"{name} {bad[0]} does not exist: the model has {count} {name}s (0 to {count - 1})")
    panel = max(2.4, 0.24 * T + 0.8)  # inches: room for one readable label per token
    font = 8
    fig = new_figure((panel * len(heads) + 1.6, panel * len(layers) + 1.4))
    axes = fig.subplots(len(layers), len(heads), squeeze=False)
    # positions a token cannot see (the future) in grey, apart from weights near 0
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#e8e8e8")
    future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1).numpy()
    image = None
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r][c]
            shown = np.ma.masked_array(weights[layer, head].numpy(), mask=future)
            image = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(f"layer {layer}, head {head}", fontsize=font + 1)
            ax.set_xticks(range(T))
            ax.set_yticks(range(T))
            # token labels on the outer panels only, so a big grid stays legible
            ax.set_xticklabels(labels if r == len(layers) - 1 else [], rotation=90, fontsize=font)
            ax.set_yticklabels(labels if c == 0 else [], fontsize=font)
            ax.tick_params(bottom=r == len(layers) - 1, left=c == 0)  # no stray marks under the titles below
            if r == len(layers) - 1:
                ax.set_xlabel("attended-to token (key)", fontsize=font + 1)
            if c == 0:
                ax.set_ylabel("attending token (query)", fontsize=font + 1)
    fig.suptitle((title or "Attention weights") + "\n· = the token begins with a space; grey = later tokens, "
                 "which causal attention cannot see", fontsize=11)
    fig.colorbar(image, ax=axes, label="attention weight", shrink=min(0.9, 0.5 + 0.2 * len(layers)))
    return fig


def plot_attention(checkpoint: str | Path, prompt: str, out_path: str | Path, layers: list[int] | None = None,
                   heads: list[int] | None = None, device: str = "cpu") -> Path:
    """Attention heatmaps of a checkpoint for `prompt`, written as a PNG; returns the path."""
    from lightbrain.training.checkpoint import load_model

    model, tokenizer, _ = load_model(checkpoint, device)
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("the prompt is empty: give some text to look at")
    if len(ids) > model.config.block_size:
        raise ValueError(f"the prompt is {len(ids)} tokens, longer than the model's context of "
                         f"{model.config.block_size}; shorten it (around 10 to 30 tokens reads best)")
    weights = attention_maps(model, torch.tensor(ids, dtype=torch.long, device=next(model.parameters()).device))
    fig = draw_attention(weights, token_labels(tokenizer, ids), layers, heads,
                         title=f"Attention weights of {Path(checkpoint).name} for a {len(ids)}-token prompt")
    return save_figure(fig, out_path)
