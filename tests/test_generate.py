import pytest
import torch

from lightbrain.inference.generate import generate, generate_text, sample_next, stream_text

from test_model import tiny_model


def full_context_greedy(model, idx, n):
    """Reference: re-run the whole (cropped) context for every token, no cache."""
    for _ in range(n):
        logits, _ = model(idx[:, -model.config.block_size:])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def test_greedy_with_cache_matches_recompute_within_context():
    model = tiny_model()
    prompt = torch.randint(0, 97, (2, 4))
    out = generate(model, prompt, 12, temperature=0)
    assert out.shape == (2, 16)
    assert torch.equal(out, full_context_greedy(model, prompt, 12))


def test_output_longer_than_block_size_keeps_working():
    model = tiny_model()
    prompt = torch.randint(0, 97, (1, 20))  # already longer than the 16-token context
    out = generate(model, prompt, 40, temperature=0)
    assert out.shape == (1, 60)
    assert torch.equal(out[:, :20], prompt)


def test_seed_makes_sampling_reproducible():
    model = tiny_model()
    prompt = torch.randint(0, 97, (1, 3))
    a = generate(model, prompt, 20, temperature=1.0, top_k=10, seed=7)
    b = generate(model, prompt, 20, temperature=1.0, top_k=10, seed=7)
    c = generate(model, prompt, 20, temperature=1.0, top_k=10, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_top_k_and_top_p_restrict_choices():
    logits = torch.tensor([[5.0, 4.0, 1.0, 0.0, -1.0]])
    g = torch.Generator().manual_seed(0)
    picks = {int(sample_next(logits, 1.0, top_k=2, generator=g)) for _ in range(200)}
    assert picks == {0, 1}
    # top-p 0.5: the top token alone holds ~72% of the mass, so it is the only choice
    picks = {int(sample_next(logits, 1.0, top_p=0.5, generator=g)) for _ in range(200)}
    assert picks == {0}
    assert int(sample_next(logits, 0.0)) == 0


def test_empty_prompt_rejected_and_text_api_handles_it(tiny_tokenizer):
    model = tiny_model(vocab_size=tiny_tokenizer.vocab_size)
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(model, torch.zeros(1, 0, dtype=torch.long), 5)
    text = generate_text(model, tiny_tokenizer, "", max_new_tokens=5, temperature=0, stop_at_eot=False)
    assert isinstance(text, str)
    pieces = list(stream_text(model, tiny_tokenizer, "The patient", max_new_tokens=8, temperature=0, stop_at_eot=False))
    assert "".join(pieces) == generate_text(model, tiny_tokenizer, "The patient", max_new_tokens=8, temperature=0,
                                            stop_at_eot=False)
