"""Hugging Face Transformers export and import.

Two LightBrain architectures are exactly a Transformers class, so a checkpoint becomes a folder that
`AutoModelForCausalLM.from_pretrained(folder)` loads with no custom code:

  seed (learned positions, LayerNorm, GELU)      -> GPT2LMHeadModel
  speedrun (rotary positions, RMSNorm, SwiGLU)   -> LlamaForCausalLM

Both with or without biases and tied embeddings, never with qk_norm, a logit softcap or a value residual; any
other mix is refused, naming the options that do not fit. The folder holds:

  config.json             GPT2Config or LlamaConfig with the model's sizes, eps 1e-5, tying
  model.safetensors       the weights in that class's names (one small mapping function per family:
                          GPT-2 keeps projections in Conv1D, stored (in, out), so those are transposed;
                          Llama splits the fused q/k/v projection into three)
  generation_config.json  end-of-text ids and max_length = block_size (the model never saw more)
  tokenizer.json          a `tokenizers` byte-level BPE: GPT-2's rebuilt from tiktoken, or the
  tokenizer_config.json   trained medical BPE exactly as the checkpoint stores it
  lightbrain.json         what a round trip needs: the full recipe, tokenizer name, training counters
  README.md               a model card that carries lightbrain.DISCLAIMER

`import_hf(folder)` reads such a folder back into (LightBrainTiny, tokenizer); it also reads GPT-2
and Llama folders saved by Transformers itself (safetensors weights, no lightbrain.json) when their
settings are ones LightBrain can run.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from lightbrain import DISCLAIMER, __version__
from lightbrain.atomic_io import atomic_write_text, replace_folder
from lightbrain.config import LightBrainConfig, ModelConfig, config_from_dict
from lightbrain.data.tokenizers import EOT, GPT2Tokenizer, MedicalBPETokenizer, _byte_level_inverse

# GPT-2 stores these projections as Conv1D, (in_features, out_features): transpose on the way.
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
NORMS = ("ln_1.weight", "ln_2.weight", "ln_f.weight")
EXPORT_INFO = "lightbrain.json"
WEIGHTS = "model.safetensors"


class ExportError(RuntimeError):
    pass


def _require_transformers():
    try:
        import transformers
    except ImportError:
        raise ExportError("Hugging Face export needs the `transformers` package: pip install 'lightbrain[hf]'") from None
    return transformers


# The options that decide the family; qk_norm, logit_softcap, value_residual, embedding_skip, unet_skips,
# value_embedding, attention_gate, bigram_embedding, token_shift and document_mask must be off in both, bias and
# tying may be anything.
FAMILIES = {
    "gpt2": {"positional": "learned", "norm": "layernorm", "mlp": "gelu"},
    "llama": {"positional": "rope", "norm": "rmsnorm", "mlp": "swiglu"},
}
FAMILY_NAMES = {"gpt2": "GPT-2", "llama": "Llama"}
EXPORTABLE = ("positional=learned, norm=layernorm, mlp=gelu (the seed architecture) as GPT2LMHeadModel, "
              "and positional=rope, norm=rmsnorm, mlp=swiglu (the speedrun architecture) as LlamaForCausalLM, "
              "both with qk_norm=false, logit_softcap=0, value_residual=false, embedding_skip=false, unet_skips=false, "
              "value_embedding=false, attention_gate=false, bigram_embedding=0, token_shift=false and "
              "document_mask=false")
ROPE_THETA = 10000.0  # the base of lightbrain_tiny.rope_tables


def export_family(config: ModelConfig) -> str:
    """'gpt2' or 'llama': the Transformers family this architecture is exactly.

    Otherwise an ExportError naming the options that differ from the nearest family.
    """
    gaps = {family: [f"model.{key}={getattr(config, key)} ({FAMILY_NAMES[family]} needs {value})"
                     for key, value in wanted.items() if getattr(config, key) != value]
            for family, wanted in FAMILIES.items()}
    extras = []  # options neither family has
    if config.qk_norm:
        extras.append("model.qk_norm=true (neither GPT-2 nor Llama has a query/key norm)")
    if config.logit_softcap:
        extras.append(f"model.logit_softcap={config.logit_softcap} (neither GPT-2 nor Llama caps its logits)")
    if config.value_residual:
        extras.append("model.value_residual=true (neither GPT-2 nor Llama mixes the first layer's values into later ones)")
    if config.embedding_skip:
        extras.append("model.embedding_skip=true (neither GPT-2 nor Llama feeds the token embedding to every block)")
    if config.unet_skips:
        extras.append("model.unet_skips=true (neither GPT-2 nor Llama adds early blocks' outputs to late blocks)")
    if config.value_embedding:
        extras.append("model.value_embedding=true (neither GPT-2 nor Llama adds an embedding to the attention values)")
    if config.attention_gate:
        extras.append("model.attention_gate=true (neither GPT-2 nor Llama gates its attention output)")
    if config.bigram_embedding:
        extras.append(f"model.bigram_embedding={config.bigram_embedding} (neither GPT-2 nor Llama embeds token pairs)")
    if config.token_shift:
        extras.append("model.token_shift=true (neither GPT-2 nor Llama mixes the previous token's embedding into each input)")
    if config.document_mask:
        extras.append("model.document_mask=true (neither GPT-2 nor Llama stops attention at an end-of-text token)")
    if not extras:
        for family, gap in gaps.items():
            if not gap:
                return family
    nearest = min(len(gap) for gap in gaps.values())
    problems = [problem for gap in gaps.values() if len(gap) == nearest for problem in gap] + extras
    raise ExportError(
        "this model cannot be exported to Transformers because of " + "; ".join(problems)
        + f". Two combinations are exportable: {EXPORTABLE}; model.bias and model.tie_embeddings may take "
        "either value. Use the LightBrain checkpoint directly for this model."
    )


def swiglu_width(n_embd: int) -> int:
    """The hidden width LightBrain's SwiGLU MLP has at this model width, read off the module itself."""
    from lightbrain.models.lightbrain_tiny import MLP

    with torch.device("meta"):  # shapes only, no memory
        return MLP(ModelConfig(n_embd=n_embd, n_head=1, mlp="swiglu", bias=False)).c_fc.out_features


def _refuse_mismatches(source: str, what: str, checks: list[tuple[str, Any, bool, str]]) -> None:
    """checks: (config key, value found, fits, what LightBrain expects)."""
    bad = [f"{key}={found!r} ({expected})" for key, found, fits, expected in checks if not fits]
    if bad:
        raise ExportError(f"{source}: cannot import this {what}: " + "; ".join(bad))


def _tie_head(out: dict[str, torch.Tensor], config: ModelConfig, source: str, embedding: str) -> None:
    """Check the token embedding is there; point a tied head at it, or demand the untied one."""
    if "transformer.wte.weight" not in out:
        raise ExportError(f"{source}: the weights have no token embedding ({embedding})")
    if config.tie_embeddings:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    elif "lm_head.weight" not in out:
        raise ExportError(f"{source}: config.json says tie_word_embeddings=false but the weights have no lm_head.weight")


# ---------------------------------------------------------------------------------------------
# GPT-2: weights and config


def to_gpt2_state_dict(state_dict: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """LightBrain state dict -> GPT2LMHeadModel's names and layouts (contiguous copies, safetensors-ready).

    Bias-free models get zero biases (GPT-2 always has them); a tied head is left out, as
    Transformers re-ties it from transformer.wte.weight when loading.
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if name == "lm_head.weight" and config.tie_embeddings:
            continue
        if name.endswith(CONV1D):
            tensor = tensor.t()
        out[name] = tensor.detach().cpu().contiguous().clone()
    if not config.bias:
        for name in [n for n in out if n.endswith(CONV1D + NORMS)]:
            # after the transpose a Conv1D weight is (in, out): its bias has `out` entries
            size = out[name].shape[1] if name.endswith(CONV1D) else out[name].shape[0]
            out[name[: -len("weight")] + "bias"] = torch.zeros(size, dtype=out[name].dtype)
    return out


def from_gpt2_state_dict(hf_state: dict[str, torch.Tensor], config: ModelConfig,
                         source: str = "the folder") -> dict[str, torch.Tensor]:
    """GPT2LMHeadModel weights (with or without the `transformer.` prefix) -> a LightBrain state dict."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in hf_state.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers that old GPT-2 files carry
        if not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name  # the original OpenAI/hub GPT-2 files have no prefix
        if name.endswith(CONV1D):
            tensor = tensor.t()
        out[name] = tensor.contiguous()
    _tie_head(out, config, source, "transformer.wte.weight")
    if not config.bias:
        for name in [n for n in out if n.endswith(".bias")]:
            if torch.count_nonzero(out[name]):
                raise ExportError(f"{source}: {EXPORT_INFO} says model.bias=false but {name} is not all zeros")
            del out[name]
    return out


def gpt2_config(config: ModelConfig, eot_id: int):
    """The transformers.GPT2Config equivalent to a LightBrain model config."""
    transformers = _require_transformers()
    return transformers.GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=4 * config.n_embd,
        activation_function="gelu_new",  # the tanh approximation LightBrain uses
        layer_norm_epsilon=1e-5,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        tie_word_embeddings=config.tie_embeddings,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        architectures=["GPT2LMHeadModel"],
        dtype="float32",
    )


def model_config_from_gpt2(hf: dict[str, Any], source: str) -> ModelConfig:
    """A LightBrain ModelConfig from a GPT-2 config.json, refusing settings LightBrain cannot run."""
    act, eps = hf.get("activation_function", "gelu_new"), hf.get("layer_norm_epsilon", 1e-5)
    _refuse_mismatches(source, "GPT-2 variant", [
        ("activation_function", act, act in ("gelu_new", "gelu_pytorch_tanh"),
         "LightBrain's GELU is the tanh approximation (gelu_new)"),
        ("layer_norm_epsilon", eps, abs(float(eps) - 1e-5) < 1e-12, "LightBrain's LayerNorm uses eps 1e-5"),
        ("n_inner", hf.get("n_inner"), hf.get("n_inner") in (None, 4 * hf["n_embd"]),
         "LightBrain's MLP is 4 x n_embd wide"),
        ("scale_attn_weights", hf.get("scale_attn_weights"), hf.get("scale_attn_weights", True),
         "LightBrain scales attention by 1/sqrt(head size)"),
        ("scale_attn_by_inverse_layer_idx", hf.get("scale_attn_by_inverse_layer_idx"),
         not hf.get("scale_attn_by_inverse_layer_idx", False), "LightBrain does not scale attention by layer index"),
        ("add_cross_attention", hf.get("add_cross_attention"), not hf.get("add_cross_attention", False),
         "LightBrain has no cross-attention"),
    ])
    return ModelConfig(
        vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"], n_head=hf["n_head"],
        n_embd=hf["n_embd"], dropout=float(hf.get("resid_pdrop", 0.1)), bias=True,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
    )


# ---------------------------------------------------------------------------------------------
# Llama: weights and config

# LightBrain module -> Llama module inside one layer; the fused attn.c_attn is q, k, v stacked on dim 0.
LLAMA_LAYER = {
    "ln_1": "input_layernorm",
    "attn.c_proj": "self_attn.o_proj",
    "ln_2": "post_attention_layernorm",
    "mlp.c_gate": "mlp.gate_proj",
    "mlp.c_fc": "mlp.up_proj",
    "mlp.c_proj": "mlp.down_proj",
}
LLAMA_QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
LLAMA_OUTER = {"transformer.wte.weight": "model.embed_tokens.weight", "transformer.ln_f.weight": "model.norm.weight",
               "lm_head.weight": "lm_head.weight"}


def to_llama_state_dict(state_dict: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """LightBrain state dict -> LlamaForCausalLM's names (contiguous copies, safetensors-ready).

    No permutation of q/k is needed: LightBrain's rotary embedding already rotates (first half,
    second half) of each head, as Llama's rotate_half does. A tied head is left out.
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu()
        if name == "lm_head.weight" and config.tie_embeddings:
            continue
        if name in LLAMA_OUTER:
            out[LLAMA_OUTER[name]] = tensor
            continue
        _, _, layer, rest = name.split(".", 3)  # transformer.h.{layer}.{module}.{weight|bias}
        module, kind = rest.rsplit(".", 1)
        prefix = f"model.layers.{layer}."
        if module == "attn.c_attn":
            for part, chunk in zip(LLAMA_QKV, tensor.chunk(3)):
                out[f"{prefix}{part}.{kind}"] = chunk
        else:
            out[f"{prefix}{LLAMA_LAYER[module]}.{kind}"] = tensor
    return {name: tensor.contiguous().clone() for name, tensor in out.items()}


def from_llama_state_dict(hf_state: dict[str, torch.Tensor], config: ModelConfig,
                          source: str = "the folder") -> dict[str, torch.Tensor]:
    """LlamaForCausalLM weights -> a LightBrain state dict (q, k, v fused back into attn.c_attn)."""
    outer = {hf: ours for ours, hf in LLAMA_OUTER.items()}
    layer_names = {hf: ours for ours, hf in LLAMA_LAYER.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for name, tensor in hf_state.items():
        if name in outer:
            out[outer[name]] = tensor
            continue
        if not name.startswith("model.layers."):
            out[name] = tensor  # unknown: load_state_into lists it as unexpected
            continue
        _, _, layer, rest = name.split(".", 3)
        module, _, kind = rest.rpartition(".")
        if module in LLAMA_QKV:
            qkv.setdefault((layer, kind), {})[module] = tensor
        else:
            out[f"transformer.h.{layer}.{layer_names.get(module, module)}.{kind}"] = tensor
    for (layer, kind), parts in qkv.items():
        missing = [part for part in LLAMA_QKV if part not in parts]
        if missing:
            raise ExportError(f"{source}: layer {layer} has no {', '.join(f'{m}.{kind}' for m in missing)}")
        out[f"transformer.h.{layer}.attn.c_attn.{kind}"] = torch.cat([parts[part] for part in LLAMA_QKV])
    _tie_head(out, config, source, "model.embed_tokens.weight")
    return {name: tensor.contiguous() for name, tensor in out.items()}


def llama_config(config: ModelConfig, eot_id: int):
    """The transformers.LlamaConfig equivalent to a LightBrain rope/rmsnorm/swiglu model config."""
    transformers = _require_transformers()
    return transformers.LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.n_embd,
        intermediate_size=swiglu_width(config.n_embd),
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        num_key_value_heads=config.n_head,  # plain multi-head attention
        head_dim=config.n_embd // config.n_head,
        hidden_act="silu",
        max_position_embeddings=config.block_size,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        attention_bias=config.bias,
        mlp_bias=config.bias,
        attention_dropout=config.dropout,  # Llama's only dropout; LightBrain's recipes train rope models with 0
        tie_word_embeddings=config.tie_embeddings,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        architectures=["LlamaForCausalLM"],
        dtype="float32",
    )


def model_config_from_llama(hf: dict[str, Any], source: str) -> ModelConfig:
    """A LightBrain ModelConfig from a Llama config.json, refusing settings LightBrain cannot run."""
    needed = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "max_position_embeddings")
    missing = [key for key in needed if key not in hf]
    if missing:
        raise ExportError(f"{source}: a model_type 'llama' config needs {', '.join(missing)}, which it lacks")
    width, heads = hf["hidden_size"], hf["num_attention_heads"]
    # Transformers 5 writes rope_parameters; older versions wrote rope_theta and rope_scaling at the top
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    theta = rope.get("rope_theta", hf.get("rope_theta", ROPE_THETA)) if isinstance(rope, dict) else None
    plain_rope = (isinstance(rope, dict) and rope.get("rope_type", rope.get("type", "default")) == "default"
                  and set(rope) <= {"rope_type", "type", "rope_theta"})
    eps, act = hf.get("rms_norm_eps", 1e-6), hf.get("hidden_act", "silu")  # LlamaConfig's own defaults
    kv_heads, head_dim = hf.get("num_key_value_heads"), hf.get("head_dim")
    attention_bias, mlp_bias = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
    mlp_width = swiglu_width(width)
    _refuse_mismatches(source, "Llama variant", [
        ("num_key_value_heads", kv_heads, kv_heads in (None, heads),
         f"expected {heads}: LightBrain has one key/value head per query head"),
        ("head_dim", head_dim, head_dim in (None, width // heads),
         f"expected {width // heads} = hidden_size / num_attention_heads"),
        ("hidden_act", act, act == "silu", "expected 'silu', LightBrain's SwiGLU gate"),
        ("rms_norm_eps", eps, abs(float(eps) - 1e-5) < 1e-12, "expected 1e-05, LightBrain's RMSNorm eps"),
        ("rope_parameters", rope, plain_rope,
         "expected rope_type 'default': LightBrain's rotary positions are unscaled"),
        ("rope_theta", theta, theta is not None and float(theta) == ROPE_THETA, f"expected {ROPE_THETA}"),
        ("intermediate_size", hf["intermediate_size"], hf["intermediate_size"] == mlp_width,
         f"expected {mlp_width}, LightBrain's SwiGLU width for hidden_size {width}"),
        ("mlp_bias", mlp_bias, mlp_bias == attention_bias,
         f"expected {attention_bias} like attention_bias: LightBrain's model.bias covers both"),
    ])
    return ModelConfig(
        vocab_size=hf["vocab_size"], block_size=hf["max_position_embeddings"], n_layer=hf["num_hidden_layers"],
        n_head=heads, n_embd=width, dropout=float(hf.get("attention_dropout") or 0.0), bias=attention_bias,
        positional="rope", norm="rmsnorm", mlp="swiglu", tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )


# Each family's converters, keyed as Transformers' model_type: (weights to HF, weights from HF,
# config to HF, config from HF). Export and import both look the family up here.
CONVERTERS = {
    "gpt2": (to_gpt2_state_dict, from_gpt2_state_dict, gpt2_config, model_config_from_gpt2),
    "llama": (to_llama_state_dict, from_llama_state_dict, llama_config, model_config_from_llama),
}


def model_config_from_hf(hf: dict[str, Any], source: str) -> tuple[str, ModelConfig]:
    """(family, ModelConfig) from a config.json of either family."""
    family = hf.get("model_type")
    if family in CONVERTERS:
        *_, config_from_hf = CONVERTERS[family]
        return family, config_from_hf(hf, source)
    raise ExportError(f"{source}: model_type is {family!r}; only GPT-2 ('gpt2') and Llama ('llama') folders "
                      "can be imported")


# ---------------------------------------------------------------------------------------------
# tokenizers


def _split_in_two(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The merge that creates `token`: run BPE on its bytes with only the merges ranked below it."""
    parts = [token[i:i + 1] for i in range(len(token))]
    limit = ranks[token]
    while len(parts) > 2:
        best = None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < limit and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    if len(parts) != 2:
        raise ExportError(f"tiktoken token {token!r} is not the merge of two lower-ranked tokens")
    return parts[0], parts[1]


def gpt2_tokenizer_json(tokenizer: GPT2Tokenizer) -> str:
    """GPT-2's BPE as a `tokenizers` tokenizer.json, rebuilt from tiktoken's ranks (ids = ranks).

    tiktoken keeps only token -> rank; a `tokenizers` BPE also wants the merge list, which is
    recovered by replaying BPE on every multi-byte token, in rank order.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    enc = tokenizer._enc
    ranks = {token: enc.encode_single_token(token) for token in enc.token_byte_values()}
    chars = {b: ch for ch, b in _byte_level_inverse().items()}  # byte -> its character in the BPE alphabet

    def show(token: bytes) -> str:
        return "".join(chars[b] for b in token)

    vocab = {show(token): rank for token, rank in ranks.items()}
    merges = [tuple(show(part) for part in _split_in_two(token, ranks))
              for token, _ in sorted(ranks.items(), key=lambda item: item[1]) if len(token) > 1]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's regex split, then bytes
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    if tok.token_to_id(EOT) != tokenizer.eot_id:
        raise ExportError(f"rebuilt GPT-2 tokenizer puts {EOT} at {tok.token_to_id(EOT)}, expected {tokenizer.eot_id}")
    return tok.to_str()


def tokenizer_json(tokenizer) -> str:
    """The tokenizer.json text for a LightBrain tokenizer."""
    if isinstance(tokenizer, GPT2Tokenizer):
        return gpt2_tokenizer_json(tokenizer)
    if isinstance(tokenizer, MedicalBPETokenizer):
        return tokenizer.to_dict()["tokenizer_json"]
    raise ExportError(f"cannot export tokenizer {getattr(tokenizer, 'name', type(tokenizer).__name__)!r}")


def _write_hf_tokenizer(tokenizer, folder: Path, block_size: int) -> None:
    transformers = _require_transformers()
    from tokenizers import Tokenizer

    text = tokenizer_json(tokenizer)
    wrapped = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(text), bos_token=EOT, eos_token=EOT, unk_token=EOT,
        model_max_length=block_size,
    )
    wrapped.save_pretrained(str(folder))
    # The wrapper re-serialises with its own post-processor; keep the original file so an import
    # gets back the exact tokenizer (same fingerprint). Transformers adds what it needs on load.
    atomic_write_text(folder / "tokenizer.json", text)


# ---------------------------------------------------------------------------------------------
# export


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def model_card(config: LightBrainConfig, tokenizer_name: str, info: dict[str, Any], folder_name: str) -> str:
    m = config.model
    family = export_family(m)
    n_params = info.get("num_params")
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        f"tags: [{family}, medical, lightbrain, research-only]",
        "---",
        "",
        f"# LightBrain model ({FAMILY_NAMES[family]} format)",
        "",
        f"> **{DISCLAIMER}**",
        "",
        f"A small decoder-only language model for medical text, trained with LightBrain {__version__} and "
        f"exported to the Hugging Face Transformers {FAMILY_NAMES[family]} format.",
        "",
        "| | |",
        "| --- | --- |",
        f"| layers x heads x width | {m.n_layer} x {m.n_head} x {m.n_embd} |",
        f"| context (tokens) | {m.block_size} |",
        f"| vocabulary | {m.vocab_size} ({tokenizer_name}) |",
        f"| parameters | {n_params:,} |" if n_params else "| parameters | - |",
        f"| tied embeddings | {'yes' if m.tie_embeddings else 'no'} |",
        f"| training iterations | {info.get('iter_num', '-')} |",
        f"| best validation loss | {_number(info.get('best_val_loss'))} |",
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f"model = AutoModelForCausalLM.from_pretrained({folder_name!r})",
        f"tokenizer = AutoTokenizer.from_pretrained({folder_name!r})",
        "```",
        "",
        f"The model sees at most {m.block_size} tokens: prompt plus generated text must fit "
        "(`generation_config.json` sets `max_length` to that).",
        f"`lightbrain export --from-hf {folder_name} model.pt` turns this folder back into a LightBrain checkpoint.",
        "",
        "## Limitations",
        "",
        "A model this small produces fluent-looking text that is often wrong. It has not been evaluated "
        "for any clinical use. Do not use it for diagnosis, treatment or any decision about a person's health.",
        "",
        f"_{DISCLAIMER}_",
        "",
    ]
    return "\n".join(lines)


def export_model_hf(model: torch.nn.Module, tokenizer, out_dir: str | Path, *, config: LightBrainConfig | None = None,
                    info: dict[str, Any] | None = None, force: bool = False) -> Path:
    """Write `model` + `tokenizer` as a Transformers GPT-2 or Llama folder at out_dir (replaced as a whole)."""
    from safetensors.torch import save_file

    from lightbrain.training.checkpoint import clean_state_dict, unwrap_model

    model = unwrap_model(model)
    config = config or LightBrainConfig(model=model.config)
    mcfg = config.model
    family = export_family(mcfg)
    if mcfg.vocab_size != tokenizer.vocab_size:
        raise ExportError(f"the model's vocab_size ({mcfg.vocab_size}) differs from its tokenizer's "
                          f"({tokenizer.vocab_size}); the checkpoint does not belong with this tokenizer")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ExportError(f"{out_dir} already exists and is not empty; pass --force (force=True) to replace it")

    info = dict(info or {})
    info.setdefault("num_params", model.get_num_params() if hasattr(model, "get_num_params") else None)
    tokenizer_spec = tokenizer.to_dict()
    export_info = {
        "format": "lightbrain-hf-export",
        "lightbrain_version": __version__,
        "config": config.to_dict(),
        # the tokenizer itself is tokenizer.json; only its name is needed to rebuild it
        "tokenizer": {"name": tokenizer_spec["name"]},
        **{k: info.get(k) for k in ("iter_num", "best_val_loss", "metrics", "num_params")},
        "disclaimer": DISCLAIMER,
    }

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        to_hf, _, hf_config, _ = CONVERTERS[family]
        save_file(to_hf(clean_state_dict(model.state_dict()), mcfg), str(tmp / WEIGHTS), metadata={"format": "pt"})
        atomic_write_text(tmp / "config.json", hf_config(mcfg, tokenizer.eot_id).to_json_string(use_diff=False))
        generation = {
            "bos_token_id": tokenizer.eot_id, "eos_token_id": tokenizer.eot_id, "pad_token_id": tokenizer.eot_id,
            "max_length": mcfg.block_size,  # GPT-2 has no positions past it, and no model saw any
            "do_sample": True, "temperature": 0.8, "top_k": 50,  # lightbrain generate's defaults
        }
        atomic_write_text(tmp / "generation_config.json", json.dumps(generation, indent=2) + "\n")
        _write_hf_tokenizer(tokenizer, tmp, mcfg.block_size)
        atomic_write_text(tmp / EXPORT_INFO, json.dumps(export_info, indent=2) + "\n")
        atomic_write_text(tmp / "README.md", model_card(config, tokenizer_spec["name"], info, out_dir.name))
        replace_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def export_hf(checkpoint: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    """Export a LightBrain checkpoint file to a Transformers folder."""
    from lightbrain.training.checkpoint import checkpoint_config, load_model

    model, tokenizer, ckpt = load_model(checkpoint, device="cpu")
    info = {k: ckpt.get(k) for k in ("iter_num", "best_val_loss", "metrics")}
    return export_model_hf(model, tokenizer, out_dir, config=checkpoint_config(ckpt), info=info, force=force)


# ---------------------------------------------------------------------------------------------
# import


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path} is not valid JSON: {exc}") from None


def _folder_tokenizer(folder: Path, name: str | None, vocab_size: int):
    """The LightBrain tokenizer for an exported folder: tiktoken's GPT-2, or tokenizer.json as a byte-level BPE."""
    if name == "gpt2" or (name is None and vocab_size == 50257 and not (folder / "tokenizer.json").is_file()):
        return GPT2Tokenizer()
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ExportError(f"{folder} has no tokenizer.json; export it with lightbrain export or save the tokenizer "
                          "there with tokenizer.save_pretrained(folder)")
    tokenizer = MedicalBPETokenizer.from_file(path)
    if name is None and tokenizer.vocab_size == 50257 and tokenizer.eot_id == 50256:
        return GPT2Tokenizer()  # GPT-2's own tokenizer: use tiktoken, the tokenizer LightBrain trains with
    return tokenizer


def read_hf_folder(folder: str | Path) -> tuple[LightBrainConfig, dict[str, torch.Tensor], Any, dict[str, Any]]:
    """(recipe, LightBrain state dict, tokenizer, export info) from a Transformers GPT-2 or Llama folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder} is not a folder; give the folder that `lightbrain export` wrote")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ExportError(f"{folder} has no config.json, so it is not a Transformers model folder")
    hf = _read_json(config_path)
    family, derived = model_config_from_hf(hf, str(config_path))
    info = _read_json(folder / EXPORT_INFO) if (folder / EXPORT_INFO).is_file() else {}
    if "config" in info:
        try:
            config = config_from_dict(info["config"])
        except ValueError as exc:
            raise ExportError(f"{folder / EXPORT_INFO}: its saved recipe is invalid: {exc}") from None
        # GPT-2 always has biases, so only a Llama config.json tells model.bias
        keys = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "tie_embeddings",
                "positional", "norm", "mlp")
        for key in keys + (("bias",) if family == "llama" else ()):
            if getattr(config.model, key) != getattr(derived, key):
                raise ExportError(f"{folder}: config.json and {EXPORT_INFO} disagree on model.{key} "
                                  f"({getattr(derived, key)} vs {getattr(config.model, key)}); re-export the folder")
    else:
        config = LightBrainConfig(model=derived)

    weights = folder / WEIGHTS
    if not weights.is_file():
        present = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise ExportError(f"{folder} has no {WEIGHTS} (it holds {present}); LightBrain imports single-file "
                          "safetensors weights only: re-save the model with save_pretrained(folder, "
                          "safe_serialization=True, max_shard_size='10GB')")
    try:
        hf_state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own SafetensorError for damaged files
        raise ExportError(f"{weights} is damaged or not a safetensors file ({type(exc).__name__}: {exc}); "
                          "export the model again") from None
    _, from_hf, _, _ = CONVERTERS[family]
    state = from_hf(hf_state, config.model, source=str(weights))
    tokenizer = _folder_tokenizer(folder, info.get("tokenizer", {}).get("name"), derived.vocab_size)
    if tokenizer.vocab_size != config.model.vocab_size:
        raise ExportError(f"{folder}: the tokenizer has {tokenizer.vocab_size} tokens but the model "
                          f"{config.model.vocab_size}")
    config.data.tokenizer = tokenizer.name
    return config, state, tokenizer, info


def import_hf(folder: str | Path, device: str | torch.device = "cpu"):
    """(LightBrainTiny in eval mode, tokenizer) from a Transformers GPT-2 or Llama folder."""
    from lightbrain.models.lightbrain_tiny import LightBrainTiny
    from lightbrain.training.checkpoint import load_state_into

    config, state, tokenizer, _ = read_hf_folder(folder)
    model = LightBrainTiny(config.model)
    load_state_into(model, state, source=str(folder))
    return model.to(device).eval(), tokenizer


def import_hf_checkpoint(folder: str | Path, out_path: str | Path, force: bool = False) -> Path:
    """Write a LightBrain checkpoint from a Transformers GPT-2 or Llama folder."""
    from lightbrain.models.lightbrain_tiny import LightBrainTiny
    from lightbrain.training.checkpoint import load_state_into, save_checkpoint

    out_path = Path(out_path)
    if out_path.exists() and not force:
        raise ExportError(f"{out_path} already exists; pass --force (force=True) to overwrite it")
    config, state, tokenizer, info = read_hf_folder(folder)
    model = LightBrainTiny(config.model)
    load_state_into(model, state, source=str(folder))
    return save_checkpoint(out_path, model=model, config=config, tokenizer=tokenizer.to_dict(),
                           iter_num=info.get("iter_num") or 0, best_val_loss=info.get("best_val_loss"),
                           metrics=info.get("metrics"))
