"""Hugging Face export/import: the exported folder behaves like the LightBrain model, fully offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything below loads from local folders only
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lightbrain import DISCLAIMER
from lightbrain.cli import main
from lightbrain.config import LightBrainConfig, ModelConfig, load_config
from lightbrain.data.tokenizers import GPT2Tokenizer, train_medical_bpe
from lightbrain.export.hf import ExportError, export_model_hf, import_hf, import_hf_checkpoint
from lightbrain.inference.generate import generate
from lightbrain.models.lightbrain_tiny import LightBrainTiny
from lightbrain.training.checkpoint import load_checkpoint, save_checkpoint

TEXTS = [
    "The patient presented with fever, cough and shortness of breath for 3 days.",
    "Metformin 500 mg twice daily was started; HbA1c fell from 8.2% to 6.9% at 12 weeks.",
    "Doctor: Any chest pain?\nPatient: No, but I get dizzy when I stand up.",
    "Randomised controlled trials (RCTs) of beta-blockers after myocardial infarction were pooled.",
    "Über-naïve café résumé: patients' outcomes didn't differ (p = 0.43).",
    "  Indented   text\twith tabs\n\nand blank lines.  ",
]
VARIED = TEXTS + ["emoji 😀👍🏽 and CJK 日本語", "x" * 300, "I'M 's 're 've ’s", "3.14159 1,000,000 -42", "\x00\x07 bell"]


# the speedrun architecture, which exports as LlamaForCausalLM
LLAMA = dict(positional="rope", norm="rmsnorm", mlp="swiglu", bias=False)
SPEEDRUN = Path(__file__).resolve().parents[1] / "configs" / "cpu_speedrun.yaml"
# how docs/export.md trains the speedrun recipe for export
EXPORTABLE_SPEEDRUN = ["model.value_residual=false", "model.value_embedding=false", "model.unet_skips=false"]


def tiny_config(vocab_size: int, **overrides) -> ModelConfig:
    values = dict(vocab_size=vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    values.update(overrides)
    return ModelConfig(**values)


def random_model(config: ModelConfig, seed: int = 0) -> LightBrainTiny:
    torch.manual_seed(seed)
    model = LightBrainTiny(config)
    with torch.no_grad():  # non-trivial biases and norms, so a mix-up of any tensor shows in the logits
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def bpe():
    return train_medical_bpe(TEXTS * 3, vocab_size=320)


@pytest.fixture(scope="module")
def gpt2(tiktoken_cache):
    return GPT2Tokenizer()


def hf_load(folder):
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    return model, transformers.AutoTokenizer.from_pretrained(str(folder))


def assert_same_logits(model, hf_model, vocab_size, batch=2, length=None):
    length = length or model.config.block_size
    x = torch.randint(0, vocab_size, (batch, length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, _ = model(x)
        theirs = hf_model(x).logits
    assert theirs.shape == ours.shape
    assert (ours - theirs).abs().max().item() < 1e-4


@pytest.mark.parametrize("options", [{}, {"bias": False}, {"tie_embeddings": False}])
def test_logits_match_transformers(tmp_path, bpe, options):
    model = random_model(tiny_config(bpe.vocab_size, **options))
    export_model_hf(model, bpe, tmp_path / "hf")
    hf_model, _ = hf_load(tmp_path / "hf")
    assert type(hf_model).__name__ == "GPT2LMHeadModel"
    assert hf_model.config.tie_word_embeddings == model.config.tie_embeddings
    assert_same_logits(model, hf_model, bpe.vocab_size)


def test_logits_match_at_seed_shape(tmp_path, bpe):
    # 6 layers x 6 heads x 384, 128-token context; a small vocabulary keeps the test fast
    model = random_model(ModelConfig(vocab_size=bpe.vocab_size, dropout=0.0))
    export_model_hf(model, bpe, tmp_path / "hf")
    hf_model, _ = hf_load(tmp_path / "hf")
    assert hf_model.config.n_positions == 128 and hf_model.config.n_layer == 6
    assert_same_logits(model, hf_model, bpe.vocab_size, batch=1)


@pytest.mark.parametrize("architecture", [{}, LLAMA], ids=["gpt2", "llama"])
def test_greedy_generation_matches(tmp_path, bpe, architecture):
    model = random_model(tiny_config(bpe.vocab_size, **architecture), seed=3)
    export_model_hf(model, bpe, tmp_path / "hf")
    hf_model, hf_tok = hf_load(tmp_path / "hf")
    prompt = bpe.encode("The patient presented with")
    ours = generate(model, torch.tensor([prompt]), max_new_tokens=20, temperature=0)
    ids = hf_tok("The patient presented with", return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == prompt
    theirs = hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=20)
    assert theirs[0].tolist() == ours[0].tolist()


def test_medical_bpe_tokenizer_matches(tmp_path, bpe):
    export_model_hf(random_model(tiny_config(bpe.vocab_size)), bpe, tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    for text in VARIED:
        assert hf_tok.encode(text) == bpe.encode(text), text
        assert hf_tok.decode(bpe.encode(text)) == bpe.decode(bpe.encode(text))
    assert hf_tok.eos_token == "<|endoftext|>" and hf_tok.eos_token_id == bpe.eot_id
    assert hf_tok.model_max_length == 32


def test_gpt2_tokenizer_matches_tiktoken(tmp_path, gpt2):
    model = random_model(tiny_config(gpt2.vocab_size))
    export_model_hf(model, gpt2, tmp_path / "hf")
    hf_model, hf_tok = hf_load(tmp_path / "hf")
    assert len(hf_tok) == 50257 and hf_tok.eos_token_id == 50256
    encoded = hf_tok(VARIED, add_special_tokens=True)["input_ids"]
    assert encoded == gpt2.encode_batch(VARIED)
    assert hf_tok.encode("The patient presented with fever") == [464, 5827, 5545, 351, 17372]
    assert_same_logits(model, hf_model, gpt2.vocab_size, batch=1)


@pytest.mark.parametrize("architecture, title", [({}, "GPT-2 format"), (LLAMA, "Llama format")], ids=["gpt2", "llama"])
def test_pipeline_runs_and_folder_has_card(tmp_path, bpe, architecture, title):
    export_model_hf(random_model(tiny_config(bpe.vocab_size, **architecture)), bpe, tmp_path / "hf")
    generator = transformers.pipeline("text-generation", model=str(tmp_path / "hf"), device="cpu")
    out = generator("The patient", do_sample=False, max_new_tokens=8)
    assert out[0]["generated_text"].startswith("The patient")
    sampled = generator("Doctor:")  # the folder's generation_config keeps length within the context
    assert sampled[0]["generated_text"].startswith("Doctor:")
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    assert DISCLAIMER in card and title in card
    info = json.loads((tmp_path / "hf" / "lightbrain.json").read_text(encoding="utf-8"))
    assert info["tokenizer"] == {"name": "medical-bpe"} and info["disclaimer"] == DISCLAIMER
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text(encoding="utf-8"))
    assert generation["max_length"] == 32 and generation["eos_token_id"] == bpe.eot_id
    assert (tmp_path / "hf" / "model.safetensors").is_file()


def test_import_round_trips_exactly(tmp_path, bpe):
    model = random_model(tiny_config(bpe.vocab_size, bias=False))
    export_model_hf(model, bpe, tmp_path / "hf")
    back, tokenizer = import_hf(tmp_path / "hf")
    assert back.config == model.config
    theirs = back.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name
    assert tokenizer.fingerprint() == bpe.fingerprint()


def test_cli_round_trip(tmp_path, bpe, capsys):
    config = LightBrainConfig(model=tiny_config(bpe.vocab_size))
    config.data.tokenizer = "medical-bpe"
    model = random_model(config.model)
    ckpt = save_checkpoint(tmp_path / "a.pt", model=model, config=config, tokenizer=bpe.to_dict(), iter_num=7,
                           best_val_loss=2.5, metrics={"val_bpb": 1.25})
    assert main(["export", "--format", "hf", "--checkpoint", str(ckpt), str(tmp_path / "hf")]) == 0
    assert DISCLAIMER in capsys.readouterr().out
    assert main(["export", "--from-hf", str(tmp_path / "hf"), str(tmp_path / "b.pt")]) == 0
    a, b = load_checkpoint(ckpt), load_checkpoint(tmp_path / "b.pt")
    assert a["config"] == b["config"] and a["tokenizer"] == b["tokenizer"]
    assert (b["iter_num"], b["best_val_loss"], b["metrics"]) == (7, 2.5, {"val_bpb": 1.25})
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])

    # existing outputs are kept unless --force
    assert main(["export", "--checkpoint", str(ckpt), str(tmp_path / "hf")]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(ckpt), str(tmp_path / "hf"), "--force"]) == 0


@pytest.mark.parametrize("options, named", [
    ({"positional": "rope"}, ["model.positional=rope"]),
    ({"norm": "rmsnorm"}, ["model.norm=rmsnorm"]),
    ({"mlp": "swiglu"}, ["model.mlp=swiglu"]),
    ({"mlp": "relu2"}, ["model.mlp=relu2"]),
    ({"qk_norm": True}, ["model.qk_norm"]),
    ({**LLAMA, "norm": "layernorm"}, ["model.norm=layernorm"]),  # rope with LayerNorm
    ({**LLAMA, "mlp": "relu2"}, ["model.mlp=relu2"]),
    ({**LLAMA, "qk_norm": True}, ["model.qk_norm"]),
    ({**LLAMA, "logit_softcap": 15.0}, ["model.logit_softcap=15.0"]),
    ({"logit_softcap": 15.0}, ["model.logit_softcap=15.0"]),
    ({**LLAMA, "value_residual": True}, ["model.value_residual=true"]),
    ({**LLAMA, "embedding_skip": True}, ["model.embedding_skip=true"]),
    ({**LLAMA, "unet_skips": True}, ["model.unet_skips=true"]),
    ({**LLAMA, "value_embedding": True}, ["model.value_embedding=true"]),
    ({**LLAMA, "attention_gate": True}, ["model.attention_gate=true"]),
    ({**LLAMA, "bigram_embedding": 64}, ["model.bigram_embedding=64"]),
    ({**LLAMA, "token_shift": True}, ["model.token_shift=true"]),
    ({**LLAMA, "document_mask": True, "eot_id": 0}, ["model.document_mask=true"]),
    ({"positional": "rope", "mlp": "relu2"}, ["model.positional=rope", "model.norm=layernorm", "model.mlp=relu2"]),
])
def test_refuses_mixed_architectures(tmp_path, bpe, capsys, options, named):
    config = LightBrainConfig(model=tiny_config(bpe.vocab_size, **options))
    model = random_model(config.model)
    with pytest.raises(ExportError) as error:
        export_model_hf(model, bpe, tmp_path / "hf")
    message = str(error.value)
    assert all(option in message for option in named), message
    assert "GPT2LMHeadModel" in message and "LlamaForCausalLM" in message  # says what would export
    assert not (tmp_path / "hf").exists()
    ckpt = save_checkpoint(tmp_path / "a.pt", model=model, config=config, tokenizer=bpe.to_dict())
    assert main(["export", "--checkpoint", str(ckpt), str(tmp_path / "hf")]) == 1
    assert named[0] in capsys.readouterr().err


def test_imports_a_plain_transformers_gpt2_folder(tmp_path, bpe):
    # a folder saved by Transformers itself: no lightbrain.json, weights in its own layout
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(vocab_size=bpe.vocab_size, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                        bos_token_id=bpe.eot_id, eos_token_id=bpe.eot_id)
    hf_model = transformers.GPT2LMHeadModel(hf_config).eval()
    hf_model.save_pretrained(str(tmp_path / "plain"))
    (tmp_path / "plain" / "tokenizer.json").write_text(bpe.to_dict()["tokenizer_json"], encoding="utf-8")
    model, tokenizer = import_hf(tmp_path / "plain")
    assert tokenizer.encode(TEXTS[0]) == bpe.encode(TEXTS[0])
    assert_same_logits(model, hf_model, bpe.vocab_size)
    import_hf_checkpoint(tmp_path / "plain", tmp_path / "plain.pt")
    assert load_checkpoint(tmp_path / "plain.pt")["config"]["model"]["block_size"] == 32


def test_import_errors_name_the_problem(tmp_path, bpe):
    with pytest.raises(ExportError, match="not a folder"):
        import_hf(tmp_path / "missing")
    export_model_hf(random_model(tiny_config(bpe.vocab_size)), bpe, tmp_path / "hf")
    config_path = tmp_path / "hf" / "config.json"
    hf = json.loads(config_path.read_text(encoding="utf-8"))
    config_path.write_text(json.dumps(dict(hf, activation_function="relu")), encoding="utf-8")
    with pytest.raises(ExportError, match="activation_function"):
        import_hf(tmp_path / "hf")
    config_path.write_text(json.dumps(dict(hf, model_type="llama")), encoding="utf-8")
    with pytest.raises(ExportError, match="model_type 'llama' config needs hidden_size"):
        import_hf(tmp_path / "hf")
    config_path.write_text(json.dumps(dict(hf, model_type="bert")), encoding="utf-8")
    with pytest.raises(ExportError, match="model_type is 'bert'"):
        import_hf(tmp_path / "hf")
    config_path.write_text(json.dumps(hf), encoding="utf-8")
    weights = tmp_path / "hf" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # damaged: a clear error, not safetensors' own exception
    with pytest.raises(ExportError, match="damaged"):
        import_hf(tmp_path / "hf")
    weights.unlink()
    with pytest.raises(ExportError, match="model.safetensors"):
        import_hf(tmp_path / "hf")


# ---------------------------------------------------------------------------------------------
# the speedrun architecture (rope, RMSNorm, SwiGLU) as LlamaForCausalLM


@pytest.mark.parametrize("options", [{}, {"bias": True}, {"tie_embeddings": False},
                                     {"bias": True, "tie_embeddings": False}])
def test_llama_logits_match_transformers(tmp_path, bpe, options):
    model = random_model(tiny_config(bpe.vocab_size, **{**LLAMA, **options}))
    export_model_hf(model, bpe, tmp_path / "hf")
    hf_model, _ = hf_load(tmp_path / "hf")
    assert type(hf_model).__name__ == "LlamaForCausalLM"
    c = hf_model.config
    assert c.tie_word_embeddings == model.config.tie_embeddings
    assert c.attention_bias == c.mlp_bias == model.config.bias
    assert c.intermediate_size == model.transformer.h[0].mlp.c_fc.out_features
    assert_same_logits(model, hf_model, bpe.vocab_size)  # all 32 positions: RoPE agrees everywhere


def test_the_speedrun_recipe_as_committed_names_its_value_options_when_refused(tmp_path, bpe):
    mcfg = load_config(SPEEDRUN, overrides=["model.n_layer=2", "model.n_embd=64", "model.block_size=32",
                                            "train.short_window=[8, 16]"]).model
    mcfg.vocab_size = bpe.vocab_size
    with pytest.raises(ExportError, match="model.value_residual=true") as refused:
        export_model_hf(random_model(mcfg), bpe, tmp_path / "hf")
    assert "model.value_embedding=true" in str(refused.value) and "model.unet_skips=true" in str(refused.value)


@pytest.mark.parametrize("recipe, width, heads, mlp_width, positions", [
    ("cpu_speedrun.yaml", 256, 1, 704, 1024),  # the quickstart recipe: 6 x 256, one head of 256
    ("cpu_speedrun_fp32.yaml", 128, 1, 384, 512),  # the float32 recipe: 5 x 128, one head of 128
])
def test_llama_logits_match_at_speedrun_shape(tmp_path, bpe, recipe, width, heads, mlp_width, positions):
    # each recipe's model with a small vocabulary, without the value residual and value embedding, as it is
    # trained for export
    mcfg = load_config(SPEEDRUN.with_name(recipe), overrides=EXPORTABLE_SPEEDRUN).model
    mcfg.vocab_size = bpe.vocab_size
    model = random_model(mcfg)
    export_model_hf(model, bpe, tmp_path / "hf")
    hf_model, _ = hf_load(tmp_path / "hf")
    c = hf_model.config
    assert (c.hidden_size, c.num_attention_heads, c.intermediate_size, c.max_position_embeddings) == (
        width, heads, mlp_width, positions)
    assert_same_logits(model, hf_model, bpe.vocab_size, batch=1)


@pytest.mark.parametrize("bias", [False, True])
def test_llama_import_round_trips_exactly(tmp_path, bpe, bias):
    model = random_model(tiny_config(bpe.vocab_size, **{**LLAMA, "bias": bias, "tie_embeddings": bias}))
    export_model_hf(model, bpe, tmp_path / "hf")
    back, tokenizer = import_hf(tmp_path / "hf")
    assert back.config == model.config
    ours, theirs = model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    assert tokenizer.fingerprint() == bpe.fingerprint()


def test_llama_cli_round_trip_of_the_speedrun_recipe(tmp_path, bpe):
    config = load_config(SPEEDRUN, overrides=["model.n_layer=2", "model.n_embd=64", "model.block_size=32",
                                              "train.short_window=[8, 16]", *EXPORTABLE_SPEEDRUN])
    config.model.vocab_size = bpe.vocab_size
    ckpt = save_checkpoint(tmp_path / "a.pt", model=random_model(config.model), config=config,
                           tokenizer=bpe.to_dict(), iter_num=3)
    assert main(["export", "--format", "hf", "--checkpoint", str(ckpt), str(tmp_path / "hf")]) == 0
    info = json.loads((tmp_path / "hf" / "lightbrain.json").read_text(encoding="utf-8"))
    assert info["config"]["model"]["positional"] == "rope" and info["iter_num"] == 3
    assert main(["export", "--from-hf", str(tmp_path / "hf"), str(tmp_path / "b.pt")]) == 0
    a, b = load_checkpoint(ckpt), load_checkpoint(tmp_path / "b.pt")
    assert a["config"] == b["config"] and a["tokenizer"] == b["tokenizer"] and b["iter_num"] == 3
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def plain_llama(bpe, **overrides):
    """A LlamaForCausalLM that LightBrain can run, built by Transformers itself."""
    values = dict(vocab_size=bpe.vocab_size, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, max_position_embeddings=32, rms_norm_eps=1e-5,
                  bos_token_id=bpe.eot_id, eos_token_id=bpe.eot_id)
    values.update(overrides)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**values)).eval()


@pytest.mark.parametrize("tied", [False, True])
def test_imports_a_plain_transformers_llama_folder(tmp_path, bpe, tied):
    hf_model = plain_llama(bpe, tie_word_embeddings=tied)
    hf_model.save_pretrained(str(tmp_path / "plain"))
    (tmp_path / "plain" / "tokenizer.json").write_text(bpe.to_dict()["tokenizer_json"], encoding="utf-8")
    model, tokenizer = import_hf(tmp_path / "plain")
    assert (model.config.positional, model.config.norm, model.config.mlp) == ("rope", "rmsnorm", "swiglu")
    assert model.config.tie_embeddings == tied and not model.config.bias
    assert tokenizer.encode(TEXTS[0]) == bpe.encode(TEXTS[0])
    assert_same_logits(model, hf_model, bpe.vocab_size)
    import_hf_checkpoint(tmp_path / "plain", tmp_path / "plain.pt")
    assert load_checkpoint(tmp_path / "plain.pt")["config"]["model"]["mlp"] == "swiglu"


@pytest.mark.parametrize("change, named", [
    ({"num_key_value_heads": 1}, "num_key_value_heads=1"),
    ({"rms_norm_eps": 1e-6}, "rms_norm_eps=1e-06"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"intermediate_size": 96}, "intermediate_size=96 (expected 128"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}, "rope_parameters="),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}, "rope_theta=500000.0 (expected 10000.0)"),
    ({"rope_parameters": None, "rope_theta": 500000.0}, "rope_theta=500000.0"),  # the older layout
    ({"mlp_bias": True}, "mlp_bias=True"),
])
def test_llama_variants_lightbrain_cannot_run_are_refused(tmp_path, bpe, change, named):
    export_model_hf(random_model(tiny_config(bpe.vocab_size, **LLAMA)), bpe, tmp_path / "hf")
    config_path = tmp_path / "hf" / "config.json"
    hf = json.loads(config_path.read_text(encoding="utf-8"))
    config_path.write_text(json.dumps({**hf, **change}), encoding="utf-8")
    with pytest.raises(ExportError, match="cannot import this Llama variant") as error:
        import_hf(tmp_path / "hf")
    assert named in str(error.value)
