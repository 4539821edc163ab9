import math

import pytest
import torch
import torch.nn.functional as F

import model as model_module
from model import CausalSelfAttention, GPTModel, Head, causal_attention, rotate
from sampling import sample_next


def small_model(vocab_size=11, block_size=8, **kwargs):
    args = dict(n_embd=16, num_heads=2, n_layer=2, block_size=block_size, dropout=0.0)
    args.update(kwargs)
    return GPTModel(vocab_size, **args)


# ---------------------------------------------------------------- Head

def test_head_matches_the_day3_hand_computation():
    # Day 3 uses Q = K = V = the sequence itself: identity weights give exactly that.
    head = Head(n_embd=2, head_size=2, block_size=3)
    with torch.no_grad():
        for layer in (head.query, head.key, head.value):
            layer.weight.copy_(torch.eye(2))
    sequence = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    scores = sequence @ sequence.T / math.sqrt(2)
    scores = scores.masked_fill(torch.tril(torch.ones(3, 3)) == 0, float("-inf"))
    expected = F.softmax(scores, dim=-1) @ sequence
    out = head(sequence[None])  # (1, 3, 2)
    torch.testing.assert_close(out[0], expected)
    # The numbers day 3 prints for the masked weights' second row: 0.3302, 0.6698.
    weights = head.attention_weights(sequence[None])[0]
    torch.testing.assert_close(weights[1, :2], torch.tensor([0.3302, 0.6698]), atol=1e-4, rtol=0)


def test_head_is_causal():
    head = Head(n_embd=8, head_size=4, block_size=6).eval()
    x = torch.randn(2, 6, 8)
    changed = x.clone()
    changed[:, 4:] = torch.randn(2, 2, 8)  # change the last two positions only
    torch.testing.assert_close(head(x)[:, :4], head(changed)[:, :4])
    assert not torch.allclose(head(x)[:, 4:], head(changed)[:, 4:])


def test_head_shape_and_length_check():
    head = Head(n_embd=8, head_size=4, block_size=5)
    assert head(torch.randn(3, 5, 8)).shape == (3, 5, 4)
    with pytest.raises(ValueError, match="longer than block_size 5"):
        head(torch.randn(1, 6, 8))


def test_fused_attention_equals_concatenated_heads():
    n_embd, num_heads, block_size = 12, 3, 7
    hs = n_embd // num_heads
    fused = CausalSelfAttention(n_embd, num_heads).eval()
    heads = [Head(n_embd, hs, block_size).eval() for _ in range(num_heads)]
    q_w, k_w, v_w = fused.qkv.weight.split(n_embd, dim=0)
    with torch.no_grad():
        for h, head in enumerate(heads):
            rows = slice(h * hs, (h + 1) * hs)
            head.query.weight.copy_(q_w[rows])
            head.key.weight.copy_(k_w[rows])
            head.value.weight.copy_(v_w[rows])
    x = torch.randn(2, block_size, n_embd)
    expected = fused.proj(torch.cat([head(x) for head in heads], dim=-1))
    torch.testing.assert_close(fused(x), expected, atol=1e-5, rtol=0)


def test_bf16_attention_on_a_cpu_computes_what_the_fused_kernel_does(monkeypatch):
    # bf16 on a CPU takes the written-out path (faster there than the fused kernel): same values, same gradients.
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, requires_grad=True) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    expected.square().sum().backward()
    expected_grads = [t.grad.clone() for t in (q, k, v)]

    def not_this_one(*args, **kwargs):
        raise AssertionError("bf16 attention on a CPU should not use the fused kernel")

    monkeypatch.setattr(model_module.F, "scaled_dot_product_attention", not_this_one)
    monkeypatch.setattr(model_module, "cpu_has_fast_bf16", lambda: True)  # the path CPUs with hardware bf16 take
    q16, k16, v16 = (t.detach().bfloat16().requires_grad_() for t in (q, k, v))
    got = causal_attention(q16, k16, v16)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=3e-2, rtol=0)  # bf16 keeps ~3 significant digits
    got.float().square().sum().backward()
    for t16, grad in zip((q16, k16, v16), expected_grads):
        assert F.cosine_similarity(t16.grad.float().flatten(), grad.flatten(), dim=0) > 0.999
    # Causal: the first position sees only itself, so its output is its own value vector.
    torch.testing.assert_close(got[:, :, 0].float(), v16[:, :, 0].float())


# ---------------------------------------------------------------- GPTModel

def test_forward_shapes_with_and_without_targets():
    model = small_model(vocab_size=11, block_size=8)
    idx = torch.randint(11, (3, 5))
    logits, loss = model(idx)
    assert logits.shape == (3, 5, 11) and loss is None
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 5, 11) and loss.shape == ()


def test_initial_loss_is_about_ln_vocab_size():
    vocab_size = 65
    model = small_model(vocab_size=vocab_size, block_size=16)
    idx = torch.randint(vocab_size, (8, 16))
    targets = torch.randint(vocab_size, (8, 16))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(vocab_size)) < 0.1


def test_loss_falls_when_overfitting_one_batch():
    model = small_model(vocab_size=11, block_size=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(11, (4, 8))
    y = torch.randint(11, (4, 8))
    first = None
    for _ in range(150):
        _, loss = model(x, y)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first > 2.2
    assert loss.item() < 0.3  # memorised: far below ln(11) = 2.4


def test_bad_sizes_give_clear_errors():
    with pytest.raises(ValueError, match="divisible"):
        small_model(n_embd=10, num_heads=3)
    model = small_model(block_size=8)
    with pytest.raises(ValueError, match="longer than the model's block_size 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


# ---------------------------------------------------------------- rotary positions

def test_rotary_attention_scores_depend_only_on_how_far_apart_two_positions_are():
    torch.manual_seed(0)
    q, k = torch.randn(2, 1, 1, 1, 32)  # one query and one key, head size 32
    def score(i, j):  # q placed at position i, k at position j
        return (rotate(q, offset=i) * rotate(k, offset=j)).sum().item()
    assert score(5, 2) == pytest.approx(score(105, 102), abs=1e-4)  # shifted together: the same score
    assert score(5, 2) == pytest.approx(score(3, 0), abs=1e-4)
    assert abs(score(5, 2) - score(5, 4)) > 1e-3  # another distance: another score
    torch.testing.assert_close(rotate(q, offset=0), q)  # position 0 is not turned at all
    x = torch.randn(2, 10, 3, 32)  # (B, T, heads, hs)
    torch.testing.assert_close(rotate(x, offset=7).norm(dim=-1), x.norm(dim=-1))  # a rotation keeps lengths


def test_rotary_model_has_no_position_table_and_learns_which_character_came_two_back():
    torch.manual_seed(0)
    learned, rope = (small_model(vocab_size=11, block_size=16, position=p) for p in ("learned", "rope"))
    assert rope.position_embedding is None
    assert learned.num_params() - rope.num_params() == 16 * 16  # block_size x n_embd: the table it does without
    # Each target is the character two places back: only a model that knows positions can learn it.
    optimizer = torch.optim.AdamW(rope.parameters(), lr=1e-2)
    x = torch.randint(11, (32, 16), generator=torch.Generator().manual_seed(1))
    y = torch.roll(x, 2, dims=1)
    for _ in range(150):
        _, loss = rope(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    logits, _ = rope(x)
    loss = F.cross_entropy(logits[:, 2:].reshape(-1, 11), y[:, 2:].reshape(-1))  # the first two come from nowhere
    assert loss.item() < 0.2  # far below ln(11) = 2.4: it looks exactly two places back
    with pytest.raises(ValueError, match="learned or rope"):
        small_model(position="sinusoidal")
    with pytest.raises(ValueError, match="even head size"):
        small_model(n_embd=18, num_heads=2, position="rope")  # head size 9


def test_qk_norm_makes_attention_blind_to_the_length_of_queries_and_keys():
    torch.manual_seed(0)
    model = small_model(vocab_size=11, block_size=8, qk_norm=True).eval()
    idx = torch.randint(11, (2, 8))
    attn = model.blocks[0].attn
    q, k, _ = attn.split_heads(torch.randn(2, 8, 16))
    for t in (q, k):  # every query and key has RMS 1 (up to the norm's epsilon)
        torch.testing.assert_close(t.pow(2).mean(-1), torch.ones(2, 2, 8), atol=1e-3, rtol=0)
    before, _ = model(idx)
    with torch.no_grad():
        attn.qkv.weight[:32] *= 10  # queries and keys ten times longer ...
    after, _ = model(idx)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)  # ... change nothing
    plain = small_model(vocab_size=11, block_size=8).eval()
    plain.load_state_dict(model.state_dict())  # no parameters of its own: the same weights fit both
    with torch.no_grad():
        plain.blocks[0].attn.qkv.weight[:32] *= 10
    assert (plain(idx)[0] - model(idx)[0]).abs().max() > 1e-2  # without it, the same change does matter


# ---------------------------------------------------------------- generate

def test_generate_length_and_crop_past_block_size():
    model = small_model(block_size=8)
    prompt = torch.randint(11, (2, 12))  # longer than block_size: the context is cropped
    out = model.generate(prompt, max_new_tokens=10)
    assert out.shape == (2, 22)
    assert torch.equal(out[:, :12], prompt)


def test_generate_is_deterministic_under_a_seed():
    model = small_model()
    prompt = torch.zeros(1, 1, dtype=torch.long)
    torch.manual_seed(123)
    a = model.generate(prompt, 30)
    torch.manual_seed(123)
    b = model.generate(prompt, 30)
    torch.manual_seed(124)
    c = model.generate(prompt, 30)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_temperature_zero_is_greedy():
    model = small_model().eval()
    idx = torch.tensor([[1, 2, 3]])
    expected = idx
    for _ in range(6):  # the argmax loop, written out
        logits, _ = model(expected[:, -8:])
        expected = torch.cat([expected, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(model.generate(idx, 6, temperature=0), expected)
    # top_k=1 keeps only the best token, so sampling it is greedy too.
    assert torch.equal(model.generate(idx, 6, temperature=1.0, top_k=1), expected)


def test_generate_runs_in_eval_mode_and_restores_the_mode():
    model = small_model(dropout=0.5)
    model.train()
    idx = torch.tensor([[1, 2, 3]])
    a = model.generate(idx, 5, temperature=0)
    b = model.generate(idx, 5, temperature=0)
    assert torch.equal(a, b)  # dropout off: greedy is repeatable
    assert model.training


def test_top_k_only_samples_from_the_k_best():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]]).repeat(500, 1)
    picks = sample_next(logits, temperature=1.0, top_k=2).flatten()
    assert set(picks.tolist()) == {1, 2}
    # top_k larger than the vocabulary is clamped, not an error.
    assert sample_next(logits, temperature=1.0, top_k=1000).shape == (500, 1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-0.5), "temperature must be"),
    (dict(temperature=float("nan")), "temperature must be"),
    (dict(top_k=0), "top_k must be at least 1"),
])
def test_generate_rejects_bad_arguments(kwargs, message):
    model = small_model()
    with pytest.raises(ValueError, match=message):
        model.generate(torch.zeros(1, 1, dtype=torch.long), 5, **kwargs)


def test_qk_norm_works_on_a_torch_without_f_rms_norm(monkeypatch):
    # F.rms_norm arrived in torch 2.4; on an older torch the written-out formula must give the same numbers.
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 8) * 3
    if hasattr(F, "rms_norm"):
        expected = F.rms_norm(x, (8,))
    else:
        expected = x / x.pow(2).mean(dim=-1, keepdim=True).add(torch.finfo(x.dtype).eps).sqrt()
    monkeypatch.delattr(model_module.F, "rms_norm", raising=False)
    torch.testing.assert_close(model_module.rms_norm(x), expected)
    assert torch.allclose(model_module.rms_norm(x).pow(2).mean(dim=-1), torch.ones(2, 5, 4), atol=1e-5)
    model = GPTModel(11, n_embd=16, num_heads=2, n_layer=1, block_size=8, qk_norm=True)
    logits, loss = model(torch.randint(11, (2, 8)), torch.randint(11, (2, 8)))
    assert torch.isfinite(loss)
