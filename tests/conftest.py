"""Shared fixtures. Tests that read ../shared/data skip when it is absent, unless
LIGHTBRAIN_REQUIRE_SHARED_DATA=1 (as in CI), which turns the skip into a failure."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LIGHTBRAIN_SHARED_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _require_shared() -> Path:
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    message = f"{SHARED_DATA} is absent (real medical data lives beside the project in ../shared/data)"
    if os.environ.get("LIGHTBRAIN_REQUIRE_SHARED_DATA") == "1":
        pytest.fail(message + " and LIGHTBRAIN_REQUIRE_SHARED_DATA=1 makes these tests mandatory")
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require_shared()


@pytest.fixture(scope="session")
def tiktoken_cache(tmp_path_factory) -> Path:
    """Seed tiktoken's GPT-2 files from ../shared/data/gpt2 so `gpt2` works offline."""
    existing = os.environ.get("TIKTOKEN_CACHE_DIR")
    if existing and Path(existing, "6d1cbeee0f20b3d9449abfede4726ed8212e3aee").is_file():
        return Path(existing)
    data = _require_shared()
    cache = tmp_path_factory.mktemp("tiktoken")
    subprocess.run(["sh", str(data / "gpt2" / "seed_tiktoken_cache.sh"), str(cache)], check=True, capture_output=True)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    return cache


# A small corpus we write ourselves, so unit tests never need downloaded or shared data.
_SUBJECTS = ["The patient", "A 54-year-old man", "The child", "An elderly woman", "The nurse", "The clinician"]
_VERBS = ["presented with", "reported", "was treated for", "developed", "denied", "was screened for"]
_FINDINGS = ["fever and cough", "chest pain", "type 2 diabetes", "hypertension", "a persistent headache",
             "shortness of breath", "anemia", "a mild rash", "nausea after meals", "knee osteoarthritis"]
_TAILS = ["Symptoms improved within a week.", "Blood tests were normal.", "Follow-up was arranged.",
          "An ECG showed sinus rhythm.", "Metformin was started at 500 mg.", "Rest and fluids were advised."]


def tiny_corpus(n_docs: int = 120, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    docs = []
    for i in range(n_docs):
        sentences = [f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_FINDINGS)}. {rng.choice(_TAILS)}"
                     for _ in range(rng.randint(2, 5))]
        docs.append(f"Case {i}: " + " ".join(sentences))
    return docs


def write_token_dir(out_dir: Path, train_docs: list[str], val_docs: list[str], tokenizer) -> Path:
    """Token files + meta.json in the prepared-data format, built directly (no prepare step)."""
    import numpy as np

    from lightbrain.data.token_files import token_dtype, write_meta, write_token_file

    dtype = token_dtype(tokenizer.vocab_size)
    splits = {}
    for name, docs in (("train", train_docs), ("validation", val_docs)):
        ids = []
        for doc in docs:
            ids.extend(tokenizer.encode(doc))
            ids.append(tokenizer.eot_id)
        n = write_token_file(out_dir / f"{name}.bin", [np.asarray(ids)], dtype)
        splits[name] = {"documents": len(docs), "tokens": n, "bytes": sum(len(d.encode()) for d in docs)}
    spec = tokenizer.to_dict()
    if "tokenizer_json" in spec:
        tokenizer.save(out_dir / "tokenizer.json")
        spec = {"name": spec["name"], "file": "tokenizer.json"}
    write_meta(out_dir, {"format_version": 1, "tokenizer": spec, "tokenizer_fingerprint": tokenizer.fingerprint(),
                         "vocab_size": tokenizer.vocab_size, "dtype": dtype.name, "eot_id": tokenizer.eot_id,
                         "splits": splits, "sources": [], "split_rule": "test fixture", "validation_one_in": 20})
    return out_dir


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from lightbrain.data.tokenizers import train_medical_bpe

    return train_medical_bpe(tiny_corpus(200, seed=1), vocab_size=400)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, tiny_tokenizer) -> Path:
    """A prepared-data folder (medical BPE, ~20k train tokens) for training and evaluation tests."""
    docs = tiny_corpus(400)
    return write_token_dir(tmp_path_factory.mktemp("tiny_data"), docs[:360], docs[360:], tiny_tokenizer)


def tiny_config(data_dir: Path, out: Path, **train_overrides):
    """configs/test_tiny.yaml pointed at data_dir, writing under out."""
    from lightbrain.config import load_config

    overrides = [f"train.data_dir={data_dir}", f"train.out_dir={out / 'models'}", f"train.log_dir={out / 'logs'}",
                 "train.progress=false"]
    overrides += [f"train.{k}={v}" for k, v in train_overrides.items()]
    return load_config(REPO / "configs" / "test_tiny.yaml", overrides=overrides)
