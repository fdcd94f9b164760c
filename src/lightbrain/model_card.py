"""MODEL_CARD.md beside each trained model: what it was trained on, how big it is, how long it trained,
how well it scores, what it is for and what it must not be used for.

`train()` writes it at the end of every run (rank 0), next to the best checkpoint in train.out_dir.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lightbrain import DISCLAIMER, __version__
from lightbrain.atomic_io import atomic_write_text
from lightbrain.config import LightBrainConfig

CARD_FILE = "MODEL_CARD.md"

PRIVACY = ("Clinical text is personal health information. If you train or fine-tune on clinical records, you are "
           "responsible for complying with the privacy law that applies to them (for example HIPAA in the United "
           "States or the GDPR in the European Union): use de-identified data, keep it under the access controls "
           "its licence and your institution require, and never publish a model trained on identifiable records.")


def _number(value: Any, fmt: str = ",") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, fmt)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _source_name(source: dict[str, Any]) -> str:
    where = source.get("path") or source.get("name") or "?"
    extra = f", config {source['config']}" if source.get("config") else ""
    return f"{source.get('type', '?')} ({where}{extra})"


def best_eval(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The evaluation record with the lowest validation loss (what the best checkpoint holds)."""
    evals = [h for h in history if h.get("kind") == "eval" and isinstance(h.get("val_loss"), (int, float))]
    return min(evals, key=lambda h: h["val_loss"], default=None)


def model_card(config: LightBrainConfig, meta: dict[str, Any], result: dict[str, Any], num_params: int,
               checkpoint_name: str, hardware: str | None = None) -> str:
    """The card's Markdown. `result` holds TrainResult's fields (iter_num, tokens_seen, train_seconds,
    stopped_by, best_val_loss, history); `meta` is the training data's meta.json."""
    m, t = config.model, config.train
    best = best_eval(result.get("history") or []) or {}
    tok_name = meta.get("tokenizer", {}).get("name", "?")
    embedding = (m.vocab_size or 0) * m.n_embd
    splits = meta.get("splits", {})
    tokens_seen = result.get("tokens_seen")
    train_tokens = splits.get("train", {}).get("tokens")
    epochs = f" (about {tokens_seen / train_tokens:.2f} passes over the training split)" \
        if tokens_seen and train_tokens else ""

    lines = [
        f"# Model card: {checkpoint_name}",
        "",
        f"> **{DISCLAIMER}**",
        "",
        f"A small decoder-only (GPT-style) language model for medical text, trained from scratch with "
        f"LightBrain {__version__}. Checkpoint: `{checkpoint_name}` (load it with "
        "`lightbrain.training.checkpoint.load_model`, or `lightbrain generate --checkpoint ...`).",
        "",
        "## Model",
        "",
        "| | |",
        "| --- | --- |",
        f"| architecture | {m.n_layer} layers x {m.n_head} heads x {m.n_embd} wide, context {m.block_size} tokens |",
        f"| components | {m.positional} positions, {m.norm}, {m.mlp} MLP, "
        f"{'tied' if m.tie_embeddings else 'untied'} embeddings{', QK-norm' if m.qk_norm else ''}"
        f"{', value residual' if m.value_residual else ''}{', embedding skip' if m.embedding_skip else ''}"
        f"{', U-net skips' if m.unet_skips else ''}"
        f"{', value embedding' if m.value_embedding else ''}{', attention gate' if m.attention_gate else ''}"
        f"{f', hashed bigram table of {m.bigram_embedding:,} rows' if m.bigram_embedding else ''}"
        f"{', token shift' if m.token_shift else ''}"
        f"{', attention masked at document ends' if m.document_mask else ''}"
        f"{f', logits soft-capped at {m.logit_softcap:g}' if m.logit_softcap else ''} |",
        f"| parameters | {num_params:,} (token embedding {embedding:,}"
        + (", shared with the output head)" if m.tie_embeddings else ")") + " |",
        f"| tokenizer | {tok_name}, vocabulary {_number(meta.get('vocab_size'))} (end-of-text id "
        f"{meta.get('eot_id', '-')}) |",
        "",
        "## Training data",
        "",
        "| source | documents |",
        "| --- | --- |",
    ]
    for source in meta.get("sources", []):
        lines.append(f"| {_source_name(source)} | {_number(source.get('documents'))} |")
    if not meta.get("sources"):
        lines.append("| (not recorded in meta.json) | - |")
    lines += ["", "| split | documents | tokens | UTF-8 bytes |", "| --- | --- | --- | --- |"]
    for name, s in splits.items():
        lines.append(f"| {name} | {_number(s.get('documents'))} | {_number(s.get('tokens'))} | "
                     f"{_number(s.get('bytes'))} |")
    if meta.get("split_rule"):
        lines += ["", f"Split rule: {meta['split_rule']}."]
    lines += [
        "",
        "## Training",
        "",
        "| | |",
        "| --- | --- |",
        f"| optimizer steps | {_number(result.get('iter_num'))} of max_iters {t.max_iters:,} "
        f"(stopped by {result.get('stopped_by', '-')}) |",
        f"| tokens seen | {_number(tokens_seen)}{epochs} |",
        f"| training time | {_duration(result.get('train_seconds'))} (optimizer steps only, evaluations excluded) |",
        f"| batch | {t.batch_size} sequences x {t.gradient_accumulation_steps} accumulation steps x "
        f"{m.block_size} tokens |",
        f"| schedule | {t.optimizer}, peak learning rate {t.learning_rate:g}, {t.lr_schedule} to "
        f"{t.resolved_min_lr:g} after {t.warmup_iters} warmup steps, weight decay {t.weight_decay:g} |",
        f"| precision and hardware | train.dtype={t.dtype}{': ' + hardware if hardware else ''} |",
        "",
        "## Metrics",
        "",
        "Estimated during training on random windows of each split "
        f"({t.eval_iters} batches per split); `lightbrain eval --checkpoint ...` scores the whole validation split.",
        "",
        "| | |",
        "| --- | --- |",
        f"| best validation loss | {_number(result.get('best_val_loss'), '.4f')} nats/token"
        + (f" (step {best['iter']})" if best else "") + " |",
        f"| perplexity at best | {_number(math.exp(best['val_loss']) if best else None, ',.1f')} |",
        f"| validation bits per byte at best | {_number(best.get('val_bpb'), '.4f')} |",
        f"| train loss at best | {_number(best.get('train_loss'), '.4f')} |",
        "",
        "## Intended use",
        "",
        "Research and teaching: studying how small language models learn medical language, comparing "
        "tokenizers, architectures and training recipes, and demonstrating each stage of building a model. "
        "Generated text is a sample of the model's learned statistics, useful for inspecting what it learned.",
        "",
        "## Limitations",
        "",
        f"- A model of {num_params / 1e6:.1f}M parameters trained on a small corpus writes fluent-looking text "
        "that is often false, outdated or self-contradictory, and states it with the same confidence as "
        "true text. It has no notion of truth, no citations and no knowledge beyond its training data.",
        f"- It sees at most {m.block_size} tokens of context and was trained on the sources above only; "
        "their selection, age and biases (for example towards English-language, US sources) carry over.",
        "- It was not evaluated for any clinical task, safety property or population, and must not be used "
        "for diagnosis, treatment, triage or any decision about a person's health.",
        "",
        "## Disclaimer",
        "",
        DISCLAIMER,
        "",
        PRIVACY,
        "",
    ]
    return "\n".join(lines)


def write_model_card(checkpoint: str | Path, config: LightBrainConfig, meta: dict[str, Any], result: dict[str, Any],
                     num_params: int, hardware: str | None = None) -> Path:
    """Write MODEL_CARD.md in the checkpoint's folder (atomically) and return its path."""
    checkpoint = Path(checkpoint)
    path = checkpoint.parent / CARD_FILE
    atomic_write_text(path, model_card(config, meta, result, num_params, checkpoint.name, hardware))
    return path
