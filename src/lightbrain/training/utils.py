"""Small pieces the training loop and the original Python usage share: loss estimates, the learning-rate
schedule, device and precision choice."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import math
import os
import shutil

import numpy as np
import torch

from lightbrain.config import TrainConfig
from lightbrain.data.loader import random_batch
from lightbrain.data.token_files import TokenFile

log = logging.getLogger("lightbrain.train")


def _tokens(data) -> np.ndarray:
    return data.tokens if isinstance(data, TokenFile) else np.asarray(data)


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, train_data, val_data, eval_iters: int = 50, batch_size: int = 32,
                  block_size: int | None = None, device: str | torch.device = "cpu", ctx=None,
                  seed: int = 0) -> dict[str, float]:
    """Mean loss over `eval_iters` random batches of each split: {"train": ..., "val": ...}.

    The batches come from their own generator seeded by `seed`, so estimating never disturbs the
    training run's random state (which keeps resumed runs exact).
    """
    block_size = block_size or model.config.block_size
    ctx = ctx or contextlib.nullcontext()
    was_training = model.training
    model.eval()
    out = {}
    for name, data in (("train", train_data), ("val", val_data)):
        if data is None:
            continue
        rng = np.random.default_rng([seed, 1 if name == "val" else 0])
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            x, y = random_batch(_tokens(data), block_size, batch_size, rng, device)
            with ctx:
                _, loss = model(x, y)
            losses[k] = loss.item()
        out[name] = losses.mean().item()
    model.train(was_training)
    return out


def get_lr(it: int, config: TrainConfig, time_fraction: float | None = None) -> float:
    """Linear warmup over warmup_iters, then cosine (or warmup-stable-decay, or constant) down to min_lr.

    The decay runs over lr_decay_iters (default max_iters). In a run stopped by a time budget, pass the
    fraction of the budget used: the schedule then follows whichever of the two is further along, so
    a time-boxed run still ends its decay at min_lr when its time is up.
    """
    lr, min_lr = config.learning_rate, config.resolved_min_lr
    decay_iters = config.lr_decay_iters or config.max_iters
    if it < config.warmup_iters:
        return lr * (it + 1) / (config.warmup_iters + 1)
    if config.lr_schedule == "constant":
        return lr
    if config.lr_schedule == "wsd":
        ratio = it / max(1, decay_iters)
    else:
        ratio = (it - config.warmup_iters) / max(1, decay_iters - config.warmup_iters)
    if time_fraction is not None:
        ratio = max(ratio, time_fraction)
    if ratio >= 1:
        return min_lr
    if config.lr_schedule == "wsd":
        stable = 1.0 - config.decay_fraction
        if ratio < stable:
            return lr
        return lr - (ratio - stable) / config.decay_fraction * (lr - min_lr)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (lr - min_lr)


def schedule_progress(it: int, config: TrainConfig, time_fraction: float | None = None) -> float:
    """How far along its schedule a run is, from 0 to 1: steps out of lr_decay_iters (default max_iters),
    or the fraction of the time budget used, whichever is further."""
    ratio = it / max(1, config.lr_decay_iters or config.max_iters)
    return min(1.0, max(ratio, time_fraction or 0.0))


def window_stage(stages: list[tuple[int, float]], progress: float, block_size: int) -> tuple[int, float | None]:
    """The piece length a step trains on at `progress` (0 to 1) through its schedule, and the fraction of training
    it lasts until: (block_size, None) once the short-window stages (TrainConfig.short_window_stages) are over."""
    return next(((length, until) for length, until in stages if progress < until), (block_size, None))


def pick_device(requested: str | torch.device = "auto", setting: str = "train.device") -> torch.device:
    """The torch device for `requested` ("auto": CUDA, then MPS, then the CPU; a torch.device is checked too). `setting` names where the
    request came from (a config key or a flag), so that an error points at what to change."""
    if requested != "auto":
        try:
            device = torch.device(requested)
        except RuntimeError as exc:
            raise ValueError(f"{setting}={requested!r} is not a device ({exc}); use auto, cpu, cuda, cuda:N "
                             "or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"{setting}={requested} but CUDA is not available; use {setting}=auto or cpu")
        if device.type == "mps" and not _mps_available():
            raise RuntimeError(f"{setting}={requested} but MPS is not available; use {setting}=auto or cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot work here, or None. Its default backend builds C++ kernels on a CPU and
    Triton kernels on a GPU; without those tools it fails only at the first step, deep in a traceback."""
    if device.type == "cpu":
        compilers = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
        if not any(shutil.which(c) for c in compilers):
            return f"no C++ compiler found ({', '.join(compilers)}), which it needs on a CPU"
    elif device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return "the triton package, which it needs on a GPU, is not installed"
    return None


@functools.cache
def cpu_bf16_is_fast() -> bool:
    """Whether this CPU's bf16 matrix products run through oneDNN (AVX-512 or AMX on x86, BF16 on Arm).
    Without it PyTorch falls back to a plain loop: on an AVX2-only AMD EPYC a 2048 x 2048 product ran at
    0.3 GFLOP/s in bf16 against 78 in fp32, and a step of the slow speedrun recipe took 32 s, 1.3 s in fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on CUDA where supported, else fp16 (with a GradScaler); fp32 on CPU and MPS.
    bf16 on CPU is opt-in (train.dtype=bfloat16): it is faster only on CPUs with native bf16 math, and
    where bf16 products have no fast path at all (cpu_bf16_is_fast) the request falls back to fp32 with a
    warning, as torch.autocast itself does for a dtype a device cannot run."""
    if requested == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if requested == "bfloat16" and device.type == "cpu" and not cpu_bf16_is_fast():
        log.warning("dtype bfloat16 asks for bf16 autocast, but this CPU has no fast bf16 matrix products "
                    "(oneDNN needs AVX-512, AMX or Arm BF16; torch reports %s): they would run tens of times "
                    "slower than float32, so this run uses float32", torch.backends.cpu.get_cpu_capability())
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[requested]


def autocast_context(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_norm_entry(norm: float) -> tuple[float | None, str]:
    """The gradient norm before clipping as metrics.jsonl records it, and as training.log says it. A float16
    overflow makes it inf; the loss scaler then skips the step, and JSON has no inf, so the record holds null."""
    if math.isfinite(norm):
        return norm, f", grad norm {norm:.3g}"
    return None, f", grad norm {norm} (a float16 overflow: the loss scaler skips this step)"
