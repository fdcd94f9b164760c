"""The training loop: AdamW (or Muon + AdamW), warmup + cosine, gradient accumulation, clipping,
mixed precision, DDP under torchrun, periodic evaluation, atomic checkpoints and exact resume.

Run it with `lightbrain train --config configs/tiny_cpu.yaml` or `train(load_config(...))`.
Multi-GPU: `torchrun --nproc_per_node=N -m lightbrain train ...` (any number of nodes).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from lightbrain.atomic_io import atomic_write_text, remove_stale_temps
from lightbrain.config import ConfigError, LightBrainConfig
from lightbrain.data.loader import BatchSampler, DataTooSmallError
from lightbrain.data.token_files import open_split, read_meta
from lightbrain.data.tokenizers import load_data_tokenizer
from lightbrain.evaluation.language_modeling import source_segments
from lightbrain.models.lightbrain_tiny import LightBrainTiny
from lightbrain.training.checkpoint import load_checkpoint, load_state_into, save_checkpoint, unwrap_model
from lightbrain.training.muon import BatchedMuon
from lightbrain.training.utils import (autocast_context, compile_unavailable, estimate_loss, get_lr, grad_norm_entry,
                                      pick_device, pick_dtype, schedule_progress, window_stage)
from lightbrain.training.weight_average import WeightAverage, restore_trained_weights

log = logging.getLogger("lightbrain.train")


class TrainingError(RuntimeError):
    pass


@dataclass
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_request: str) -> tuple[Distributed, torch.device]:
    """Join the process group when launched by torchrun (RANK/WORLD_SIZE set); otherwise one process."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Distributed(), pick_device(device_request)
    info = Distributed(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"]))
    use_cuda = torch.cuda.is_available() and device_request in ("auto", "cuda") or device_request.startswith("cuda")
    if use_cuda:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info, device


def checkpoint_paths(config: LightBrainConfig) -> tuple[Path, Path]:
    """(best checkpoint, resumable last checkpoint)."""
    best = Path(config.train.out_dir) / config.train.checkpoint_name
    return best, best.with_name(best.stem + ".last" + best.suffix)


def _setup_logging(log_dir: Path, is_main: bool) -> None:
    if not is_main:
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    log.setLevel(logging.INFO)
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    fh = logging.FileHandler(log_dir / "training.log", encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(fh)
    log.propagate = False


class MetricsLog:
    """metrics.jsonl (one JSON object per line) and TensorBoard, rank 0 only."""

    def __init__(self, log_dir: Path, enabled: bool):
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        self.path = log_dir / "metrics.jsonl"
        self.file = open(self.path, "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(log_dir / "tensorboard"))
        except ImportError:
            log.warning("tensorboard is not installed (pip install 'lightbrain[viz]'); logging JSONL only")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key not in ("kind", "iter") and isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(f"{record['kind']}/{key}", value, record["iter"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


@dataclass
class TrainResult:
    iter_num: int
    best_val_loss: float | None
    final_train_loss: float | None
    final_val_loss: float | None
    tokens_seen: int
    train_seconds: float
    stopped_by: str  # max_iters | time_budget | interrupted
    best_checkpoint: str
    last_checkpoint: str
    history: list[dict] = field(default_factory=list)


def _rng_state(sampler: BatchSampler) -> dict[str, Any]:
    state = {"torch_rng": torch.get_rng_state(), "sampler": sampler.state_dict()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(ckpt: dict[str, Any], sampler: BatchSampler) -> None:
    torch.set_rng_state(ckpt["torch_rng"])
    if torch.cuda.is_available() and "cuda_rng" in ckpt:
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
    sampler.load_state_dict(ckpt["sampler"])


def _trim_metrics(path: Path, iter_num: int) -> None:
    """Before a resumed run appends to metrics.jsonl, drop what the stopped run logged after its checkpoint
    (those steps are trained and logged again) and any line a kill cut short, so the file reads as one
    uninterrupted run. The eval at the checkpoint's own iteration was logged before it was saved and is
    repeated by the resumed run when due, so it goes too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        it = record.get("iter") if isinstance(record, dict) else None
        if not isinstance(it, int) or it < iter_num or (it == iter_num and record.get("kind") == "train"):
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))


def _weights_finite(model: torch.nn.Module) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def resolve_model_config(config: LightBrainConfig, meta: dict[str, Any]) -> None:
    """Fill model.vocab_size and model.eot_id from the data's tokenizer, or check they agree with it."""
    eot = meta.get("eot_id")
    if config.model.eot_id is None:
        config.model.eot_id = eot
    elif eot is not None and config.model.eot_id != eot:
        raise ConfigError(
            f"model.eot_id={config.model.eot_id}, but the prepared data's tokenizer ({meta['tokenizer'].get('name')}) "
            f"ends each document with id {eot}; set model.eot_id={eot} or null")
    vocab = int(meta["vocab_size"])
    if config.model.vocab_size is None:
        config.model.vocab_size = vocab
    elif config.model.vocab_size < vocab:
        raise ConfigError(
            f"model.vocab_size={config.model.vocab_size} is smaller than the prepared data's vocabulary ({vocab}, "
            f"tokenizer {meta['tokenizer'].get('name')}); set model.vocab_size={vocab} or null"
        )


def anneal_ranges(meta: dict[str, Any], repeats: dict[str, int],
                  data_dir: str) -> tuple[list[tuple[int, int, int]], list[str]]:
    """Where train.anneal_repeats' sources lie in the train split, as (start, end, n) for the sampler, and the
    named sources the split does not hold (skipped: a recipe's anneal should not stop a run on other data)."""
    split = meta["splits"]["train"]
    segments = source_segments(split)
    if not segments:
        raise TrainingError(
            f"{data_dir}/meta.json does not map the train split by source (data prepared with data.train_repeats, "
            "or before per-source counts were recorded), so train.anneal_repeats cannot find its sources: "
            "prepare the data again without data.train_repeats")
    types = [entry["type"] for entry in split["sources"]]
    missing = sorted(set(repeats) - set(types))
    return [(seg["start"], seg["end"], repeats[kind]) for seg, kind in zip(segments, types) if kind in repeats], missing


def build_optimizer(model: LightBrainTiny, config: LightBrainConfig, device: torch.device) -> list[torch.optim.Optimizer]:
    t = config.train
    adamw_decay = t.weight_decay if t.adamw_weight_decay is None else t.adamw_weight_decay
    if t.optimizer == "muon":
        if not hasattr(torch.optim, "Muon"):
            raise ConfigError("train.optimizer=muon needs torch.optim.Muon (PyTorch 2.9 or newer)")
        # Muon orthogonalises updates of hidden 2-D weights; embeddings, head, norms and biases stay on AdamW.
        hidden = [p for n, p in model.named_parameters() if p.dim() == 2 and ".h." in f".{n}"]
        hidden_ids = {id(p) for p in hidden}
        rest = [p for p in model.parameters() if id(p) not in hidden_ids]
        adamw = torch.optim.AdamW(
            [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": adamw_decay},
             {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}],
            lr=t.learning_rate, betas=(t.beta1, t.beta2), fused=device.type in ("cuda", "cpu"))  # one pass
        groups = [{"params": hidden}]
        if t.muon_split_qkv:
            # c_attn stacks the query, key and value weights by rows: BatchedMuon orthogonalises each on its own
            fused = {id(p) for n, p in model.named_parameters() if n.endswith("attn.c_attn.weight")}
            groups = [{"params": [p for p in hidden if id(p) not in fused]},
                      {"params": [p for p in hidden if id(p) in fused], "blocks": 3}]
        for group in groups:
            group["cautious"] = t.muon_cautious_decay
            group["row_norm"] = t.muon_row_norm
        muon = BatchedMuon(groups, lr=t.learning_rate * t.muon_lr_scale, weight_decay=t.weight_decay,
                           ns_steps=t.muon_ns_steps, momentum=t.muon_momentum,
                           adjust_lr_fn="match_rms_adamw")
        return [adamw, muon]
    return [model.configure_optimizer(adamw_decay, t.learning_rate, (t.beta1, t.beta2), device.type)]


def train(config: LightBrainConfig, resume: bool = False, progress: bool | None = None) -> TrainResult:
    """Train per `config`; returns a summary. Checkpoints and logs go where the config says."""
    t = config.train
    ddp, device = setup_distributed(t.device)
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    show_progress = (t.progress if progress is None else progress) and ddp.is_main
    log_dir = Path(t.log_dir)
    _setup_logging(log_dir, ddp.is_main)
    best_path, last_path = checkpoint_paths(config)

    data_dir = config.data_dir
    meta = read_meta(data_dir)
    resolve_model_config(config, meta)
    config.validate()
    tokenizer = load_data_tokenizer(data_dir)
    train_data = open_split(data_dir, "train")
    val_data = open_split(data_dir, "validation")
    block = config.model.block_size
    for name, data in (("train", train_data), ("validation", val_data)):
        if len(data) < block + 1:
            raise DataTooSmallError(
                f"{data.path}: the {name} split has {len(data)} tokens, fewer than one window of "
                f"model.block_size + 1 = {block + 1}; prepare more data or lower model.block_size")

    micro_steps = t.gradient_accumulation_steps // ddp.world_size
    if micro_steps < 1 or t.gradient_accumulation_steps % ddp.world_size:
        micro_steps = max(1, micro_steps)
        if ddp.is_main:
            log.warning("gradient_accumulation_steps=%d is not a multiple of the %d processes; each does %d",
                        t.gradient_accumulation_steps, ddp.world_size, micro_steps)
    tokens_per_step = t.batch_size * block * micro_steps * ddp.world_size

    torch.manual_seed(t.seed)
    model = LightBrainTiny(config.model).to(device)
    dtype = pick_dtype(t.dtype, device)
    ctx = autocast_context(device, dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    optimizers = build_optimizer(model, config, device)
    average = WeightAverage(model, t.ema_decay) if t.ema_decay > 0 else None
    lr_scales = [1.0, t.muon_lr_scale] if t.optimizer == "muon" else [1.0]  # build_optimizer's order: AdamW, Muon
    sampler = BatchSampler(train_data, block, t.batch_size, seed=t.seed, rank=ddp.rank, world_size=ddp.world_size)
    if sampler.overlapping and ddp.is_main:
        log.warning("the train split holds %d windows of %d tokens, fewer than one batch of %d x %d processes: "
                    "batches are random overlapping windows, so epochs repeat text", sampler.n_windows, block + 1,
                    t.batch_size, ddp.world_size)
    anneal, unannealed = anneal_ranges(meta, t.anneal_repeats, data_dir) if t.anneal_fraction > 0 else ([], [])
    annealed = {kind: n for kind, n in t.anneal_repeats.items() if kind not in unannealed}
    if unannealed and ddp.is_main:
        log.warning("train.anneal_repeats names %s, but the train split in %s holds none of its documents: %s",
                    ", ".join(unannealed), data_dir,
                    "those weights are skipped" if anneal else "there is nothing to anneal, so the anneal is off")
    if ddp.is_main:
        for stale in remove_stale_temps(best_path) + remove_stale_temps(last_path):
            log.info("removed %s, left by a run killed while writing a checkpoint", stale)

    iter_num, best_val_loss, resumed_seconds = 0, None, 0.0
    if resume:
        if last_path.is_file():
            ckpt = load_checkpoint(last_path)
            if ckpt["tokenizer"] != tokenizer.to_dict():
                raise TrainingError(
                    f"{last_path} was trained on token ids from another tokenizer ({ckpt['tokenizer'].get('name')}) "
                    f"than the one that prepared {data_dir} ({tokenizer.name}, fingerprint "
                    f"{tokenizer.fingerprint()[:12]}): resume on the data it was trained on, or start a new run "
                    "in another train.out_dir")
            load_state_into(model, ckpt["model"], source=str(last_path))
            try:  # with a weight average, "model" holds the average and the trained weights are kept beside it
                if average is not None:
                    average.load_state_dict(ckpt.get("weight_average"))
                elif ckpt.get("weight_average") is not None:
                    restore_trained_weights(list(model.parameters()), ckpt["weight_average"])
            except (KeyError, TypeError, ValueError) as exc:
                raise TrainingError(f"{last_path}: its weight_average does not fit this model ({exc})") from None
            for opt, state in zip(optimizers, ckpt["optimizer"]):
                opt.load_state_dict(state)
            if "scaler" in ckpt:
                scaler.load_state_dict(ckpt["scaler"])
            iter_num, best_val_loss = ckpt["iter_num"], ckpt["best_val_loss"]
            resumed_seconds = float(ckpt.get("train_seconds", 0.0))  # a time budget counts the earlier part too
            _restore_rng(ckpt, sampler)
            if ddp.is_main:
                _trim_metrics(log_dir / "metrics.jsonl", iter_num)
                log.info("resumed from %s at iteration %d", last_path, iter_num)
        elif ddp.is_main:
            log.info("no checkpoint at %s; starting from scratch", last_path)

    raw_model = model
    if t.compile:
        unavailable = compile_unavailable(device)
        if unavailable:
            log.warning("train.compile=true ignored, training without compiling: %s", unavailable)
        else:
            model = torch.compile(model, dynamic=False)  # train.short_window: one static graph per window length
    if ddp.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    metrics = MetricsLog(log_dir, ddp.is_main)
    if ddp.is_main:
        log.info("model: %s parameters; config %s", f"{raw_model.get_num_params():,}", json.dumps(config.to_dict()))
        log.info("device %s, dtype %s, %d process(es), %d tokens per optimizer step", device, dtype,
                 ddp.world_size, tokens_per_step)

    def averaged_weights():
        return average.swapped_in() if average is not None else nullcontext()

    def save(kind: str, metrics_now: dict[str, Any]) -> None:
        if iter_num == 0:
            # Nothing trained yet: the seed recreates these weights, and writing them would replace the
            # checkpoints of an earlier run in out_dir before this one has done anything.
            return
        if not _weights_finite(raw_model):  # every rank holds the same weights, so every rank stops here
            raise TrainingError(
                f"the model's weights hold NaN or infinity at iteration {iter_num}, so they were not saved over "
                f"the last good checkpoints ({best_path}, {last_path}). Try a lower train.learning_rate, "
                "train.dtype=float32 or train.grad_clip > 0, then resume")
        if not ddp.is_main:
            return
        state = {}
        if kind == "last":
            state = {"optimizer": [o.state_dict() for o in optimizers], "scaler": scaler.state_dict(),
                     "train_seconds": train_seconds, **_rng_state(sampler)}
            if average is not None:
                state["weight_average"] = average.state_dict()  # the trained weights, to resume from
        with averaged_weights():  # what evaluation measured is what gets saved
            save_checkpoint(best_path if kind == "best" else last_path, model=raw_model, config=config,
                            tokenizer=tokenizer.to_dict(), iter_num=iter_num, best_val_loss=best_val_loss,
                            metrics=metrics_now, training_state=state or None)

    def evaluate() -> dict[str, float]:
        with averaged_weights():
            # The same windows at every evaluation: choosing the best checkpoint then compares checkpoints on the
            # same text. Fresh windows each time added sampling noise that often outweighed the last few hundred
            # steps' progress, so a run's final weights lost to an earlier checkpoint's luckier sample.
            losses = estimate_loss(raw_model, train_data, val_data, t.eval_iters, t.batch_size, block, device, ctx,
                                   seed=t.seed)
        val_bytes = meta["splits"]["validation"].get("bytes") or 0
        val_tokens = meta["splits"]["validation"].get("tokens") or 0
        out = {"train_loss": losses["train"], "val_loss": losses["val"]}
        if val_bytes:
            out["val_bpb"] = losses["val"] / math.log(2) * val_tokens / val_bytes
        return out

    # Ctrl-C / SIGTERM: finish the current step, save, exit cleanly.
    stop_request = {"signal": None}

    def on_signal(signum, frame):
        if stop_request["signal"] is not None:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        stop_request["signal"] = signum

    previous_handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous_handlers[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not in the main thread: keep the default behaviour
            pass

    history: list[dict] = []
    last_eval: dict[str, float] = {}
    train_seconds = resumed_seconds
    tokens_seen = iter_num * tokens_per_step
    stopped_by = "max_iters"
    budget = t.time_budget_minutes * 60 if t.time_budget_minutes else None
    checkpoint_every = t.checkpoint_interval or t.eval_interval
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        if budget is None:
            bar = tqdm(total=t.max_iters, initial=iter_num, desc="train", unit="step", dynamic_ncols=True)
        else:
            # Under a time budget the run ends at whichever of max_iters and the budget comes first (as the lr
            # schedule does), so the bar shows that fraction; a step count out of max_iters would read 0%.
            bar = tqdm(total=100, desc="train", dynamic_ncols=True,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}{postfix}]")
    skipped_in_a_row = 0
    loss_value = None
    last_window = None
    stages = t.short_window_stages()  # (piece length, until this fraction of training), [] without short windows

    def should_stop() -> tuple[str | None, float | None]:
        """Why to stop now, if at all, and the fraction of the time budget used (None without one).
        Under DDP every rank follows rank 0's clock and signals, so all take the same decisions and lr."""
        reason = 0
        if iter_num >= t.max_iters:
            reason = 1
        elif budget is not None and train_seconds >= budget:
            reason = 2
        elif stop_request["signal"] is not None:
            reason = 3
        fraction = train_seconds / budget if budget is not None else 0.0
        if ddp.enabled:
            flag = torch.tensor([float(reason), fraction], dtype=torch.float64, device=device)
            dist.broadcast(flag, src=0)
            reason, fraction = int(flag[0].item()), float(flag[1].item())
        stop = {0: None, 1: "max_iters", 2: "time_budget", 3: "interrupted"}[reason]
        return stop, (fraction if budget is not None else None)

    try:
        while True:
            stop, time_fraction = should_stop()
            if stop == "interrupted":
                stopped_by = stop
                save("last", last_eval)
                break
            if iter_num % t.eval_interval == 0 or stop:
                last_eval = evaluate()
                record = {"kind": "eval", "iter": iter_num, "lr": get_lr(iter_num, t, time_fraction), **last_eval}
                history.append(record)
                metrics.write(record)
                if ddp.is_main:
                    log.info("eval iter %d: %s", iter_num, json.dumps(last_eval))
                # a NaN would never be beaten; iteration 0 is the untrained model
                val = last_eval["val_loss"]
                if iter_num > 0 and math.isfinite(val) and (best_val_loss is None or val < best_val_loss):
                    best_val_loss = last_eval["val_loss"]
                    save("best", last_eval)
            if iter_num % checkpoint_every == 0 or stop:
                save("last", last_eval)
            if stop:
                stopped_by = stop
                break

            t0 = time.perf_counter()
            lr = get_lr(iter_num, t, time_fraction)
            for opt, scale in zip(optimizers, lr_scales):
                for group in opt.param_groups:
                    group["lr"] = lr * scale
            progress = schedule_progress(iter_num, t, time_fraction)  # the anneal and short windows both follow it
            if anneal and not sampler.repeats and progress >= 1 - t.anneal_fraction:
                sampler.set_repeats(anneal)  # part of the sampler's state, so a resumed run stays annealed
                if ddp.is_main:
                    log.info("iter %d: anneal begins, windows from %s", iter_num,
                             ", ".join(f"{k} x{n}" for k, n in annealed.items()))
            window, until = window_stage(stages, progress, block)
            if window != last_window and stages and ddp.is_main:
                log.info("iter %d: training on windows of %d tokens%s", iter_num, window,
                         f" until {until:.0%} of training" if until is not None else "")
            last_window = window
            loss_sum = torch.zeros((), device=device)
            for micro in range(micro_steps):
                x, y = sampler.next_batch(device)
                if window != block:  # consecutive pieces of each window: the same tokens, none sees its predecessor
                    x, y = x.reshape(-1, window), y.reshape(-1, window)
                sync = not ddp.enabled or micro == micro_steps - 1
                with (nullcontext() if sync else model.no_sync()), ctx:
                    _, loss = model(x, y, return_logits=False)
                    loss = loss / micro_steps
                scaler.scale(loss).backward()
                loss_sum += loss.detach()
            if ddp.enabled:
                dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
            loss_value = loss_sum.item()
            if not math.isfinite(loss_value):
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                skipped_in_a_row += 1
                if not t.skip_nonfinite or skipped_in_a_row > 10:
                    raise TrainingError(
                        f"the loss became {loss_value} at iteration {iter_num}: training stopped. The last good "
                        f"checkpoints are intact ({best_path}, {last_path}). Try a lower train.learning_rate, "
                        "train.dtype=float32, or train.grad_clip > 0; train.skip_nonfinite=true skips such steps")
                log.warning("non-finite loss at iteration %d: step skipped", iter_num)
                iter_num += 1
                continue
            skipped_in_a_row = 0
            grad_norm = None  # before clipping; logged to show how often the clip bites
            if t.grad_clip > 0:
                for opt in optimizers:
                    scaler.unscale_(opt)
                grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), t.grad_clip)
            for opt in optimizers:
                scaler.step(opt)
            scaler.update()
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            if average is not None:
                average.update()
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            train_seconds += dt
            iter_num += 1
            tokens_seen += tokens_per_step
            if iter_num % t.log_interval == 0 or iter_num == 1:
                tok_s = tokens_per_step / dt
                record = {"kind": "train", "iter": iter_num, "loss": loss_value, "lr": lr,
                          "tokens_per_sec": tok_s, "elapsed_s": train_seconds, "tokens_seen": tokens_seen}
                norm_text = ""
                if grad_norm is not None:
                    record["grad_norm"], norm_text = grad_norm_entry(grad_norm.item())
                metrics.write(record)
                history.append(record)
                if ddp.is_main:
                    log.info("iter %d: loss %.4f, lr %.3g%s, %.0f tokens/s", iter_num, loss_value, lr, norm_text,
                             tok_s)
            if bar is not None:
                postfix = {"loss": f"{loss_value:.3f}", "lr": f"{lr:.2e}", "tok/s": f"{tokens_per_step / dt:,.0f}"}
                if budget is None:
                    bar.update(1)
                else:
                    bar.n = round(100 * min(1.0, max(iter_num / t.max_iters, train_seconds / budget)), 1)
                    bar.update(0)
                    postfix["step"] = iter_num
                    postfix["budget left"] = f"{max(0.0, budget - train_seconds) / 60:.1f}m"
                bar.set_postfix(postfix, refresh=False)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the main thread's handler
        stopped_by = "interrupted"
        save("last", last_eval)
    finally:
        if bar is not None:
            bar.close()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        metrics.close()

    if ddp.is_main:
        log.info("stopped (%s) at iteration %d after %.1f s of training; best val loss %s",
                 stopped_by, iter_num, train_seconds, best_val_loss)
    if ddp.enabled:
        dist.barrier()
        dist.destroy_process_group()
    result = TrainResult(iter_num=iter_num, best_val_loss=best_val_loss,
                         final_train_loss=last_eval.get("train_loss"), final_val_loss=last_eval.get("val_loss"),
                         tokens_seen=tokens_seen, train_seconds=train_seconds, stopped_by=stopped_by,
                         best_checkpoint=str(best_path), last_checkpoint=str(last_path), history=history)
    if ddp.is_main and best_path.is_file():
        from lightbrain.model_card import write_model_card

        write_model_card(best_path, config, meta, vars(result), raw_model.get_num_params(),
                         hardware=f"{str(dtype).removeprefix('torch.')} on {device.type}, {ddp.world_size} process(es)")
    return result
