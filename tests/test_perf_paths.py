"""Correctness of the fast paths: the KV cache and sliding window, top-k sampling over candidates,
fused AdamW, and the bf16 / int8 inference copies (close to fp32 within stated tolerances)."""

import pytest
import torch

from lightbrain.config import ModelConfig
from lightbrain.inference.generate import generate, sample_next
from lightbrain.inference.quantize import (Int8Embedding, Int8Linear, dequantized_matmul, int8_matmul,
                                           quantize_for_inference, quantize_rows)
from lightbrain.models.lightbrain_tiny import LightBrainTiny

SMALL = dict(vocab_size=211, block_size=16, n_layer=2, n_head=2, n_embd=64, dropout=0.0)

# Tolerances, relative to the fp32 logits' standard deviation (mean absolute difference):
# bf16 keeps 8 bits of mantissa, int8 weights 7 bits plus sign per row.
BF16_TOL, INT8_TOL = 0.01, 0.02


def small_model(**kw) -> LightBrainTiny:
    torch.manual_seed(0)
    model = LightBrainTiny(ModelConfig(**{**SMALL, **kw})).eval()
    with torch.no_grad():  # wider logits than at init, so greedy choices have margins as in a trained model
        model.lm_head.weight.mul_(8.0)
    return model


def window_reference(model, prompt, n):
    """Greedy decoding with no cache: every step re-runs the window generate() keeps
    (grow to block_size, then restart from the most recent half)."""
    block, keep = model.config.block_size, model.config.block_size // 2
    window, out = prompt[:, -block:], prompt
    for _ in range(n):
        token = model(window)[0][:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, token], dim=1)
        window = torch.cat([window, token], dim=1)
        if window.size(1) > block:
            window = window[:, -keep:]
    return out


@pytest.mark.parametrize("kw", [{}, dict(positional="rope", norm="rmsnorm", tie_embeddings=False)])
def test_kv_cache_steps_equal_full_forward_in_fp32(kw):
    model = small_model(**kw)
    x = torch.randint(0, 211, (2, 16))
    with torch.no_grad():
        full, _ = model(x)
        cache = model.new_kv_cache(2)
        for _ in range(2):  # the second pass reuses the same allocation after reset()
            cache.reset()
            steps = [model(x[:, :6], kv_cache=cache)[0]]  # a prefill, then one token at a time
            steps += [model(x[:, t:t + 1], kv_cache=cache)[0] for t in range(6, 16)]
            torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_sliding_window_matches_uncached_reference():
    model = small_model()
    prompt = torch.randint(0, 211, (2, 5))
    out = generate(model, prompt, 45, temperature=0)  # crosses the 16-token context several times
    assert torch.equal(out, window_reference(model, prompt, 45))


def test_top_k_draws_follow_the_renormalised_distribution():
    logits = torch.tensor([[2.0, 0.0, 1.0, -3.0, 1.5, 0.5]])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits, 1.0, top_k=3, generator=g) for _ in range(4000)])
    counts = torch.bincount(draws.flatten(), minlength=6).float() / 4000
    expected = torch.zeros(6)
    expected[[0, 4, 2]] = torch.tensor([2.0, 1.5, 1.0]).softmax(0)
    assert counts[[1, 3, 5]].sum() == 0
    torch.testing.assert_close(counts, expected, atol=0.03, rtol=0)
    # top-k then top-p: of the 3 best, 0.6 of the mass is reached by the first two
    both = {int(sample_next(logits, 1.0, top_k=3, top_p=0.6, generator=g)) for _ in range(300)}
    assert both == {0, 4}
    # rows of a batch are sampled independently and mapped back to vocabulary ids
    batch = torch.tensor([[0.0, 9.0, 0.0], [9.0, 0.0, 0.0]])
    assert sample_next(batch, 1.0, top_k=1, generator=g).tolist() == [1, 0]


def test_cpu_optimizer_is_fused_and_steps():
    model = small_model()
    model.train()
    opt = model.configure_optimizer(0.1, 1e-2, (0.9, 0.95), "cpu")
    assert opt.defaults["fused"]
    x = torch.randint(0, 211, (4, 16))
    losses = []
    for _ in range(5):
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_int8_rows_round_trip_within_half_a_step():
    w = torch.randn(40, 64) * torch.logspace(-3, 0, 40)[:, None]  # rows of very different scale
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-7).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_int8_kernel_matches_the_plain_reference(dtype):
    torch.manual_seed(0)
    w = torch.randn(96, 64) * 0.05
    q, scale = quantize_rows(w)
    x = torch.randn(5, 64).to(dtype)
    fast, ref = int8_matmul(x, q, scale), dequantized_matmul(x, q, scale)
    assert fast.dtype == dtype and fast.shape == (5, 96)
    torch.testing.assert_close(fast.float(), ref.float(), atol=0.02, rtol=0.02)
    torch.testing.assert_close(fast.float(), x.float() @ w.T, atol=0.03, rtol=0.03)


@pytest.mark.parametrize("mode,tol", [("bf16", BF16_TOL), ("int8", INT8_TOL)])
def test_quantized_copy_stays_close_to_fp32(mode, tol):
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = quantize_for_inference(model, mode)
    x = torch.randint(0, 211, (4, 16))
    with torch.no_grad():
        ref, _ = model(x)
        got, _ = fast(x)
    assert got.dtype == torch.bfloat16
    assert (got.float() - ref).abs().mean() <= tol * ref.std()
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9  # greedy choices mostly agree
    # the original is untouched: still fp32, same values, still trainable
    for k, v in model.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k])
    assert all(p.requires_grad for p in model.parameters())


def test_int8_copy_keeps_the_tie_and_quantizes_every_linear():
    fast = quantize_for_inference(small_model(), "int8")
    assert isinstance(fast.lm_head, Int8Linear) and isinstance(fast.transformer.wte, Int8Embedding)
    assert fast.transformer.wte.qweight.data_ptr() == fast.lm_head.qweight.data_ptr()
    assert not any(isinstance(m, torch.nn.Linear) for m in fast.modules())
    untied = quantize_for_inference(small_model(tie_embeddings=False), "int8")
    assert isinstance(untied.transformer.wte, torch.nn.Embedding)  # an untied table stays a (bf16) embedding


@pytest.mark.parametrize("mode", ["bf16", "int8"])
def test_quantized_decoding_uses_its_cache_consistently(mode):
    fast = quantize_for_inference(small_model(), mode)
    x = torch.randint(0, 211, (2, 12))
    with torch.no_grad():
        full, _ = fast(x)
        cache = fast.new_kv_cache(2)
        assert cache.k.dtype == torch.bfloat16
        steps = [fast(x[:, :4], kv_cache=cache)[0]] + [fast(x[:, t:t + 1], kv_cache=cache)[0] for t in range(4, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1).float(), full.float(), atol=0.05, rtol=0.05)
    out = generate(fast, x[:1, :3], 30, top_k=5, seed=0)  # past the 16-token context
    assert out.shape == (1, 33) and int(out.max()) < 211


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown quantization mode 'fp8'"):
        quantize_for_inference(small_model(), "fp8")
