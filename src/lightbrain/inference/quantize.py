"""Smaller weights for faster CPU generation (opt-in): bf16, or int8 with one scale per output row.

Decoding one token at a time reads every weight once per token and does little arithmetic with
it, so on a CPU its speed is set by how many bytes of weights it reads. The tied output head alone
(vocab x n_embd, 77 MB in fp32 for GPT-2's vocabulary) is the biggest read. bf16 halves the bytes;
int8 quarters them, and the whole seed model (about 30 MB) then fits in a large L3 cache.

    fast = quantize_for_inference(model, "int8")  # a copy for generation; `model` is untouched
    generate(fast, idx, 200, top_k=50)

The copy is for inference only: keep training and checkpoints in full precision. What each mode
costs in quality is measured by `python bench/run.py --only quality` (bits per byte on held-out text).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

MODES = ("bf16", "int8")


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (N, K) float -> (int8 (N, K), scale (N,) float32) with weight ~= int8 * scale[:, None].

    Symmetric, one scale per output row: a row's largest magnitude maps to 127."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale


def dequantized_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (M, K) @ (q * scale)^T in plain PyTorch: the reference, and the path where no kernel exists.
    Integers up to 127 are exact in bf16, so scaling the product's columns equals scaling the rows of q."""
    return F.linear(x, q.to(x.dtype)) * scale.to(x.dtype)


def int8_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (M, K) @ (q * scale)^T without materializing a float weight.

    On CPU this uses PyTorch's weight-only int8 kernel (the one its int8 LLM recipes use), which
    reads the int8 weight directly; it is fast only with bf16 activations, which int8 mode uses."""
    if x.device.type == "cpu" and hasattr(torch, "_weight_int8pack_mm"):
        return torch._weight_int8pack_mm(x.contiguous(), q, scale.to(x.dtype))
    return dequantized_matmul(x, q, scale)


class Int8Linear(nn.Module):
    """A Linear whose weight is stored as int8 rows with per-row scales (inference only)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        q, scale = quantize_rows(linear.weight)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = int8_matmul(x.reshape(-1, self.in_features), self.qweight, self.scale)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8Embedding(nn.Module):
    """Token embedding read from a tied Int8Linear head's rows, so the table is stored once, in int8."""

    def __init__(self, head: Int8Linear):
        super().__init__()
        self.register_buffer("qweight", head.qweight)  # the same tensors as the head's, not copies
        self.register_buffer("scale", head.scale)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.qweight[idx].to(self.scale.dtype) * self.scale[idx].unsqueeze(-1)


def quantize_if_asked(model: nn.Module, mode: str | None) -> nn.Module:
    """`model` itself for None or "none" (the CLI's default), else `quantize_for_inference(model, mode)`."""
    return model if mode in (None, "none") else quantize_for_inference(model, mode)


def quantize_for_inference(model: nn.Module, mode: str = "int8") -> nn.Module:
    """An eval-mode copy of `model` with smaller weights, for generation and evaluation only.

    "bf16": every weight and activation in bfloat16.
    "int8": every Linear (the blocks and the output head) holds int8 weights with per-row scales;
    embeddings, norms, biases and activations are bf16. A head tied to the token embedding stays
    tied: the embedding reads the head's int8 rows.
    """
    if mode not in MODES:
        raise ValueError(f"unknown quantization mode {mode!r}: choose one of {', '.join(MODES)}")
    tied = model.lm_head.weight is model.transformer.wte.weight
    fast = copy.deepcopy(model).eval()
    if mode == "int8":
        # quantize from the full-precision weights, before the rest is cast to bf16
        for parent in list(fast.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, Int8Linear(child))
        if tied:
            fast.transformer.wte = Int8Embedding(fast.lm_head)
    fast.to(torch.bfloat16)  # float parameters and buffers only: int8 weights keep their dtype
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast
