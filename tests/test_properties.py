"""Property-based tests (hypothesis): the data path loses, invents and reorders nothing, whatever the text.

Examples stay few and small so the file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from lightbrain.config import DataConfig
from lightbrain.data.cleaning import normalise_whitespace
from lightbrain.data.loader import BatchSampler, sequential_batches
from lightbrain.data.prepare import prepare_data
from lightbrain.data.sources import DataError, Document
from lightbrain.data.split import split_of
from lightbrain.data.token_files import TokenFile, open_split, split_documents, token_dtype, write_token_file
from lightbrain.data.tokenizers import EOT, MedicalBPETokenizer, train_medical_bpe

from conftest import tiny_corpus

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any Unicode scalar value (lone surrogates cannot be UTF-8 encoded, so no text file can hold one),
# mixed with the end-of-text marker written out literally: it must stay ordinary text.
UNICODE = st.characters(blacklist_categories=("Cs",))
TEXT = st.lists(st.one_of(st.text(UNICODE, max_size=30), st.just(EOT), st.sampled_from(["\n", "  ", "\t", "é", "🩺"])),
                max_size=8).map("".join)


@pytest.fixture(scope="module")
def medical_bpe() -> MedicalBPETokenizer:
    # trained on text that shares no alphabet with most of what hypothesis draws: bytes must carry the rest
    return train_medical_bpe(tiny_corpus(80, seed=3), vocab_size=320)


def check_round_trip(tokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert tokenizer.eot_id not in ids  # a literal "<|endoftext|>" never becomes a document boundary
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode_bytes(ids) == text.encode("utf-8")
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode_batch([text, text]) == [ids, ids]


@PROPERTY
@given(text=TEXT)
@example(text="a<|endoftext|>b")
@example(text="\u2028\x00\ufeff\U0010ffff")
def test_medical_bpe_round_trips_any_text(medical_bpe, text):
    check_round_trip(medical_bpe, text)


@pytest.fixture(scope="module")
def gpt2(tiktoken_cache):
    from lightbrain.data.tokenizers import GPT2Tokenizer

    return GPT2Tokenizer()


@PROPERTY
@given(text=TEXT)
@example(text="<|endoftext|>")
def test_gpt2_round_trips_any_text(gpt2, text):
    check_round_trip(gpt2, text)


def expected_splits(texts: list[str], validation_one_in: int) -> dict[str, list[str]]:
    """What prepare promises for generic text: whitespace normalised, empty and repeated texts dropped
    (first kept), each split in input order by the hash rule."""
    out: dict[str, list[str]] = {"train": [], "validation": []}
    seen = set()
    for text in map(normalise_whitespace, texts):
        if text and text not in seen:
            seen.add(text)
            out[split_of(Document(text, group=text), validation_one_in)].append(text)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(TEXT, min_size=1, max_size=12))
@example(texts=["Fever.", "Cough <|endoftext|> and fever.", "Fever.", "  \n ", "Rash \u00e9\U0001fa7a"])
def test_prepare_then_decode_gives_back_every_document(texts):
    """A .jsonl of arbitrary documents through `prepare` (medical BPE) and back: each kept document is decoded
    exactly from its split's token file, in order, and meta.json counts them; or prepare refuses with a
    DataError when a split would be empty."""
    want = expected_splits(texts, validation_one_in=2)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "notes.jsonl"
        source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        config = DataConfig(sources=[str(source)], tokenizer="medical-bpe", bpe_vocab_size=280,
                            out_dir=str(Path(tmp) / "processed"), validation_one_in=2, num_workers=1)
        if not want["train"] or not want["validation"]:
            with pytest.raises(DataError):
                prepare_data(config, progress=False)
            return
        meta = prepare_data(config, progress=False)
        tokenizer = MedicalBPETokenizer.from_file(Path(tmp) / "processed" / "tokenizer.json")
        for split, docs in want.items():
            tokens = open_split(config.out_dir, split).tokens
            got = [tokenizer.decode_bytes(d.tolist()).decode("utf-8") for d in split_documents(tokens, meta["eot_id"])]
            assert got == docs
            assert len(tokens) == 0 or tokens[-1] == meta["eot_id"]  # nothing after the last document
            stats = meta["splits"][split]
            assert (stats["documents"], stats["tokens"], stats["bytes"]) == \
                (len(docs), len(tokens), sum(len(d.encode("utf-8")) for d in docs))


@PROPERTY
@given(n=st.integers(2, 400), block=st.integers(1, 40), batch=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_sequential_batches_score_every_token_exactly_once(n, block, batch, seed):
    tokens = np.random.default_rng(seed).integers(0, 70_000, size=n).astype(np.uint32)
    xs, ys = zip(*sequential_batches(tokens, block, batch))
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == y.shape and x.shape[1] == block and all(len(b) <= batch for b in xs)
    scored = y >= 0
    assert y[scored].tolist() == tokens[1:].tolist()  # every target once, in order
    assert x[scored].tolist() == tokens[:-1].tolist()  # each with the token before it as input
    # padding only at the end of the last window
    flat = scored.flatten()
    assert flat[: int(flat.sum())].all()


@PROPERTY
@given(n=st.integers(2, 300), block=st.integers(1, 16), batch=st.integers(1, 6), world=st.integers(1, 3),
       seed=st.integers(0, 1000), steps=st.integers(1, 12))
@example(n=36, block=8, batch=4, world=1, seed=0, steps=6)  # an epoch offset used to cost the only full batch
def test_batch_sampler_always_gives_full_batches_and_resumes_exactly(n, block, batch, world, seed, steps):
    tokens = np.arange(n)
    assume(n >= block + 1)
    samplers = [BatchSampler(tokens, block, batch, seed=seed, rank=r, world_size=world) for r in range(world)]
    seen = []
    for _ in range(steps):
        for s in samplers:
            epoch = s.epoch
            starts = s.next_starts()
            assert len(starts) == batch
            assert starts.min() >= 0 and starts.max() + block + 1 <= n
            if not s.overlapping and s.epoch == epoch:
                seen.append((s.epoch, tuple(starts)))
    if not samplers[0].overlapping:  # whole windows: none twice in an epoch, across all ranks
        per_epoch: dict[int, list[int]] = {}
        for epoch, starts in seen:
            per_epoch.setdefault(epoch, []).extend(starts)
        assert all(len(v) == len(set(v)) for v in per_epoch.values())
    state = samplers[0].state_dict()
    resumed = BatchSampler(tokens, block, batch, seed=seed, rank=0, world_size=world)
    resumed.load_state_dict(state)
    for _ in range(3):
        assert np.array_equal(resumed.next_starts(), samplers[0].next_starts())


@PROPERTY
@given(vocab=st.sampled_from([257, 50_257, 65_535, 65_536, 100_277, 200_019]), seed=st.integers(0, 1000),
       sizes=st.lists(st.integers(0, 50), max_size=5))
def test_token_files_keep_every_id(vocab, seed, sizes):
    dtype = token_dtype(vocab)
    assert dtype == (np.uint16 if vocab <= 65_535 else np.uint32)
    rng = np.random.default_rng(seed)
    chunks = [rng.integers(0, vocab, size=k) for k in sizes]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.bin"
        assert write_token_file(path, chunks, dtype) == sum(sizes)
        back = TokenFile(path, dtype.name).tokens
        assert back.tolist() == [int(i) for c in chunks for i in c]
