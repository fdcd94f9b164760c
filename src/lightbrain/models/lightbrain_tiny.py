"""LightBrain-Tiny: a decoder-only transformer, readable top to bottom in one file.

A token's path: token embedding (+ learned position embedding) -> n_layer pre-norm Blocks, each
x + attn(norm(x)) then x + mlp(norm(x)) -> final norm -> lm_head (tied to the token embedding)
-> logits over the vocabulary.

The defaults are the seed architecture, LightBrain-Tiny-v1.0 (GPT-2 style: learned positions,
LayerNorm, GELU MLP, biases, tied embeddings). The options `positional`, `norm`, `mlp`, `qk_norm`,
`tie_embeddings`, `logit_softcap`, `proj_init`, `value_residual`, `embedding_skip`, `unet_skips`,
`value_embedding`, `attention_gate`, `bigram_embedding`, `token_shift` and `document_mask` exist for the CPU
speedrun preset and change nothing when left at their defaults.

Parameter accounting (seed config, vocab 50,257, block 128, 6 x 384):
  token embedding 50,257 x 384 = 19.30M, position embedding 128 x 384 = 0.05M,
  each block 12 x 384^2 + 13 x 384 = 1.77M, so 6 blocks = 10.65M, final norm 768:
  29,995,392 in all with the output head tied to the token embedding (get_num_params()).
  An untied head adds another 19.30M (49,294,080 in all); the "~55M" quoted in the original
  spec is that untied kind of count, not what this model holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lightbrain.config import ModelConfig


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's cannot drop the bias alone before 2.1)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class RMSNorm(nn.Module):
    def __init__(self, ndim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, 1e-5)


def make_norm(config: ModelConfig, ndim: int | None = None) -> nn.Module:
    ndim = ndim or config.n_embd
    return RMSNorm(ndim) if config.norm == "rmsnorm" else LayerNorm(ndim, config.bias)


def rope_tables(head_dim: int, length: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for rotary position embeddings, each (length, head_dim // 2)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, nh, T, hs); rotate pairs (first half, second half) of each head by the position's angle
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to `max_len`.

    Decoding then costs one token's work per step instead of re-running the whole context.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int, head_dim: int,
                 device: torch.device | str, dtype: torch.dtype):
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0  # number of positions already filled
        self.doc = torch.zeros((batch_size, max_len), dtype=torch.long, device=device)  # model.document_mask
        self.last_token: torch.Tensor | None = None  # (B, 1), the newest token: the next one's predecessor

    def reset(self) -> None:
        """Forget every position, keeping the allocation (stale entries past `pos` are never read)."""
        self.pos = 0

    def _check_room(self, T: int) -> None:
        if self.pos + T > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {self.pos} used, {T} more asked for")

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's k, v (B, nh, T, hs) for `layer`; return all keys and values so far."""
        T = k.size(2)
        self._check_room(T)
        self.k[layer, :, :, self.pos:self.pos + T] = k
        self.v[layer, :, :, self.pos:self.pos + T] = v
        return self.k[layer, :, :, :self.pos + T], self.v[layer, :, :, :self.pos + T]

    def update_documents(self, doc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the document numbers (B, T) of this step's tokens, counted from the first new token, after
        the cached ones; return them continued from the cache, and the numbers of all positions so far."""
        T = doc.size(1)
        self._check_room(T)
        if self.pos > 0:
            doc = doc + self.doc[:, self.pos - 1:self.pos]
        self.doc[:, self.pos:self.pos + T] = doc
        return doc, self.doc[:, :self.pos + T]


def attention_by_matmul(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float,
                        allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention written out: softmax(q k^T / sqrt(head_dim), future masked) v, as SDPA computes it.
    On CPU in bf16 at this model's short context these plain matmuls run faster than PyTorch's CPU
    flash-attention kernel (docs/experiments.md); model.attention=matmul picks them. `allowed` (B, 1, T, T),
    if given, replaces the causal mask (True where a query may see a key)."""
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (B, nh, T, T)
    hidden = ~allowed if allowed is not None else torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    weights = torch.softmax(scores.masked_fill(hidden, float("-inf")).float(), dim=-1).to(v.dtype)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    return weights @ v  # (B, nh, T, hs)


class ChunkedCrossEntropy(torch.autograd.Function):
    """The mean cross-entropy of logits x @ weight^T against targets (-1 ignored), a chunk of rows at a time,
    with both gradients found in the same pass. The (rows, vocab) logits never exist whole, in memory or
    saved for backward; on 2 CPU cores the speedrun's output layer and loss take 68 instead of 97 ms at 512 rows
    (bench/output_layer.py).
    Only worth it when a backward pass follows: the model uses it for training losses alone."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int) -> torch.Tensor:
        count = (targets >= 0).sum()
        losses, x_grads = [], []
        wide = torch.promote_types(weight.dtype, torch.float32)  # fp32, or fp64 where the weights are
        weight_grad = torch.zeros(weight.shape, dtype=wide, device=weight.device)
        for xc, tc in zip(x.split(chunk_rows), targets.split(chunk_rows)):
            scores = xc @ weight.t()  # (rows, vocab), in the matmul's dtype (bf16 under autocast)
            logits = scores.to(wide)
            valid = tc >= 0
            safe = tc.clamp(min=0)
            lse = torch.logsumexp(logits, dim=-1)
            losses.append(((lse - logits.gather(1, safe[:, None]).squeeze(1)) * valid).sum())
            # d loss / d logits = (softmax - one-hot) / count, for the rows that count
            grad = torch.exp(logits - lse[:, None])
            grad.scatter_add_(1, safe[:, None], torch.full_like(lse[:, None], -1.0))
            grad = (grad * (valid / count)[:, None]).to(scores.dtype)
            x_grads.append(grad @ weight)
            weight_grad += (grad.t() @ xc).to(wide)
        ctx.save_for_backward(torch.cat(x_grads).to(x.dtype), weight_grad.to(weight.dtype))
        return torch.stack(losses).sum() / count

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        x_grad, weight_grad = ctx.saved_tensors
        return x_grad * grad_loss, weight_grad * grad_loss, None, None


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int = 0):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.head_dim = config.n_embd // config.n_head
        self.layer_idx = layer_idx
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout
        self.qk_norm = config.qk_norm
        self.by_matmul = config.attention == "matmul"
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim)
            self.k_norm = RMSNorm(self.head_dim)
        if config.value_residual and layer_idx > 0:
            self.v_mix = nn.Parameter(torch.tensor(0.5))  # this layer's share of its own values
        if config.value_embedding:
            self.ve_gain = nn.Parameter(torch.tensor(0.5))  # how much of the value embedding this layer adds
        self.gated = config.attention_gate
        if config.attention_gate:
            self.c_gate = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                kv_cache: KVCache | None = None, v_first: torch.Tensor | None = None, return_values: bool = False,
                v_embed: torch.Tensor | None = None, allowed: torch.Tensor | None = None):
        """x (B, T, C) -> the attention output (B, T, C). With model.value_residual the first layer is also
        asked for its own values (return_values=True: a pair), which later layers receive as v_first.
        With model.value_embedding, v_embed (B, nh, T, hs) is the value embedding's rows for these tokens.
        With model.document_mask, allowed (B, 1, T, past + T) says which keys each query may see."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        own_v = v
        if v_first is not None:
            # value residual: later layers keep a learned share of the first layer's values, which carry
            # each token's own content forward however the residual stream has mixed it by then
            v = self.v_mix * v + (1 - self.v_mix) * v_first
        if v_embed is not None:
            # value embedding: each token's own learned row in every layer's values, beside what the
            # layer computes from the (by now mixed) residual stream
            v = v + self.ve_gain * v_embed

        past = 0
        if kv_cache is not None:
            past = kv_cache.pos
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, nh, past + T, hs)

        dropout_p = self.dropout if self.training else 0.0
        if past == 0 and self.by_matmul:
            y = attention_by_matmul(q, k, v, dropout_p, allowed)
        elif allowed is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
        elif past == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=T > 1)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # one new token sees everything
        else:
            # a chunk after a cached prefix: token i of the chunk sees the prefix and chunk tokens <= i
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads: (B, T, C)
        if self.gated:
            # a gate per token and channel, from the same input: attention may say nothing where nothing fits
            y = y * torch.sigmoid(self.c_gate(x))
        out = self.resid_dropout(self.c_proj(y))
        return (out, own_v) if return_values else out


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.kind = config.mlp
        hidden = 4 * config.n_embd
        if self.kind == "swiglu":
            hidden = int(8 * config.n_embd / 3 / 64 + 0.999) * 64  # same parameter count as 4x, rounded to 64
            self.c_gate = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.c_fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            h = F.silu(self.c_gate(x)) * self.c_fc(x)
        elif self.kind == "relu2":
            h = F.relu(self.c_fc(x)).square()
        else:
            h = F.gelu(self.c_fc(x), approximate="tanh")  # GPT-2's GELU
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int = 0):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, rope=None, kv_cache: KVCache | None = None,
                v_first: torch.Tensor | None = None, return_values: bool = False, v_embed: torch.Tensor | None = None,
                allowed: torch.Tensor | None = None):
        attended = self.attn(self.ln_1(x), rope, kv_cache, v_first, return_values, v_embed, allowed)
        if return_values:
            attended, v = attended
        x = x + attended  # pre-norm residual
        x = x + self.mlp(self.ln_2(x))
        return (x, v) if return_values else x


class LightBrainTiny(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        if config.vocab_size is None:
            raise ValueError("model.vocab_size is unset: take it from the prepared data's meta.json first")
        if config.document_mask and config.eot_id is None:
            raise ValueError("model.document_mask needs model.eot_id: take it from the prepared data's meta.json first")
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=make_norm(config),
        ))
        if config.positional == "learned":
            self.transformer["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        else:
            cos, sin = rope_tables(config.n_embd // config.n_head, config.block_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        if config.embedding_skip:
            # block i reads residual_gain[i] * x + embedding_gain[i] * x0, x0 the token embedding: the plain
            # model at the start, and a way for late layers to see each token's own identity undiluted
            self.residual_gain = nn.Parameter(torch.ones(config.n_layer))
            self.embedding_gain = nn.Parameter(torch.zeros(config.n_layer))
        if config.unet_skips:
            # skip_gain[i] is the share of block i's output that the mirrored block n_layer - 1 - i adds to its
            # input: the plain model at the start; late blocks can reach early, less mixed, features directly
            self.skip_gain = nn.Parameter(torch.zeros(config.n_layer // 2))
        if config.value_embedding:
            self.transformer["wve"] = nn.Embedding(config.vocab_size, config.n_embd)  # rows added to the values
        if config.bigram_embedding:
            self.transformer["wbe"] = nn.Embedding(config.bigram_embedding, config.n_embd)  # hashed token pairs
        if config.token_shift:
            self.shift_gain = nn.Parameter(torch.zeros(config.n_embd))  # per channel; the plain model at the start
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # weight tying: the output head reuses the input embedding (saves vocab x n_embd parameters)
            self.lm_head.weight = self.transformer.wte.weight

        self.apply(self._init_weights)
        # scaled init of residual projections, per GPT-2: keeps the residual stream's variance flat with depth;
        # proj_init=zero starts every block as the identity instead (from the second step on, all of it learns)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                if config.proj_init == "zero":
                    torch.nn.init.zeros_(p)
                else:
                    torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.bigram_embedding:
            torch.nn.init.zeros_(self.transformer.wbe.weight)  # the plain model at the start

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding: bool = False) -> int:
        """Parameters, counting tied weights once. non_embedding=True leaves out the position table
        (and the token table when the head is untied), as is usual for scaling comparisons."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        c = self.config
        p = self.transformer.ln_f.weight  # a float tensor in the activations' dtype, even when Linears are quantized
        return KVCache(c.n_layer, batch_size, c.n_head, max_len or c.block_size, c.n_embd // c.n_head,
                       p.device, dtype or p.dtype)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None, last_only: bool = False, return_logits: bool = True):
        """idx (B, T) token ids -> (logits, loss).

        logits are (B, T, vocab), or (B, 1, vocab) with last_only=True (all generation needs).
        loss is the mean cross-entropy against targets (B, T), positions with target -1 ignored.
        return_logits=False returns (None, loss): what training needs.
        With a kv_cache, idx holds only the new tokens and positions continue from the cache.
        """
        B, T = idx.size()
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"sequence of {start + T} tokens is longer than the model's context of {self.config.block_size}; "
                "crop it (generate() slides the window for you)"
            )
        x = tok = self.transformer.wte(idx)  # (B, T, C)
        if self.config.bigram_embedding:
            x = x + self.transformer.wbe(self.bigram_rows(idx, kv_cache))  # what this pair of tokens adds
        if self.config.token_shift:
            x = x + self.shift_gain * self.previous_embeddings(tok, kv_cache)
        rope = None
        if self.config.positional == "learned":
            pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
            x = x + self.transformer.wpe(pos)  # (B, T, C) + (T, C)
        else:
            rope = (self.rope_cos[start:start + T], self.rope_sin[start:start + T])
        x = self.transformer.drop(x)
        x0 = x
        v_first = v_embed = None
        if self.config.value_embedding:
            nh = self.config.n_head
            v_embed = self.transformer.wve(idx).view(B, T, nh, -1).transpose(1, 2)  # (B, nh, T, hs)
        allowed = self.document_mask(idx, kv_cache) if self.config.document_mask else None
        n_layer, skips = self.config.n_layer, []
        for i, block in enumerate(self.transformer.h):
            if self.config.embedding_skip:
                x = self.residual_gain[i] * x + self.embedding_gain[i] * x0
            if self.config.unet_skips and i >= n_layer - n_layer // 2:
                x = x + self.skip_gain[n_layer - 1 - i] * skips[n_layer - 1 - i]
            if self.config.value_residual and i == 0:
                x, v_first = block(x, rope, kv_cache, return_values=True, v_embed=v_embed, allowed=allowed)
            else:
                x = block(x, rope, kv_cache, v_first, v_embed=v_embed, allowed=allowed)
            if self.config.unet_skips and i < n_layer // 2:
                skips.append(x)
        if kv_cache is not None:
            kv_cache.pos += T
            kv_cache.last_token = idx[:, -1:]
        x = self.transformer.ln_f(x)  # (B, T, C)

        if targets is not None:
            chunk = self.config.loss_chunk_rows
            if chunk and not return_logits and torch.is_grad_enabled():
                loss = ChunkedCrossEntropy.apply(x.reshape(B * T, -1), self.lm_head.weight, targets.reshape(-1), chunk)
                return None, loss
            logits = self.softcap(self.lm_head(x).float())  # (B, T, vocab), in fp32 for the loss
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
            # Without the logits as an output, torch.compile need not write the (B, T, vocab) fp32 tensor
            # to memory: a step of the CPU speedrun model takes 382 instead of 460 ms (docs/experiments.md).
            return (logits if return_logits else None), loss
        if last_only:
            x = x[:, -1:, :]  # only the next token's distribution is needed
        return self.softcap(self.lm_head(x)), None

    def bigram_rows(self, idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Each position's row in the bigram table: a hash of (previous token, token). A window's first token
        has no predecessor in view (id vocab_size stands in), unless a KV cache holds the one before it."""
        if kv_cache is not None and kv_cache.pos > 0:
            first = kv_cache.last_token
        else:
            first = torch.full_like(idx[:, :1], self.config.vocab_size)
        prev = torch.cat([first, idx[:, :-1]], dim=1)
        return (prev * 1_000_003 + idx) % self.config.bigram_embedding  # a large odd multiplier spreads pairs

    def document_mask(self, idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Which keys each new position may see (B, 1, T, past + T): earlier or the same positions of its own
        document. Documents are numbered by counting end-of-text tokens, each counted at its own position, so
        an end-of-text token opens the next document (as a first token, it sees only itself)."""
        T = idx.size(1)
        doc = keys = (idx == self.config.eot_id).long().cumsum(dim=1)  # (B, T)
        past = 0
        if kv_cache is not None:
            past = kv_cache.pos
            doc, keys = kv_cache.update_documents(doc)
        causal = torch.ones(T, past + T, dtype=torch.bool, device=idx.device).tril(diagonal=past)
        return (causal & (doc[:, :, None] == keys[:, None, :])).unsqueeze(1)

    def previous_embeddings(self, tok: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Each position's predecessor's token embedding (B, T, C): zeros for a window's first token, unless a
        KV cache holds the token before it."""
        if kv_cache is not None and kv_cache.pos > 0:
            first = self.transformer.wte(kv_cache.last_token)
        else:
            first = torch.zeros_like(tok[:, :1])
        return torch.cat([first, tok[:, :-1]], dim=1)

    def softcap(self, logits: torch.Tensor) -> torch.Tensor:
        # a smooth bound on the logits' size, cap * tanh(logits / cap): no token's score can run away early
        cap = self.config.logit_softcap
        return cap * torch.tanh(logits / cap) if cap > 0 else logits

    def configure_optimizer(self, weight_decay: float, learning_rate: float, betas: tuple[float, float],
                            device_type: str) -> torch.optim.Optimizer:
        """AdamW with decay on >=2-D weights only (matrices, embeddings); biases and norms are not decayed."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        # the fused kernel updates all tensors in one pass: on CPU, several times faster than the default
        fused = device_type in ("cuda", "cpu")
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward): 6 per matmul weight, plus attention's 12 * L * C * T."""
        c = self.config
        matmul = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        return 6 * matmul + 12 * c.n_layer * c.n_embd * c.block_size
