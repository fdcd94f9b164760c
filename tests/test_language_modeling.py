"""Whole-split scoring: every token predicted once, and each source's share of the file scored on its own."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightbrain.config import ModelConfig
from lightbrain.evaluation.language_modeling import evaluate_tokens, source_segments
from lightbrain.models.lightbrain_tiny import LightBrainTiny


def reference_nats(model, tokens: np.ndarray) -> np.ndarray:
    """Each target's loss from one window at a time, indexed by the target's position in the file."""
    block, out = model.config.block_size, np.zeros(len(tokens))
    for start in range(0, len(tokens) - 1, block):
        window = torch.as_tensor(tokens[start:start + block + 1].astype(np.int64))
        logits, _ = model(window[None, :-1])
        out[start + 1:start + len(window)] = F.cross_entropy(logits[0], window[1:], reduction="none").double().numpy()
    return out


@torch.no_grad()
def test_by_source_scores_each_stretch_of_the_file():
    torch.manual_seed(0)
    model = LightBrainTiny(ModelConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0))
    tokens = np.random.default_rng(0).integers(0, 50, size=203).astype(np.uint16)
    split_meta = {"tokens": 203, "sources": [{"type": "a", "tokens": 70, "bytes": 300, "copies": 1},
                                             {"type": "b", "tokens": 133, "bytes": 500, "copies": 1}]}
    segments = source_segments(split_meta)
    assert segments == [{"name": "a", "start": 0, "end": 70, "bytes": 300}, {"name": "b", "start": 70, "end": 203, "bytes": 500}]

    result = evaluate_tokens(model, tokens, 800, batch_size=3, segments=segments)
    nats = reference_nats(model, tokens)
    a, b = result["by_source"]["a"], result["by_source"]["b"]
    assert a["tokens"] == 69 and b["tokens"] == 133  # the file's first token is never a target
    assert a["loss"] * 69 == pytest.approx(nats[1:70].sum(), rel=1e-5)
    assert b["loss"] * 133 == pytest.approx(nats[70:].sum(), rel=1e-5)
    assert b["bits_per_byte"] == pytest.approx(nats[70:].sum() / math.log(2) / 500, rel=1e-5)
    assert result["loss"] * result["tokens"] == pytest.approx(nats.sum(), rel=1e-5)
    assert "by_source" not in evaluate_tokens(model, tokens, 800, batch_size=3)


def test_source_segments_refuse_maps_that_do_not_fit():
    assert source_segments({"tokens": 10}) == []  # a build from before per-source counts
    assert source_segments({"tokens": 10, "sources": [{"type": "a", "tokens": 9, "bytes": 1}]}) == []
    copies = {"tokens": 10, "sources": [{"type": "a", "tokens": 6, "bytes": 1, "copies": 2},
                                        {"type": "b", "tokens": 4, "bytes": 1, "copies": 1}]}
    assert source_segments(copies) == []  # copies are spread over the file
