"""Fine-tuning a pretrained checkpoint on instruction-style medical data: the full model, or LoRA
adapters through `peft` on the attention and MLP projections (c_attn, c_proj, c_fc).

    lightbrain finetune --checkpoint models/lightbrain_tiny_v1.0.pt --data both --method lora --out DIR

writes, in DIR:
  model.pt        a standard LightBrain checkpoint (for LoRA: the adapters merged into the base
                  weights), so `lightbrain generate/eval/export --checkpoint DIR/model.pt` work as is
  adapter/        LoRA only: peft's adapter folder (adapter_config.json, adapter_model.safetensors)
                  plus lightbrain_adapter.json (the base it belongs to) and a model card
  finetune.json   settings, example counts, losses and, with --eval-pubmedqa, accuracy before and after
  metrics.jsonl   one {"kind": "train", ...} record per logged step, as `lightbrain plot` reads

`merge_adapter(base, adapter, out)` (`lightbrain finetune merge`) rebuilds the merged checkpoint from an
adapter folder and its base checkpoint; `load_with_adapter` applies an adapter on top of the base in memory.
The examples and the answer-only loss are in data/instructions.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from lightbrain import DISCLAIMER
from lightbrain.atomic_io import atomic_write_text, replace_folder
from lightbrain.config import ConfigError, TrainConfig, _apply_section, _read_yaml
from lightbrain.data.instructions import (DATA_CHOICES, PUBMEDQA_TASKS, EncodedExample, encode_example,
                                          load_examples, make_batch)
from lightbrain.training.checkpoint import CheckpointError, checkpoint_config, load_model, save_checkpoint
from lightbrain.training.utils import autocast_context, get_lr, grad_norm_entry, pick_device, pick_dtype

METHODS = ("lora", "full")
LORA_TARGETS = ["c_attn", "c_proj", "c_fc"]  # attention q/k/v and output, MLP in and out (suffix match)
ADAPTER_INFO = "lightbrain_adapter.json"
ADAPTER_FORMAT = "lightbrain-lora-adapter"


class FinetuneError(RuntimeError):
    pass


@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run reads; the `finetune:` section of a recipe, or `lightbrain finetune` flags."""

    checkpoint: str = "models/lightbrain_tiny_v1.0.pt"  # the pretrained base
    data: str = "both"  # pubmedqa | medquad | both
    source: str = "../shared/data"  # folder holding pubmedqa/ and/or medquad/
    pubmedqa_tasks: list[str] = field(default_factory=lambda: list(PUBMEDQA_TASKS))
    method: str = "lora"  # lora | full
    rank: int = 8
    alpha: float = 16.0  # LoRA scales its update by alpha / rank
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    learning_rate: float | None = None  # None: 1e-3 for LoRA, 1e-4 for full fine-tuning
    epochs: float = 1.0
    max_iters: int | None = None  # when set, replaces epochs
    batch_size: int = 16
    warmup_iters: int | None = None  # None: 5% of the steps
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    limit: int | None = None  # at most this many training examples per source (seeded choice)
    validation_one_in: int | None = None  # MedQuAD split rule; None: the base checkpoint's data setting
    eval_pubmedqa: bool = False  # accuracy on PubMedQA's test split before and after
    eval_examples: int = 256  # held-out MedQuAD pairs scored for the held-out answer loss (0: none)
    out_dir: str = "models/finetune"
    force: bool = False  # replace what an earlier run left in out_dir
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 1337
    log_interval: int = 10
    progress: bool = True

    def validate(self) -> "FinetuneConfig":
        for key, choices in (("method", METHODS), ("data", DATA_CHOICES)):
            if getattr(self, key) not in choices:
                raise ConfigError(f"finetune.{key} must be one of {', '.join(choices)}, got {getattr(self, key)!r}")
        unknown = [t for t in self.pubmedqa_tasks if t not in PUBMEDQA_TASKS]
        if unknown or not self.pubmedqa_tasks:
            raise ConfigError(f"finetune.pubmedqa_tasks: choose from {', '.join(PUBMEDQA_TASKS)}, got "
                              f"{', '.join(self.pubmedqa_tasks) or 'none'}")
        positive = {"rank": self.rank, "alpha": self.alpha, "batch_size": self.batch_size, "epochs": self.epochs,
                    "log_interval": self.log_interval}
        for key in ("max_iters", "limit", "validation_one_in", "learning_rate"):
            if getattr(self, key) is not None:
                positive[key] = getattr(self, key)
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"finetune.{key} must be positive, got {value}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"finetune.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.target_modules:
            raise ConfigError("finetune.target_modules is empty: name the Linear layers LoRA adapts, e.g. c_attn")
        return self

    @property
    def lr(self) -> float:
        return self.learning_rate or (1e-3 if self.method == "lora" else 1e-4)


def load_finetune_config(path: str | Path | None = None, **overrides: Any) -> FinetuneConfig:
    """A FinetuneConfig from a recipe's `finetune:` section (if a path is given), then keyword overrides
    (None values are skipped, so unset command-line flags keep the recipe's values)."""
    config = FinetuneConfig()
    if path is not None:
        data = _read_yaml(Path(path))
        extra = sorted(set(data) - {"finetune"})
        if extra:
            raise ConfigError(f"{path}: a fine-tuning recipe has one section, finetune; found {', '.join(extra)}")
        _apply_section(config, data.get("finetune") or {}, "finetune", str(path))
    _apply_section(config, {k: v for k, v in overrides.items() if v is not None}, "finetune", "command line")
    return config.validate()


# ---------------------------------------------------------------------------------------------
# LoRA through peft


def _require_peft():
    try:
        import peft
    except ImportError:
        raise FinetuneError("LoRA fine-tuning needs the `peft` package: pip install 'lightbrain[hf]'") from None
    return peft


def apply_lora(model: torch.nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.05,
               target_modules: Sequence[str] = LORA_TARGETS):
    """Wrap `model` in a peft model with LoRA adapters on `target_modules`; only the adapters train.
    The base model's Linear layers are replaced in place by LoRA layers holding them."""
    peft = _require_peft()
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    missing = [t for t in target_modules if t not in names]
    if missing:
        raise ConfigError(f"finetune.target_modules: the model has no Linear layer named {', '.join(missing)}; "
                          f"its Linear layers are {', '.join(sorted(names))}")
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                             bias="none")
    return peft.get_peft_model(model, config)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the names and bytes of the state dict: an adapter records its base's, so it is never
    merged onto other weights (the result would be meaningless)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode("utf-8") + b"\0" + str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _adapter_card(info: dict[str, Any]) -> str:
    lines = [
        "# LightBrain LoRA adapter", "",
        f"LoRA adapters (rank {info['rank']}, alpha {info['alpha']}) on {', '.join(info['target_modules'])} of a "
        f"LightBrain model, fine-tuned on {info['data']} instruction examples.", "",
        f"Base checkpoint: `{info['base_checkpoint']}` (weights sha256 `{info['base_fingerprint'][:16]}...`).", "",
        "Merge into a full checkpoint, then generate or evaluate with it:", "",
        "```",
        f"lightbrain finetune merge --base {info['base_checkpoint']} --adapter ADAPTER_DIR --out merged.pt",
        "lightbrain generate --checkpoint merged.pt -p $'Question: What is glaucoma?\\nAnswer:'",
        "```", "",
        f"_{DISCLAIMER}_", "",
    ]
    return "\n".join(lines)


def save_adapter(peft_model, folder: str | Path, info: dict[str, Any]) -> Path:
    """peft's adapter folder plus lightbrain_adapter.json (`info`) and a model card, written as a whole."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        peft_model.save_pretrained(str(tmp))
        atomic_write_text(tmp / ADAPTER_INFO, json.dumps({"format": ADAPTER_FORMAT, **info}, indent=2) + "\n")
        atomic_write_text(tmp / "README.md", _adapter_card(info))  # instead of peft's blank template
        replace_folder(tmp, folder)  # the old folder goes only once the new one is complete
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_adapter_info(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FinetuneError(f"adapter folder not found: {folder}")
    for name in ("adapter_config.json", ADAPTER_INFO):
        if not (folder / name).is_file():
            raise FinetuneError(f"{folder} is not a LightBrain adapter folder: it has no {name} "
                                "(`lightbrain finetune --method lora` writes one as OUT/adapter)")
    try:
        info = json.loads((folder / ADAPTER_INFO).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FinetuneError(f"{folder / ADAPTER_INFO} is not valid JSON: {exc}") from None
    if info.get("format") != ADAPTER_FORMAT:
        raise FinetuneError(f"{folder / ADAPTER_INFO}: format is {info.get('format')!r}, expected {ADAPTER_FORMAT!r}")
    return info


def load_with_adapter(base_checkpoint: str | Path, adapter: str | Path, device: str | torch.device = "cpu"):
    """(peft model in eval mode: base + adapter, tokenizer, base checkpoint dict). Refuses an adapter that
    was trained on other base weights."""
    peft = _require_peft()
    device = pick_device(device, setting="device")
    info = read_adapter_info(adapter)
    model, tokenizer, ckpt = load_model(base_checkpoint, "cpu")
    fingerprint = weights_fingerprint(model)
    if info.get("base_fingerprint") != fingerprint:
        raise FinetuneError(
            f"{adapter} was trained on other base weights than {base_checkpoint}'s (weights sha256 "
            f"{str(info.get('base_fingerprint'))[:16]}... vs {fingerprint[:16]}...); use the checkpoint it was "
            f"fine-tuned from: {info.get('base_checkpoint')}")
    peft_model = peft.PeftModel.from_pretrained(model, str(adapter))
    return peft_model.to(device).eval(), tokenizer, ckpt


def merge_adapter(base_checkpoint: str | Path, adapter: str | Path, out: str | Path) -> Path:
    """Merge an adapter into its base and write a standard LightBrain checkpoint at `out`."""
    peft_model, tokenizer, ckpt = load_with_adapter(base_checkpoint, adapter)
    info = read_adapter_info(adapter)
    merged = peft_model.merge_and_unload()
    metrics = dict(ckpt.get("metrics") or {})
    metrics["finetune"] = {k: info.get(k) for k in ("method", "data", "rank", "alpha", "iters", "examples",
                                                     "train_loss", "base_checkpoint")}
    return save_checkpoint(out, model=merged, config=checkpoint_config(ckpt), tokenizer=ckpt["tokenizer"],
                           iter_num=ckpt.get("iter_num", 0), best_val_loss=ckpt.get("best_val_loss"), metrics=metrics)


# ---------------------------------------------------------------------------------------------
# the loop


@torch.no_grad()
def answer_loss(model: torch.nn.Module, rows: Sequence[EncodedExample], pad_id: int, batch_size: int,
                device: torch.device, ctx) -> float | None:
    """Mean cross-entropy over the answer tokens of `rows` (every answer token weighs the same)."""
    if not rows:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        x, y = make_batch(rows[start:start + batch_size], pad_id)
        n = int((y >= 0).sum())
        with ctx:
            _, loss = model(x.to(device), y.to(device))
        total += loss.item() * n
        count += n
    model.train(was_training)
    return total / count


def _pubmedqa_accuracy(model, tokenizer, source: Path, batch_size: int) -> dict[str, Any]:
    from lightbrain.evaluation.medical_tasks import evaluate_pubmedqa, load_pubmedqa_test_items

    folder = source / "pubmedqa" if (source / "pubmedqa").is_dir() else source
    result = evaluate_pubmedqa(model, tokenizer, load_pubmedqa_test_items(folder), batch_size=batch_size,
                               progress=False, keep_predictions=False)
    return {k: result[k] for k in ("n_items", "accuracy", "macro_f1", "majority_baseline")}


def _batches(n: int, batch_size: int, seed: int):
    """Example indices, batch by batch, reshuffled every epoch, forever."""
    rng = random.Random(seed)
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield order[start:start + batch_size]


def _prepare_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FinetuneError(f"--out {out} exists and is not a folder")
    leftovers = [name for name in ("model.pt", "adapter", "finetune.json") if (out / name).exists()]
    if leftovers and not force:
        raise FinetuneError(f"{out} already holds {', '.join(leftovers)} from an earlier run; pass --force to "
                            "replace them, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune per `config`; returns the summary also written to OUT/finetune.json."""
    config.validate()
    out = Path(config.out_dir)
    base_path = Path(config.checkpoint)
    if not base_path.is_file():
        raise CheckpointError(f"base checkpoint not found: {base_path} (train one with `lightbrain train`, "
                              "or pass --checkpoint PATH)")
    _prepare_out_dir(out, config.force)
    device = pick_device(config.device, setting="finetune.device")
    dtype = pick_dtype(config.dtype, device)
    ctx = autocast_context(device, dtype)
    torch.manual_seed(config.seed)

    model, tokenizer, ckpt = load_model(base_path, "cpu")
    base_config = checkpoint_config(ckpt)
    one_in = config.validation_one_in or base_config.data.validation_one_in
    examples = load_examples(config.data, config.source, one_in, config.pubmedqa_tasks, config.limit, config.seed,
                             progress=config.progress)
    block = model.config.block_size
    train_rows = [encode_example(tokenizer, e, block) for e in examples["train"]]
    held_out = examples["validation"][:config.eval_examples] if config.eval_examples else []
    val_rows = [encode_example(tokenizer, e, block) for e in held_out]
    counts: dict[str, int] = {}
    for e in examples["train"]:
        counts[f"{e.source}/{e.task}"] = counts.get(f"{e.source}/{e.task}", 0) + 1

    iters = config.max_iters or max(1, math.ceil(config.epochs * len(train_rows) / config.batch_size))
    warmup = config.warmup_iters if config.warmup_iters is not None else iters // 20
    schedule = TrainConfig(learning_rate=config.lr, min_lr=config.lr / 10, warmup_iters=warmup, max_iters=iters)

    summary: dict[str, Any] = {
        "format": "lightbrain-finetune", "base_checkpoint": str(base_path), "method": config.method,
        "data": config.data, "source": str(config.source), "examples": counts, "held_out_examples": len(val_rows),
        "truncated_examples": sum(r.truncated for r in train_rows), "iters": iters,
        "epochs": iters * config.batch_size / len(train_rows), "learning_rate": config.lr,
        "settings": dataclasses.asdict(config), "disclaimer": DISCLAIMER,
    }
    model.to(device)
    if config.eval_pubmedqa:
        summary["pubmedqa_before"] = _pubmedqa_accuracy(model, tokenizer, Path(config.source), config.batch_size)
    summary["held_out_loss_before"] = answer_loss(model, val_rows, tokenizer.eot_id, config.batch_size, device, ctx)

    base_fingerprint = weights_fingerprint(model) if config.method == "lora" else None
    trainee = model
    if config.method == "lora":
        trainee = apply_lora(model, config.rank, config.alpha, config.lora_dropout, config.target_modules)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    trainee.train()
    # model.configure_optimizer takes only parameters that require grad: the adapters, under LoRA
    optimizer = model.configure_optimizer(config.weight_decay, config.lr, (0.9, 0.95), device.type)
    trainable = [p for p in trainee.parameters() if p.requires_grad]
    summary["trainable_parameters"] = sum(p.numel() for p in trainable)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    history: list[dict[str, Any]] = []
    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=iters, desc=f"finetune ({config.method})", unit="step", dynamic_ncols=True)
    batches = _batches(len(train_rows), config.batch_size, config.seed)
    elapsed = 0.0
    loss_value = None
    try:
        for it in range(iters):
            t0 = time.perf_counter()
            lr = get_lr(it, schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = make_batch([train_rows[i] for i in next(batches)], tokenizer.eot_id)
            n_tokens = int((y >= 0).sum())
            with ctx:
                _, loss = trainee(x.to(device), y.to(device))
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FinetuneError(f"the loss became {loss_value} at step {it}; nothing was saved. Try a lower "
                                    "--lr or --dtype float32")
            scaler.scale(loss).backward()
            grad_norm = None  # before clipping, as the trainer logs it
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            elapsed += dt
            if (it + 1) % config.log_interval == 0 or it == 0 or it + 1 == iters:
                record = {"kind": "train", "iter": it + 1, "loss": loss_value, "lr": lr,
                          "tokens_per_sec": x.numel() / dt, "answer_tokens": n_tokens, "elapsed_s": elapsed}
                if grad_norm is not None:
                    record["grad_norm"] = grad_norm_entry(grad_norm.item())[0]
                history.append(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({"loss": f"{loss_value:.3f}", "lr": f"{lr:.2e}"}, refresh=False)
    finally:
        if bar is not None:
            bar.close()

    trainee.eval()
    summary["train_loss"] = loss_value
    summary["train_seconds"] = elapsed
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    if config.method == "lora":
        info = {"method": "lora", "base_checkpoint": str(base_path), "base_fingerprint": base_fingerprint,
                "model_config": dataclasses.asdict(model.config), "tokenizer": tokenizer.name,
                "tokenizer_fingerprint": tokenizer.fingerprint(), "rank": config.rank, "alpha": config.alpha,
                "lora_dropout": config.lora_dropout, "target_modules": list(config.target_modules),
                "data": config.data, "examples": counts, "iters": iters, "train_loss": loss_value,
                "disclaimer": DISCLAIMER}
        save_adapter(trainee, out / "adapter", info)
        model = trainee.merge_and_unload()
        summary["adapter"] = str(out / "adapter")
    summary["held_out_loss_after"] = answer_loss(model, val_rows, tokenizer.eot_id, config.batch_size, device, ctx)
    metrics = dict(ckpt.get("metrics") or {})
    metrics["finetune"] = {k: summary[k] for k in ("method", "data", "examples", "iters", "train_loss",
                                                   "base_checkpoint")}
    save_checkpoint(out / "model.pt", model=model, config=base_config, tokenizer=ckpt["tokenizer"],
                    iter_num=ckpt.get("iter_num", 0), best_val_loss=ckpt.get("best_val_loss"), metrics=metrics)
    summary["checkpoint"] = str(out / "model.pt")
    if config.eval_pubmedqa:
        summary["pubmedqa_after"] = _pubmedqa_accuracy(model, tokenizer, Path(config.source), config.batch_size)
    atomic_write_text(out / "finetune.json", json.dumps(summary, indent=2) + "\n")
    return summary
