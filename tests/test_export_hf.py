"""Hugging Face export/import: the exported folder behaves like the LightBrain model, fully offline."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything below loads from local folders only
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lightbrain import DISCLAIMER
from lightbrain.cli import main
from lightbrain.config import LightBrainConfig, ModelConfig
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


def test_greedy_generation_matches(tmp_path, bpe):
    model = random_model(tiny_config(bpe.vocab_size), seed=3)
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


def test_pipeline_runs_and_folder_has_card(tmp_path, bpe):
    export_model_hf(random_model(tiny_config(bpe.vocab_size)), bpe, tmp_path / "hf")
    generator = transformers.pipeline("text-generation", model=str(tmp_path / "hf"), device="cpu")
    out = generator("The patient", do_sample=False, max_new_tokens=8)
    assert out[0]["generated_text"].startswith("The patient")
    sampled = generator("Doctor:")  # the folder's generation_config keeps length within the context
    assert sampled[0]["generated_text"].startswith("Doctor:")
    assert DISCLAIMER in (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    info = json.loads((tmp_path / "hf" / "lightbrain.json").read_text(encoding="utf-8"))
    assert info["tokenizer"] == {"name": "medical-bpe"} and info["disclaimer"] == DISCLAIMER
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


@pytest.mark.parametrize("option, value", [("positional", "rope"), ("norm", "rmsnorm"), ("mlp", "swiglu"),
                                           ("qk_norm", True)])
def test_refuses_architectures_gpt2_cannot_hold(tmp_path, bpe, capsys, option, value):
    config = LightBrainConfig(model=tiny_config(bpe.vocab_size, **{option: value}))
    model = random_model(config.model)
    with pytest.raises(ExportError, match=f"model.{option}"):
        export_model_hf(model, bpe, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    ckpt = save_checkpoint(tmp_path / "a.pt", model=model, config=config, tokenizer=bpe.to_dict())
    assert main(["export", "--checkpoint", str(ckpt), str(tmp_path / "hf")]) == 1
    assert f"model.{option}" in capsys.readouterr().err


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
    with pytest.raises(ExportError, match="model_type"):
        import_hf(tmp_path / "hf")
    config_path.write_text(json.dumps(hf), encoding="utf-8")
    weights = tmp_path / "hf" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # damaged: a clear error, not safetensors' own exception
    with pytest.raises(ExportError, match="damaged"):
        import_hf(tmp_path / "hf")
    weights.unlink()
    with pytest.raises(ExportError, match="model.safetensors"):
        import_hf(tmp_path / "hf")
