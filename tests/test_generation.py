"""KV-cache generation, nucleus sampling and attention maps."""

import pytest
import torch

from model import GPTModel, Head, KVCache
from sampling import sample_next


def trained_like_model(block_size=8, vocab_size=13, position="learned", qk_norm=False):
    # Random weights with a larger spread than the init, so the distributions are far from uniform.
    torch.manual_seed(0)
    model = GPTModel(vocab_size, n_embd=24, num_heads=3, n_layer=2, block_size=block_size, position=position,
                     qk_norm=qk_norm)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.parametrize("prompt_len", [1, 5, 8, 13])  # shorter than, equal to and longer than block_size
@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=1.0), dict(temperature=0.8, top_k=5),
                                      dict(temperature=1.2, top_p=0.9)])
def test_cached_and_uncached_generation_give_identical_tokens(prompt_len, sampling, position):
    model = trained_like_model(block_size=8, position=position)
    prompt = torch.randint(13, (2, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    outputs = []
    for use_cache in (True, False):
        torch.manual_seed(42)
        outputs.append(model.generate(prompt, 30, use_cache=use_cache, **sampling))  # crosses block_size often
    assert outputs[0].shape == (2, prompt_len + 30)
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("position", ["learned", "rope"])  # rope: the cache's keys were turned at their positions
@pytest.mark.parametrize("qk_norm", [False, True])
def test_cached_logits_match_a_full_forward_pass(position, qk_norm):
    model = trained_like_model(block_size=8, position=position, qk_norm=qk_norm)
    idx = torch.randint(13, (3, 8))
    full, _ = model(idx)
    cache = KVCache(model, batch_size=3)
    prefill, _ = model(idx[:, :5], kv_cache=cache)  # the first five in one pass ...
    chunk, _ = model(idx[:, 5:7], kv_cache=cache)  # ... two more together (a masked chunk) ...
    last, _ = model(idx[:, 7:], kv_cache=cache)  # ... and one at a time
    torch.testing.assert_close(torch.cat([prefill, chunk, last], dim=1), full, atol=1e-5, rtol=0)
    assert cache.length == 8
    with pytest.raises(ValueError, match="longer than the model's block_size"):
        model(idx[:, :1], kv_cache=cache)


def test_generate_stream_yields_the_same_tokens_as_generate():
    model = trained_like_model()
    prompt = torch.tensor([[1, 2, 3]])
    torch.manual_seed(5)
    streamed = [t.item() for t in model.generate_stream(prompt, 12)]
    torch.manual_seed(5)
    assert model.generate(prompt, 12)[0, 3:].tolist() == streamed
    assert torch.is_grad_enabled()  # the generator switched gradients off only while it ran


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log().repeat(4000, 1)
    torch.manual_seed(0)
    picks = sample_next(logits, temperature=1.0, top_p=0.8).flatten()
    assert set(picks.tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.8: the tail is never drawn
    share = (picks == 0).float().mean().item()
    assert abs(share - 0.5 / 0.8) < 0.03  # the kept tokens keep their relative odds: 0.625 / 0.375
    assert set(sample_next(logits, 1.0, top_p=0.81).flatten().tolist()) == {0, 1, 2}
    assert set(sample_next(logits, 1.0, top_p=0.1).flatten().tolist()) == {0}  # the best token always stays
    assert set(sample_next(logits, 1.0, top_p=1.0).flatten().tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("top_p", [0.0, -0.1, 1.5])
def test_bad_top_p_is_a_clear_error(top_p):
    with pytest.raises(ValueError, match="top_p must be in"):
        trained_like_model().generate(torch.zeros(1, 1, dtype=torch.long), 3, top_p=top_p)


def test_attention_maps_are_causal_distributions_that_match_head():
    model = trained_like_model(block_size=8)
    idx = torch.randint(13, (2, 7))
    maps = model.attention_maps(idx)
    assert len(maps) == 2 and maps[0].shape == (2, 3, 7, 7)
    for weights in maps:
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 7))  # rows are distributions
        assert torch.all(weights.triu(diagonal=1) == 0)  # nothing above the diagonal: no peeking ahead

    # Layer 0, head 1, recomputed by the teaching Head carrying the same query/key weights.
    attn, hs = model.blocks[0].attn, 24 // 3
    head = Head(24, hs, block_size=8)
    q_w, k_w, _ = attn.qkv.weight.split(24, dim=0)
    with torch.no_grad():
        head.query.weight.copy_(q_w[hs : 2 * hs])
        head.key.weight.copy_(k_w[hs : 2 * hs])
        x = model.token_embedding(idx) + model.position_embedding(torch.arange(7))
        expected = head.attention_weights(model.blocks[0].ln1(x))
    torch.testing.assert_close(maps[0][:, 1], expected, atol=1e-6, rtol=0)


def test_attention_maps_ignore_dropout_and_keep_the_mode():
    torch.manual_seed(0)
    model = GPTModel(13, n_embd=24, num_heads=3, n_layer=2, block_size=8, dropout=0.2)  # training mode
    idx = torch.randint(13, (1, 8))
    first, second = model.attention_maps(idx), model.attention_maps(idx)
    for a, b in zip(first, second):
        assert torch.equal(a, b)  # dropout would make each call different
    assert model.training  # the mode it had before
    model.eval()
    for a, b in zip(first, model.attention_maps(idx)):
        assert torch.equal(a, b)


def test_window_rule_matches_a_plain_reference_loop():
    """Generation past the point where the window fills, against a loop written the obvious way."""
    from model import window_start

    block_size = 8
    model = trained_like_model(block_size=block_size)
    prompt = torch.randint(13, (1, 5), generator=torch.Generator().manual_seed(3))

    # Reference: keep the window as a plain list of token ids. When a new token would make it longer
    # than block_size, keep only its newest half (as the cache must start over anyway).
    tokens, window = prompt[0].tolist(), prompt[0].tolist()
    for _ in range(40):
        logits, _ = model(torch.tensor([window]))
        next_id = logits[0, -1].argmax().item()
        tokens.append(next_id)
        window.append(next_id)
        if len(window) > block_size:
            window = window[-(block_size // 2):]
    for use_cache in (True, False):
        assert model.generate(prompt, 40, temperature=0, use_cache=use_cache)[0].tolist() == tokens

    starts = [window_start(5, block_size)]
    for length in range(6, 45):
        starts.append(window_start(length, block_size, starts[-1]))
    assert starts[:5] == [0, 0, 0, 0, 5]  # 8 tokens fit; the 9th starts a window at the newest half
    assert all(length - start <= block_size for length, start in zip(range(5, 45), starts))
    assert window_start(20, block_size) == 12  # a long prompt keeps its last block_size tokens
