import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightbrain.config import ConfigError, ModelConfig
from lightbrain.models.lightbrain_tiny import ChunkedCrossEntropy, LightBrainTiny

TINY = dict(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
VARIANTS = [
    {},
    dict(positional="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True, bias=False, tie_embeddings=False),
    dict(mlp="relu2"),
    dict(logit_softcap=2.0),
    dict(attention="matmul"),
    dict(positional="rope", norm="rmsnorm", mlp="swiglu", bias=False, attention="matmul"),
    dict(positional="rope", norm="rmsnorm", mlp="swiglu", bias=False, value_residual=True),
    dict(positional="rope", norm="rmsnorm", mlp="swiglu", bias=False, embedding_skip=True),
    dict(positional="rope", norm="rmsnorm", mlp="swiglu", bias=False, value_residual=True, value_embedding=True),
    dict(positional="rope", norm="rmsnorm", mlp="swiglu", bias=False, attention_gate=True),
    dict(positional="rope", norm="rmsnorm", mlp="swiglu", bias=False, value_residual=True, unet_skips=True),
]


def tiny_model(**kw) -> LightBrainTiny:
    torch.manual_seed(0)
    return LightBrainTiny(ModelConfig(**{**TINY, **kw})).eval()


def option_and_plain(n_layer: int, **option) -> tuple[LightBrainTiny, LightBrainTiny]:
    """A tiny model with an option on, and the plain model holding the same weights (less the option's own)."""
    model = tiny_model(n_layer=n_layer, **option)
    plain = tiny_model(n_layer=n_layer)
    plain.load_state_dict(model.state_dict(), strict=False)
    return model, plain


def test_seed_config_parameter_count():
    model = LightBrainTiny(ModelConfig())
    # 50257*384 token table + 128*384 positions + 6 blocks of 12*384^2 + 13*384 + final LayerNorm
    expected = 50257 * 384 + 128 * 384 + 6 * (12 * 384 * 384 + 13 * 384) + 2 * 384
    assert model.get_num_params() == expected == 29_995_392
    untied = LightBrainTiny(ModelConfig(tie_embeddings=False)).get_num_params()
    assert untied - expected == 50257 * 384


def test_weights_are_tied():
    model = tiny_model()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


@pytest.mark.parametrize("kw", VARIANTS)
def test_future_tokens_never_change_earlier_logits(kw):
    model = tiny_model(**kw)
    x = torch.randint(0, 97, (2, 16))
    y = x.clone()
    y[:, 9:] = torch.randint(0, 97, (2, 7))
    a, _ = model(x)
    b, _ = model(y)
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


@pytest.mark.parametrize("kw", VARIANTS)
def test_kv_cache_decoding_matches_full_forward(kw):
    model = tiny_model(**kw)
    x = torch.randint(0, 97, (3, 16))
    full, _ = model(x)
    cache = model.new_kv_cache(3)
    pieces = [model(x[:, :5], kv_cache=cache)[0], model(x[:, 5:8], kv_cache=cache)[0]]  # prefill, then a chunk
    pieces += [model(x[:, t:t + 1], kv_cache=cache)[0] for t in range(8, 16)]  # one token at a time
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw", [{}, dict(positional="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True)])
def test_matmul_attention_computes_what_sdpa_computes(kw):
    sdpa, matmul = tiny_model(**kw).train(), tiny_model(attention="matmul", **kw).train()
    x, y = torch.randint(0, 97, (3, 16)), torch.randint(0, 97, (3, 16))
    logits_a, loss_a = sdpa(x, y)
    logits_b, loss_b = matmul(x, y)
    torch.testing.assert_close(logits_b, logits_a, atol=1e-5, rtol=1e-5)
    loss_a.backward()
    loss_b.backward()
    for (name, a), b in zip(sdpa.named_parameters(), matmul.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the speedrun's setting: close at bf16's precision
        torch.testing.assert_close(matmul(x, y)[1], sdpa(x, y)[1], atol=0.05, rtol=0.02)


def test_matmul_attention_with_dropout_stays_causal():
    model = tiny_model(attention="matmul", dropout=0.5).train()
    x = torch.randint(0, 97, (2, 16))
    y = x.clone()
    y[:, 9:] = torch.randint(0, 97, (2, 7))
    torch.manual_seed(1)
    a, _ = model(x)
    torch.manual_seed(1)  # the same dropout masks for both inputs
    b, _ = model(y)
    torch.testing.assert_close(a[:, :9], b[:, :9])
    torch.manual_seed(2)
    assert not torch.allclose(model(x)[0], a)  # dropout does act


def test_loss_matches_manual_cross_entropy_and_ignores_minus_one():
    model = tiny_model()
    x = torch.randint(0, 97, (2, 8))
    y = torch.randint(0, 97, (2, 8))
    y[0, :3] = -1
    logits, loss = model(x, y)
    mask = y != -1
    manual = torch.nn.functional.cross_entropy(logits[mask], y[mask])
    torch.testing.assert_close(loss, manual)
    none, loss_only = model(x, y, return_logits=False)  # what training asks for
    assert none is None
    torch.testing.assert_close(loss_only, loss)


def test_logit_softcap_bounds_logits_and_the_loss_uses_them():
    plain, capped = tiny_model(), tiny_model(logit_softcap=0.5)
    capped.load_state_dict(plain.state_dict())  # same weights: only the cap differs
    x = torch.randint(0, 97, (2, 8))
    y = torch.randint(0, 97, (2, 8))
    raw, _ = plain(x, y)
    logits, loss = capped(x, y)
    assert logits.abs().max() < 0.5
    torch.testing.assert_close(logits, 0.5 * torch.tanh(raw / 0.5))
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits.view(-1, 97), y.view(-1)))
    last, _ = capped(x, last_only=True)  # the generation path caps too
    torch.testing.assert_close(last, logits[:, -1:])


def test_zero_proj_init_starts_each_block_as_the_identity_and_then_learns():
    model = tiny_model(proj_init="zero", positional="rope", norm="rmsnorm", mlp="swiglu", bias=False)
    projections = [m.weight for n, m in model.named_modules() if n.endswith("c_proj")]
    assert len(projections) == 4 and all(not w.any() for w in projections)
    assert model.transformer.h[0].attn.c_attn.weight.std() > 0.01  # only the projections start at zero
    x = torch.randint(0, 97, (2, 8))
    h = model.transformer.wte(x)
    expected = model.lm_head(model.transformer.ln_f(h))  # the blocks add nothing yet
    torch.testing.assert_close(model(x)[0], expected)

    model.train()
    opt = model.configure_optimizer(0.0, 1e-2, (0.9, 0.95), "cpu")
    for step in range(2):
        _, loss = model(x, torch.roll(x, -1, dims=1))
        opt.zero_grad()
        loss.backward()
        if step == 0:  # the first gradient reaches the projections, not the weights behind them
            assert all(w.grad.abs().sum() > 0 for w in projections)
            assert not model.transformer.h[0].mlp.c_fc.weight.grad.any()
        opt.step()
    assert model.transformer.h[0].mlp.c_fc.weight.grad.abs().sum() > 0  # from the second step on, it learns
    with pytest.raises(ValueError, match="model.proj_init"):
        ModelConfig(**{**TINY, "proj_init": "ones"}).validate()


def test_value_residual_mixes_the_first_layers_values_into_later_layers():
    model, plain = option_and_plain(3, value_residual=True)
    mixes = [getattr(block.attn, "v_mix", None) for block in model.transformer.h]
    assert mixes[0] is None and [m.item() for m in mixes[1:]] == [0.5, 0.5]
    x = torch.randint(0, 97, (2, 8))
    y = torch.roll(x, -1, dims=1)
    with torch.no_grad():
        for m in mixes[1:]:
            m.fill_(1.0)  # each layer keeps only its own values: the plain model
    torch.testing.assert_close(model(x)[0], plain(x)[0])
    with torch.no_grad():
        mixes[2].fill_(0.0)  # the last layer attends over the first layer's values instead
    assert not torch.allclose(model(x)[0], plain(x)[0])
    model.train()
    _, loss = model(x, y)
    loss.backward()
    assert all(m.grad is not None and m.grad.abs() > 0 for m in mixes[1:])  # the shares learn


def test_embedding_skip_starts_as_the_plain_model_and_learns_its_gains():
    model, plain = option_and_plain(3, embedding_skip=True)
    x = torch.randint(0, 97, (2, 8))
    y = torch.roll(x, -1, dims=1)
    torch.testing.assert_close(model(x)[0], plain(x)[0])  # a = 1, b = 0: the plain model
    with torch.no_grad():
        model.embedding_gain[2] = 1.0  # the last block also reads the token embedding
    assert not torch.allclose(model(x)[0], plain(x)[0])
    model.train()
    _, loss = model(x, y)
    loss.backward()
    assert model.residual_gain.grad.abs().min() > 0 and model.embedding_gain.grad.abs().min() > 0


def test_unet_skips_feed_each_late_block_its_mirrored_early_output():
    model, plain = option_and_plain(4, unet_skips=True)
    x = torch.randint(0, 97, (2, 8))
    torch.testing.assert_close(model(x)[0], plain(x)[0])  # the gains start at 0: the plain model
    with torch.no_grad():
        model.skip_gain.copy_(torch.tensor([0.7, 0.3]))
    inputs, outputs = {}, {}
    for i, block in enumerate(model.transformer.h):
        block.register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0]))
        block.register_forward_hook(lambda m, args, out, i=i: outputs.__setitem__(i, out))
    model(x)
    torch.testing.assert_close(inputs[3], outputs[2] + 0.7 * outputs[0])  # block 3 mirrors block 0
    torch.testing.assert_close(inputs[2], outputs[1] + 0.3 * outputs[1])  # the middle pair: block 2 mirrors 1
    torch.testing.assert_close(inputs[1], outputs[0])  # the first half is the plain model's
    # with the skips in use, cached decoding still matches the full pass
    full, _ = model(x)
    cache = model.new_kv_cache(2)
    pieces = [model(x[:, :5], kv_cache=cache)[0]] + [model(x[:, t:t + 1], kv_cache=cache)[0] for t in range(5, 8)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    model.train()
    _, loss = model(x, torch.roll(x, -1, dims=1))
    loss.backward()
    assert model.skip_gain.grad.abs().min() > 0


def test_value_embedding_adds_a_learned_row_to_every_layers_values():
    model, plain = option_and_plain(3, value_embedding=True)
    assert model.transformer.wve.weight.shape == model.transformer.wte.weight.shape
    gains = [block.attn.ve_gain for block in model.transformer.h]
    assert [g.item() for g in gains] == [0.5, 0.5, 0.5]
    x = torch.randint(0, 97, (2, 8))
    y = torch.roll(x, -1, dims=1)
    assert not torch.allclose(model(x)[0], plain(x)[0])
    with torch.no_grad():
        for g in gains:
            g.fill_(0.0)  # no layer adds it: the plain model
    torch.testing.assert_close(model(x)[0], plain(x)[0])
    with torch.no_grad():
        gains[1].fill_(1.0)
    model.train()
    _, loss = model(x, y)
    loss.backward()
    assert all(g.grad is not None and g.grad.abs() > 0 for g in gains)  # every layer's gain learns
    rows = model.transformer.wve.weight.grad.abs().sum(dim=1)
    seen = torch.zeros(97, dtype=torch.bool)
    seen[x.unique()] = True
    assert rows[seen].min() > 0 and rows[~seen].max() == 0  # only the tokens seen learn


def test_attention_gate_scales_each_attention_output_by_a_learned_sigmoid():
    model, plain = option_and_plain(2, attention_gate=True)
    x = torch.randint(0, 97, (2, 8))
    y = torch.roll(x, -1, dims=1)
    for block in model.transformer.h:
        nn.init.zeros_(block.attn.c_gate.weight)
        nn.init.constant_(block.attn.c_gate.bias, 30.0)  # sigmoid(30) = 1 to float precision: an open gate
    torch.testing.assert_close(model(x)[0], plain(x)[0])
    attn = model.transformer.h[0].attn
    h = torch.randn(2, 8, 32)
    open_out = attn(h)
    nn.init.constant_(attn.c_gate.bias, 0.0)  # sigmoid(0) = 1/2 everywhere: half of it, through c_proj
    torch.testing.assert_close(attn(h) - attn.c_proj.bias, (open_out - attn.c_proj.bias) / 2)
    model.train()
    _, loss = model(x, y)
    loss.backward()
    assert attn.c_gate.weight.grad.abs().sum() > 0  # a gate off its flat ends learns


def causal_and_cached_logits(model: LightBrainTiny, x: torch.Tensor) -> torch.Tensor:
    """model's logits for x (B, 16), after checking that a new token at 9 (which changes what 10 reads of its
    predecessor too) changes nothing before 9, and that decoding through a KV cache, which must remember the
    last token, gives the same logits."""
    logits = model(x)[0]
    y = x.clone()
    y[:, 9] = (x[:, 9] + 1) % model.config.vocab_size
    torch.testing.assert_close(model(y)[0][:, :9], logits[:, :9])
    cache = model.new_kv_cache(x.size(0))
    pieces = [model(x[:, :5], kv_cache=cache)[0]] + [model(x[:, t:t + 1], kv_cache=cache)[0] for t in range(5, 16)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), logits, atol=1e-5, rtol=1e-5)
    return logits


def test_bigram_embedding_starts_as_the_plain_model_and_reads_each_tokens_predecessor():
    model, plain = option_and_plain(2, bigram_embedding=64)
    x = torch.randint(0, 97, (3, 16))
    torch.testing.assert_close(model(x)[0], plain(x)[0])  # the table starts at zero
    rows = model.bigram_rows(x)
    assert rows[0, 0] == (97 * 1_000_003 + x[0, 0]) % 64  # the first token's stand-in predecessor, id vocab_size
    assert rows[1, 5] == (x[1, 4] * 1_000_003 + x[1, 5]) % 64
    with torch.no_grad():
        model.transformer.wbe.weight.normal_()
    logits = causal_and_cached_logits(model, x)
    assert not torch.allclose(logits, plain(x)[0])
    model.train()
    _, loss = model(x, torch.roll(x, -1, dims=1))
    loss.backward()
    grad_rows = model.transformer.wbe.weight.grad.abs().sum(dim=1).nonzero().flatten()
    assert set(grad_rows.tolist()) == set(rows.flatten().tolist())  # only the pairs seen learn
    with pytest.raises(ConfigError, match="model.bigram_embedding"):
        ModelConfig(**{**TINY, "bigram_embedding": -1}).validate()


def test_token_shift_starts_as_the_plain_model_and_reads_each_tokens_predecessor():
    model, plain = option_and_plain(2, token_shift=True)
    x = torch.randint(0, 97, (3, 16))
    torch.testing.assert_close(model(x)[0], plain(x)[0])  # the gain starts at zero
    with torch.no_grad():
        model.shift_gain.normal_()
    logits = causal_and_cached_logits(model, x)
    assert not torch.allclose(logits[:, 1:], plain(x)[0][:, 1:])
    torch.testing.assert_close(logits[:, 0], plain(x)[0][:, 0])  # the first token has no predecessor in view
    model.train()
    _, loss = model(x, torch.roll(x, -1, dims=1))
    loss.backward()
    assert model.shift_gain.grad.abs().sum() > 0


@pytest.mark.parametrize("attention", ["sdpa", "matmul"])
def test_document_mask_keeps_attention_inside_each_document(attention):
    eot = 5
    model = tiny_model(positional="rope", attention=attention, document_mask=True, eot_id=eot)
    plain = tiny_model(positional="rope", attention=attention)  # the same weights: the mask adds none
    x = torch.randint(6, 97, (3, 16))
    torch.testing.assert_close(model(x)[0], plain(x)[0])  # one document: the plain causal model
    x[0, 6], x[1, 11], x[2, 3] = eot, eot, eot  # row 2's boundary falls inside the cache's 5-token prefill
    logits = causal_and_cached_logits(model, x)
    torch.testing.assert_close(logits[0, :6], plain(x)[0][0, :6])  # nothing before a boundary changes
    assert not torch.allclose(logits[0, 6:], plain(x)[0][0, 6:])
    y = x.clone()
    y[0, :6] = torch.randint(6, 97, (6,))  # a different first document
    torch.testing.assert_close(model(y)[0][0, 6:], logits[0, 6:])  # the next one cannot see it
    assert not torch.allclose(plain(y)[0][0, 6:], plain(x)[0][0, 6:])
    alone = model(x[:1, 6:])[0]  # the second document on its own, from its end-of-text token
    torch.testing.assert_close(logits[0, 6:], alone[0], atol=1e-5, rtol=1e-5)  # rotary positions: only offsets
    model.train()
    _, loss = model(x, torch.roll(x, -1, dims=1))
    loss.backward()
    with pytest.raises(ValueError, match="model.eot_id"):
        tiny_model(document_mask=True)
    with pytest.raises(ConfigError, match="model.eot_id"):
        ModelConfig(**{**TINY, "eot_id": 97}).validate()


def test_chunked_cross_entropy_gives_the_plain_loss_and_gradients():
    torch.manual_seed(0)
    x = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(29, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 29, (37,))
    targets[[3, 10, 36]] = -1  # ignored rows, as padding
    plain = F.cross_entropy(x @ w.t(), targets, ignore_index=-1)
    gx, gw = torch.autograd.grad(plain * 3, (x, w))
    for rows in (1, 8, 37, 100):  # chunks that divide the rows, that do not, and one chunk
        chunked = ChunkedCrossEntropy.apply(x, w, targets, rows)
        torch.testing.assert_close(chunked, plain)
        torch.testing.assert_close(torch.autograd.grad(chunked * 3, (x, w)), (gx, gw))


def test_model_with_loss_chunk_rows_trains_as_the_plain_model():
    kw = dict(positional="rope", norm="rmsnorm", mlp="swiglu", bias=False)
    chunked, plain = tiny_model(**kw, loss_chunk_rows=5), tiny_model(**kw)
    x = torch.randint(0, 97, (3, 16))
    y = torch.roll(x, -1, dims=1)
    y[0, :4] = -1
    for model in (chunked, plain):
        model.train()
        _, loss = model(x, y, return_logits=False)
        loss.backward()
    torch.testing.assert_close(chunked(x, y, return_logits=False)[1], plain(x, y)[1])
    for (name, a), b in zip(chunked.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    with torch.no_grad():  # no backward to come: the plain loss
        torch.testing.assert_close(chunked(x, y, return_logits=False)[1], plain(x, y)[1])
    with pytest.raises(ConfigError, match="model.loss_chunk_rows needs model.logit_softcap=0"):
        ModelConfig(**{**TINY, "loss_chunk_rows": 8, "logit_softcap": 15.0}).validate()
    with pytest.raises(ConfigError, match="model.loss_chunk_rows"):
        ModelConfig(**{**TINY, "loss_chunk_rows": -1}).validate()


@pytest.mark.parametrize("kw", [{}, dict(value_residual=True)])
def test_blocks_called_one_by_one_give_the_models_logits(kw):
    # the walk-through a reader does by hand (as the tutorial notebook does): each block and its attention
    # return a tensor, whatever the options
    model = tiny_model(**kw)
    x = torch.randint(0, 97, (1, 8))
    h = model.transformer.wte(x) + model.transformer.wpe(torch.arange(8))
    for block in model.transformer.h:
        attended = block.attn(block.ln_1(h))
        assert isinstance(attended, torch.Tensor) and attended.shape == h.shape
        h = block(h)
    logits = model.lm_head(model.transformer.ln_f(h))
    if not kw:
        torch.testing.assert_close(logits, model(x)[0])


def test_overfits_a_tiny_batch():
    model = tiny_model()
    model.train()
    x = torch.randint(0, 97, (4, 16))
    y = torch.roll(x, -1, dims=1)
    opt = model.configure_optimizer(0.0, 3e-3, (0.9, 0.95), "cpu")
    first = None
    for _ in range(150):
        _, loss = model(x, y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


def test_too_long_input_is_a_clear_error():
    model = tiny_model()
    with pytest.raises(ValueError, match="longer than the model's context of 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_weight_decay_only_on_matrices():
    model = tiny_model()
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.95), "cpu")
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0
    for p in model.parameters():
        assert (id(p) in decayed) == (p.dim() >= 2)
