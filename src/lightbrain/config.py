"""Typed configuration: YAML recipes in `configs/` loaded into dataclasses and validated.

A recipe is a YAML mapping with up to three sections, `model`, `data` and `train`, and an optional
`inherit` list of other recipe files (relative to the recipe) applied first. Command-line overrides
use dotted keys: `train.learning_rate=3e-4`. Unknown keys and wrong types are errors that name the
key and suggest the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A recipe or override is wrong; the message names the key and the file."""


@dataclass
class ModelConfig:
    # None means "take it from the prepared data's tokenizer" (meta.json), so the two cannot disagree.
    vocab_size: int | None = 50257
    block_size: int = 128
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.1
    bias: bool = True
    # Architecture options; the defaults are the seed architecture, LightBrain-Tiny-v1.0.
    positional: str = "learned"  # learned | rope
    norm: str = "layernorm"  # layernorm | rmsnorm
    mlp: str = "gelu"  # gelu | swiglu | relu2
    qk_norm: bool = False
    tie_embeddings: bool = True
    logit_softcap: float = 0.0  # > 0: logits = cap * tanh(logits / cap); 0 leaves them as they are
    # How attention is computed, not what it computes: the weights and outputs are the same either way.
    attention: str = "sdpa"  # sdpa (PyTorch's fused kernels) | matmul (written out; faster on CPU in bf16)
    # How the residual projections (attention and MLP c_proj) start: scaled (GPT-2: normal, std 0.02 /
    # sqrt(2 n_layer)) | zero (each block starts as the identity and the first updates shape it)
    proj_init: str = "scaled"
    # Value residual: every layer after the first mixes its attention values with the first layer's,
    # v = m v + (1 - m) v_first, with m learned per layer (from 0.5). Neither GPT-2 nor Llama has it.
    value_residual: bool = False
    # Embedding skip: block i reads a * x + b * x0, x0 the token embedding, with a (from 1) and b (from 0)
    # learned per block. Neither GPT-2 nor Llama has it.
    embedding_skip: bool = False
    # U-net skips: the second half's blocks each add a learned share (from 0) of the output of the first half's
    # block at the mirrored depth (with 6 layers: block 3 gets block 2's, 4 gets 1's, 5 gets 0's). Neither GPT-2
    # nor Llama has them.
    unet_skips: bool = False
    # Value embedding: a second token embedding table, whose row for each token is added to the attention
    # values of every layer, v = v + g ve, with g learned per layer (from 0.5). Neither GPT-2 nor Llama has it.
    value_embedding: bool = False
    # Attention gate: each attention output is multiplied elementwise by sigmoid(W_g x), x the block's normed
    # input, before the output projection (one more C x C matrix per layer). Neither GPT-2 nor Llama has it.
    attention_gate: bool = False
    # > 0: a table of this many rows for (previous token, token) pairs, found by hashing the pair and added to
    # the token embedding; it starts at zero. Neither GPT-2 nor Llama has it.
    bigram_embedding: int = 0
    # Token shift: each position's input adds a learned per-channel share (from 0) of the previous token's
    # embedding, so the first layer sees each pair of tokens without attending. Neither GPT-2 nor Llama has it.
    token_shift: bool = False
    # Document mask: attention stays inside each document of a packed window. A token sees earlier tokens only up
    # to the nearest end-of-text token, which opens the next document as its first token. Neither GPT-2 nor
    # Llama has it.
    document_mask: bool = False
    # The end-of-text id that separates documents; None means "take it from the prepared data" (meta.json).
    eot_id: int | None = None
    # > 0: a training step (loss alone, with a backward pass, no soft-cap) computes the output layer and its
    # loss this many rows at a time, gradients included (ChunkedCrossEntropy): the same loss, less memory traffic
    loss_chunk_rows: int = 0

    def validate(self) -> None:
        if self.vocab_size is not None and self.vocab_size < 1:
            raise ConfigError(f"model.vocab_size must be positive, got {self.vocab_size}")
        for key in ("block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        _check_choice("model.positional", self.positional, ("learned", "rope"))
        _check_choice("model.norm", self.norm, ("layernorm", "rmsnorm"))
        _check_choice("model.mlp", self.mlp, ("gelu", "swiglu", "relu2"))
        _check_choice("model.attention", self.attention, ("sdpa", "matmul"))
        _check_choice("model.proj_init", self.proj_init, ("scaled", "zero"))
        if not (self.logit_softcap >= 0.0 and math.isfinite(self.logit_softcap)):
            raise ConfigError(f"model.logit_softcap must be 0 (off) or a positive number, got {self.logit_softcap}")
        if self.bigram_embedding < 0:
            raise ConfigError(f"model.bigram_embedding must be 0 (off) or a number of rows, got {self.bigram_embedding}")
        if self.eot_id is not None and (self.eot_id < 0 or (self.vocab_size and self.eot_id >= self.vocab_size)):
            raise ConfigError(f"model.eot_id must be a token id below model.vocab_size ({self.vocab_size}), "
                              f"got {self.eot_id}")
        if self.loss_chunk_rows < 0:
            raise ConfigError(
                f"model.loss_chunk_rows must be 0 (off) or a positive number of rows, got {self.loss_chunk_rows}")
        if self.loss_chunk_rows and self.logit_softcap:
            raise ConfigError("model.loss_chunk_rows needs model.logit_softcap=0: the chunked loss scores raw logits")
        if self.positional == "rope" and (self.n_embd // self.n_head) % 2:
            raise ConfigError("model.positional=rope needs an even head size (n_embd / n_head)")


@dataclass
class DataConfig:
    # Each source is a mapping such as {type: medquad, path: ../shared/data/medquad}; see docs/data.md.
    # The string "hub" means PubMedQA from the Hugging Face hub; a plain path is a local folder or file.
    sources: list[Any] = field(default_factory=lambda: ["hub"])
    tokenizer: str = "gpt2"  # gpt2 | medical-bpe
    bpe_vocab_size: int = 8192  # only for medical-bpe
    out_dir: str = "data/processed"
    validation_one_in: int = 20  # hash rule: 1 document in N goes to validation
    num_workers: int = 0  # 0 = all cores
    force: bool = False
    # {source type: n}: that source's training documents appear n times in train.bin (validation never),
    # to weight a small source up, e.g. {pubmedqa: 4, mts_dialog: 4}; unnamed sources appear once.
    train_repeats: dict[str, int] = field(default_factory=dict)

    def validate(self) -> None:
        _check_choice("data.tokenizer", self.tokenizer, ("gpt2", "medical-bpe"))
        if self.bpe_vocab_size < 260:
            raise ConfigError(f"data.bpe_vocab_size must be at least 260 (256 bytes + specials), got {self.bpe_vocab_size}")
        if self.validation_one_in < 2:
            raise ConfigError(f"data.validation_one_in must be at least 2, got {self.validation_one_in}")
        if not self.sources:
            raise ConfigError("data.sources is empty: name at least one source (see docs/data.md)")
        _check_source_counts("data.train_repeats", self.train_repeats)


def _check_source_counts(key: str, counts: dict[str, int]) -> None:
    """A {source type: n} mapping: known source types, whole numbers of copies from 1."""
    from lightbrain.data.sources import SOURCE_TYPES

    if not isinstance(counts, dict):
        raise ConfigError(f"{key} must be a mapping of source type to a number of copies, got {counts!r}")
    kinds = [k for k in SOURCE_TYPES if k != "folder"]  # a folder is read as the sources inside it
    for kind, times in counts.items():
        if kind not in kinds:
            raise ConfigError(f"{key}: unknown source type {kind!r}{_nearest(str(kind), kinds)}; "
                              f"expected one of {', '.join(kinds)}")
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ConfigError(f"{key}.{kind} must be a whole number of copies, 1 or more, got {times!r}")


@dataclass
class TrainConfig:
    # None = data.out_dir, where `lightbrain prepare` wrote the token files (one setting, not two to keep equal)
    data_dir: str | None = None
    out_dir: str = "models"
    log_dir: str = "logs"
    checkpoint_name: str = "lightbrain_tiny_v1.0.pt"
    batch_size: int = 32
    gradient_accumulation_steps: int = 32
    max_iters: int = 20000
    time_budget_minutes: float | None = None  # stop early when this much wall time has passed
    learning_rate: float = 1e-4
    # The original spec set min_lr 5e-4, above the 1e-4 peak, which would make "decay" a rise.
    # None means learning_rate / 10, the usual GPT-2 style floor.
    min_lr: float | None = None
    warmup_iters: int = 1000
    lr_decay_iters: int | None = None  # None = max_iters
    lr_schedule: str = "cosine"  # cosine | wsd (warmup-stable-decay) | constant
    decay_fraction: float = 0.2  # for wsd: the final fraction of steps that decays
    weight_decay: float = 0.1
    # the decay of the matrices AdamW updates (with muon, only the token tables: the embedding, which the output
    # layer shares, and the value embedding), set apart from Muon's; None = weight_decay
    adamw_weight_decay: float | None = None
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 0.5
    optimizer: str = "adamw"  # adamw | muon (Muon for 2-D hidden weights, AdamW for the rest)
    muon_lr_scale: float = 1.0  # with muon: Muon's lr = this x the scheduled lr (AdamW's), at every step
    muon_ns_steps: int = 5  # with muon: Newton-Schulz iterations that orthogonalise each update (PyTorch's default)
    muon_momentum: float = 0.95  # with muon: the momentum of its (Nesterov) gradient average (PyTorch's default)
    # with muon: cautious weight decay, which shrinks only the entries of each matrix that Muon's step is
    # already moving towards zero (where the update and the weight share a sign)
    muon_cautious_decay: bool = False
    # with muon: orthogonalise the query, key and value parts of each fused c_attn weight on their own
    # (three C x C matrices) rather than as one 3C x C matrix
    muon_split_qkv: bool = False
    # with muon, > 0: NorMuon's per-neuron normalisation; each row of an orthogonalised update is divided by
    # the root of a moving average (this is its beta, e.g. 0.95) of the row's mean square, and the matrix is
    # scaled back to its orthogonalised norm. 0 leaves Muon's updates as they are
    muon_row_norm: float = 0.0
    # > 0: the final fraction of training (counted as the lr schedule counts it: steps, or the time budget)
    # in which batches are drawn with anneal_repeats, e.g. to weight up small sources as the rate decays
    anneal_fraction: float = 0.0
    # {source type: n}: during the anneal, each window starting in that source's stretch of the train split
    # appears n times per epoch, e.g. {pubmedqa: 4, mts_dialog: 4}; other sources' windows appear once
    anneal_repeats: dict[str, int] = field(default_factory=dict)
    # > 0: for the first short_window_fraction of training (counted as the anneal counts it), each batch's
    # windows of model.block_size tokens are cut into windows of this many tokens: a step holds the same tokens
    # and takes less time (attention spans less), and the model still learns its full context at the end.
    # Lists give stages: short_window [128, 512] with short_window_fraction [0.5, 0.75] cuts windows into pieces
    # of 128 until half-way, of 512 until three quarters, and trains on whole windows after.
    short_window: int | list[int] = 0
    short_window_fraction: float | list[float] = 0.0
    # > 0: evaluate and save an exponential moving average of the weights (e.g. 0.99 averages ~100 steps)
    ema_decay: float = 0.0
    # auto = bf16 on CUDA where supported, else fp16 with a GradScaler on CUDA, fp32 on CPU/MPS.
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    compile: bool = False
    eval_interval: int = 500
    eval_iters: int = 50
    log_interval: int = 10
    checkpoint_interval: int | None = None  # None = every eval_interval
    seed: int = 1337
    num_threads: int | None = None  # CPU threads for torch; None = torch's default
    skip_nonfinite: bool = False  # False: stop on a non-finite loss; True: skip that step (up to 10 in a row)
    progress: bool = True

    def short_window_stages(self) -> list[tuple[int, float]]:
        """(piece length, until this fraction of training) for each stage of short windows, checked; [] if off."""
        lengths, fractions = self.short_window, self.short_window_fraction
        fractions = fractions if isinstance(fractions, list) else [fractions]
        for fraction in fractions:
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
                raise ConfigError(f"train.short_window_fraction must be in [0, 1), got {self.short_window_fraction}")
        if not isinstance(lengths, list):
            if lengths == 0:
                return []
            lengths = [lengths]
        if len(lengths) != len(fractions):
            raise ConfigError(f"train.short_window {self.short_window} and train.short_window_fraction "
                              f"{self.short_window_fraction} must give one fraction per length")
        for length in lengths:
            if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
                raise ConfigError(f"train.short_window must be >= 0 (0 turns it off) or a list of positive "
                                  f"lengths, got {self.short_window}")
        if not all(fractions):
            raise ConfigError(f"train.short_window is {self.short_window} but train.short_window_fraction is "
                              f"{self.short_window_fraction}: say for what fraction of training to use it, "
                              "e.g. train.short_window_fraction=0.5")
        if any(b <= a for a, b in zip(lengths, lengths[1:])) or any(b <= a for a, b in zip(fractions, fractions[1:])):
            raise ConfigError(f"train.short_window {self.short_window} and train.short_window_fraction "
                              f"{self.short_window_fraction} must both rise from stage to stage")
        return [(length, float(fraction)) for length, fraction in zip(lengths, fractions)]

    def validate(self) -> None:
        for key in ("batch_size", "gradient_accumulation_steps", "max_iters", "eval_interval", "eval_iters", "log_interval"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be at least 1, got {getattr(self, key)}")
        if not self.learning_rate > 0:
            raise ConfigError(f"train.learning_rate must be positive, got {self.learning_rate}")
        if self.min_lr is not None and not 0 <= self.min_lr <= self.learning_rate:
            raise ConfigError(
                f"train.min_lr ({self.min_lr}) must lie between 0 and train.learning_rate ({self.learning_rate}); "
                "a floor above the peak is not a decay"
            )
        if self.warmup_iters < 0:
            raise ConfigError(f"train.warmup_iters must be >= 0, got {self.warmup_iters}")
        if self.time_budget_minutes is not None and self.time_budget_minutes <= 0:
            raise ConfigError(f"train.time_budget_minutes must be positive, got {self.time_budget_minutes}")
        if self.grad_clip < 0:
            raise ConfigError(f"train.grad_clip must be >= 0 (0 disables), got {self.grad_clip}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if self.adamw_weight_decay is not None and self.adamw_weight_decay < 0:
            raise ConfigError(f"train.adamw_weight_decay must be >= 0 or null, got {self.adamw_weight_decay}")
        if not self.muon_lr_scale > 0:
            raise ConfigError(f"train.muon_lr_scale must be positive, got {self.muon_lr_scale}")
        if not 1 <= self.muon_ns_steps < 100:  # torch.optim.Muon refuses 100 or more
            raise ConfigError(f"train.muon_ns_steps must be from 1 to 99, got {self.muon_ns_steps}")
        if not 0.0 <= self.muon_momentum < 1.0:
            raise ConfigError(f"train.muon_momentum must be in [0, 1), got {self.muon_momentum}")
        if not 0.0 <= self.muon_row_norm < 1.0:
            raise ConfigError(f"train.muon_row_norm must be in [0, 1) (0 turns it off), got {self.muon_row_norm}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in [0, 1) (0 turns the average off), got {self.ema_decay}")
        if not 0.0 <= self.anneal_fraction < 1.0:
            raise ConfigError(f"train.anneal_fraction must be in [0, 1) (0 turns the anneal off), got {self.anneal_fraction}")
        _check_source_counts("train.anneal_repeats", self.anneal_repeats)
        if self.anneal_fraction > 0 and not self.anneal_repeats:
            raise ConfigError("train.anneal_fraction is set but train.anneal_repeats is empty: name the sources to "
                              "weight up, e.g. train.anneal_repeats='{pubmedqa: 4}'")
        self.short_window_stages()  # checks the two keys against each other
        if not 0 < self.decay_fraction <= 1:
            raise ConfigError(f"train.decay_fraction must be in (0, 1], got {self.decay_fraction}")
        _check_choice("train.dtype", self.dtype, ("auto", "float32", "bfloat16", "float16"))
        _check_choice("train.lr_schedule", self.lr_schedule, ("cosine", "wsd", "constant"))
        _check_choice("train.optimizer", self.optimizer, ("adamw", "muon"))

    @property
    def resolved_min_lr(self) -> float:
        return self.learning_rate / 10 if self.min_lr is None else self.min_lr


@dataclass
class LightBrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "LightBrainConfig":
        self.model.validate()
        self.data.validate()
        self.train.validate()
        block = self.model.block_size
        for short, _ in self.train.short_window_stages():
            if short >= block or block % short:
                raise ConfigError(f"train.short_window ({short}) must divide model.block_size ({block}) and be "
                                  f"smaller than it, e.g. {block // 2}, or 0 to train on whole windows throughout")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def data_dir(self) -> str:
        """The prepared token files training reads: train.data_dir if set, else data.out_dir."""
        return self.train.data_dir or self.data.out_dir


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        hint = difflib.get_close_matches(str(value), choices, n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}{extra}")


def _nearest(name: str, options: list[str]) -> str:
    hint = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check `value` against a dataclass field annotation; allow int -> float, reject the rest."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__} {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping such as {{key: value}}, got {type(value).__name__} {value!r}")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _apply_section(obj: Any, values: dict[str, Any], section: str, source: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section {section!r} must be a mapping of keys to values")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{source}: unknown key {section}.{key}{_nearest(key, names)}")
        setattr(obj, key, _coerce(value, hints[key], f"{source}: {section}.{key}"))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping with sections model/data/train")
    return data


def _apply_file(cfg: LightBrainConfig, path: Path, seen: tuple[Path, ...] = ()) -> None:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: inherits itself through {' -> '.join(str(p) for p in seen)}")
    data = _read_yaml(path)
    inherit = data.pop("inherit", [])
    if isinstance(inherit, str):
        inherit = [inherit]
    for parent in inherit:
        _apply_file(cfg, (path.parent / parent), seen + (path,))
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{path}: unknown section {section!r}{_nearest(section, list(SECTIONS) + ['inherit'])}")
        _apply_section(getattr(cfg, section), values, section, str(path))


def parse_override(text: str) -> tuple[str, str, Any]:
    """`train.learning_rate=3e-4` -> ("train", "learning_rate", 0.0003); values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. train.learning_rate=3e-4")
    dotted, raw = text.split("=", 1)
    if dotted.count(".") != 1:
        raise ConfigError(f"override {text!r}: the key must be section.key, e.g. train.max_iters=100")
    section, key = dotted.strip().split(".")
    if section not in SECTIONS:
        raise ConfigError(f"override {text!r}: unknown section {section!r}{_nearest(section, list(SECTIONS))}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads 3e-4 as a string (no dot); numbers written that way are meant as floats.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in "eE.") else value
        except ValueError:
            pass
    return section, key, value


def load_config(*paths: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LightBrainConfig:
    """Build a validated config from recipe files (applied in order) and `section.key=value` overrides."""
    cfg = LightBrainConfig()
    for path in paths:
        _apply_file(cfg, Path(path))
    for text in overrides:
        section, key, value = parse_override(text)
        _apply_section(getattr(cfg, section), {key: value}, section, "override")
    return cfg.validate()


def config_from_dict(data: dict[str, Any]) -> LightBrainConfig:
    """Rebuild a config saved with `to_dict()` (checkpoints store one)."""
    cfg = LightBrainConfig()
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown section {section!r}{_nearest(section, list(SECTIONS))}")
        _apply_section(getattr(cfg, section), values, section, "saved config")
    return cfg.validate()
