"""Muon with its Newton-Schulz iterations batched over the matrices that share a shape.

PyTorch's `torch.optim.Muon` orthogonalises one matrix at a time. A small model's matrices are small
(the speedrun recipe's largest is 768 x 256), and 30 rounds of five small products leave two CPU cores
half idle. Each layer holds the same shapes, so this class stacks the matrices of one shape and runs
the same iterations on the stack with batched products: on 2 cores an update of the recipe's 30
matrices took 53 ms instead of 96 (`bench/muon_step.py`; `bench/train_step.py` times the whole step).

The arithmetic is PyTorch's: momentum and Nesterov, the same quintic coefficients in bfloat16 (in fp32
on a CPU whose bf16 products have no fast path, where bf16 would make a step many times longer), each
matrix scaled by its own norm, the same learning-rate adjustment and decoupled weight decay. Only the
grouping differs, so states and checkpoints are interchangeable with `torch.optim.Muon`'s (unless a
group asks for row normalisation, which keeps a second state per matrix).
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from lightbrain.training.utils import cpu_bf16_is_fast

# torch.optim.Muon arrived in PyTorch 2.9; build_optimizer says so if it is missing.
_Muon = getattr(torch.optim, "Muon", torch.optim.Optimizer)


def orthogonalize(updates: torch.Tensor, coefficients: tuple[float, float, float], steps: int,
                  eps: float, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Approximately orthogonalise each matrix of a (batch, rows, cols) stack, computing in `dtype`."""
    a, b, c = coefficients
    tall = updates.size(-2) > updates.size(-1)
    # Iterate on the wide orientation, so the Gram matrices are the small side squared; contiguous
    # operands keep the batched products on the fast path.
    x = (updates.mT if tall else updates).to(dtype).contiguous()
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = torch.bmm(x, x.mT)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b G + c G^2
        x = torch.baddbmm(x, poly, x, beta=a)  # a X + (b G + c G^2) X
    return x.mT if tall else x


def _iteration_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "cpu" and not cpu_bf16_is_fast() else torch.bfloat16


def _adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr


class BatchedMuon(_Muon):
    """`torch.optim.Muon` (same arguments, same state) that orthogonalises same-shaped matrices together.

    A param group may also say `blocks: k`: each of its matrices is then k matrices stacked by rows
    (a fused query/key/value weight, k = 3), and each is orthogonalised, and its step sized, on its own;
    and `cautious: True`: weight decay then shrinks only the entries that the step itself moves towards
    zero (where the orthogonalised update and the weight share a sign), and leaves the others alone;
    and `row_norm: beta` (0 < beta < 1): NorMuon's per-neuron normalisation. Each row of the orthogonalised
    update is divided by the root of a moving average (with this beta) of its mean square, and the matrix is
    then scaled back to the orthogonalised update's norm, so rows that keep getting large updates take
    smaller ones while the step's overall size stays Muon's.
    """

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            buffers: list[torch.Tensor] = []
            self._init_group(group, params, grads, buffers)
            if not params:
                continue
            momentum = group["momentum"]
            torch._foreach_lerp_(buffers, grads, 1 - momentum)
            updates = torch._foreach_lerp(grads, buffers, momentum) if group["nesterov"] else buffers
            blocks = group.get("blocks", 1)
            # each parameter as (blocks, rows / blocks, cols): matrices to orthogonalise, grouped by shape
            views = [p.view(blocks, -1, p.size(-1)) for p in params]
            update_views = [u.view(blocks, -1, u.size(-1)) for u in updates]
            by_shape: dict[torch.Size, list[int]] = defaultdict(list)
            for i, v in enumerate(views):
                by_shape[v.shape[1:]].append(i)
            lr, decay, cautious = group["lr"], group["weight_decay"], group.get("cautious", False)
            if not cautious:
                for p in params:
                    p.mul_(1 - lr * decay)
            for shape, members in by_shape.items():
                stack = torch.cat([update_views[i] for i in members])
                ortho = orthogonalize(stack, group["ns_coefficients"], group["ns_steps"], group["eps"],
                                      _iteration_dtype(stack.device))
                if group.get("row_norm"):
                    ortho = self._normalize_rows(ortho, [params[i] for i in members], blocks, group["row_norm"])
                step_size = _adjusted_lr(lr, group["adjust_lr_fn"], shape)
                for row, i in enumerate(members):
                    update = ortho[row * blocks:(row + 1) * blocks]
                    if cautious and decay:
                        # the step subtracts the update: where it shares the weight's sign, both shrink it
                        views[i].sub_(views[i] * (update * views[i] > 0), alpha=lr * decay)
                    views[i].add_(update, alpha=-step_size)
        return loss

    def _normalize_rows(self, ortho: torch.Tensor, params: list[torch.Tensor], blocks: int,
                        beta: float) -> torch.Tensor:
        """Divide each row of a stack of orthogonalised updates by its moving root mean square (kept per
        parameter in fp32 as `row_second_moment`), then restore each matrix's norm."""
        moments = []
        for p in params:
            state = self.state[p]
            if "row_second_moment" not in state:
                state["row_second_moment"] = torch.zeros(p.size(0), 1, dtype=torch.float32, device=p.device)
            moments.append(state["row_second_moment"].view(blocks, -1, 1))
        update = ortho.float()
        torch._foreach_lerp_(moments, list(update.square().mean(dim=-1, keepdim=True).split(blocks)), 1 - beta)
        moment = torch.cat(moments)
        normalized = update / (moment.sqrt() + 1e-8)
        scale = update.norm(dim=(-2, -1), keepdim=True) / normalized.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-12)
        return normalized * scale
