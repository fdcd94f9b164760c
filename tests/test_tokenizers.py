"""Both tokenizers round-trip any text, and decode_bytes gives a token's exact bytes (partial UTF-8 included)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightbrain.data.tokenizers import (
    EOT,
    GPT2Tokenizer,
    MedicalBPETokenizer,
    load_data_tokenizer,
    tokenizer_from_dict,
    train_medical_bpe,
)

TRAINING_TEXT = [
    "The patient presented with fever and a persistent cough.",
    "Hypertension is treated with lifestyle changes and medication.",
    "Doctor: Any chest pain?\nPatient: No, but I feel tired.",
    "Diabetes mellitus raises the risk of neuropathy and retinopathy.",
] * 20


@pytest.fixture(scope="module")
def medical_bpe() -> MedicalBPETokenizer:
    return train_medical_bpe(TRAINING_TEXT, vocab_size=400)


@pytest.fixture(scope="module")
def gpt2(tiktoken_cache) -> GPT2Tokenizer:
    return GPT2Tokenizer()


def test_medical_bpe_learns_merges_and_reloads(medical_bpe, tmp_path):
    assert 256 < medical_bpe.vocab_size <= 400
    assert medical_bpe.encode(EOT) != [medical_bpe.eot_id]  # special tokens in text are ordinary text
    ids = medical_bpe.encode("The patient presented with fever")
    assert len(ids) < len("The patient presented with fever") / 2  # merges learned from the training text
    medical_bpe.save(tmp_path / "tokenizer.json")
    again = MedicalBPETokenizer.from_file(tmp_path / "tokenizer.json")
    assert again.encode("hypertension") == medical_bpe.encode("hypertension")
    assert again.fingerprint() == medical_bpe.fingerprint()
    assert tokenizer_from_dict(medical_bpe.to_dict()).encode("cough") == medical_bpe.encode("cough")
    (tmp_path / "meta.json").write_text('{"tokenizer": {"name": "medical-bpe", "file": "tokenizer.json"}}')
    assert load_data_tokenizer(tmp_path).fingerprint() == medical_bpe.fingerprint()


def test_medical_bpe_decode_bytes_keeps_partial_utf8(medical_bpe):
    text = "fièvre 😷 — 发烧"
    ids = medical_bpe.encode(text)
    pieces = [medical_bpe.decode_bytes([i]) for i in ids]
    assert b"".join(pieces) == text.encode("utf-8")
    # unseen characters fall back to single bytes, which are not valid UTF-8 on their own
    assert any(_invalid_utf8(p) for p in pieces)
    assert medical_bpe.decode_bytes([medical_bpe.eot_id]) == EOT.encode()


def test_gpt2_known_ids_and_partial_bytes(gpt2):
    assert gpt2.encode("The patient presented with fever") == [464, 5827, 5545, 351, 17372]
    assert (gpt2.vocab_size, gpt2.eot_id) == (50257, 50256)
    assert gpt2.eot_id not in gpt2.encode(f"a{EOT}b")
    ids = gpt2.encode("😷")
    assert b"".join(gpt2.decode_bytes([i]) for i in ids) == "😷".encode("utf-8")


def _invalid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_round_trip_any_text(medical_bpe, gpt2, text):
    for tok in (medical_bpe, gpt2):
        ids = tok.encode(text)
        assert tok.decode_bytes(ids) == text.encode("utf-8")
        assert tok.decode(ids) == text
        assert tok.encode_batch([text, "x"], num_threads=2) == [ids, tok.encode("x")]
