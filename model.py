"""The Mini-GPT model: a character-level, decoder-only transformer.

Read it top to bottom:
  Head                 one causal self-attention head, written out step by step (day 3)
  CausalSelfAttention  all heads at once: the fast version the model actually runs
  FeedForward, Block   the rest of a transformer layer
  GPTModel             embeddings -> n_layer blocks -> logits, plus `generate`

Choosing the next token from the logits (temperature, top-k, top-p) is sampling.py's.

Shapes in comments: B = batch, T = time (sequence length), C = n_embd,
H = num_heads, hs = head_size = C // H, V = vocab_size.
"""

import inspect
import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from device import cpu_has_fast_bf16
from i18n import _
from sampling import check_sampling_args, sample_next


class Head(nn.Module):
    """One head of causal self-attention, exactly as day 3 computes it by hand.

    Input (B, T, n_embd) with T <= block_size; output (B, T, head_size).
    """

    def __init__(self, n_embd, head_size, block_size, dropout=0.0):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.block_size = block_size
        # The causal mask is a constant, not a parameter: a buffer moves with .to(device)
        # but is not trained, and persistent=False keeps it out of checkpoints.
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size)), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def attention_weights(self, x):
        """The (B, T, T) attention matrix: row t says how much position t looks at each position."""
        B, T, C = x.shape
        if T > self.block_size:
            raise ValueError(f"sequence length {T} is longer than block_size {self.block_size}")
        k = self.key(x)  # (B, T, hs)
        q = self.query(x)  # (B, T, hs)
        # Scale by 1/sqrt(hs) so the scores keep unit variance and softmax does not saturate.
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5  # (B, T, hs) @ (B, hs, T) -> (B, T, T)
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))  # no looking at the future
        return F.softmax(wei, dim=-1)  # (B, T, T), each row sums to 1

    def forward(self, x):
        wei = self.dropout(self.attention_weights(x))  # (B, T, T)
        v = self.value(x)  # (B, T, hs)
        return wei @ v  # (B, T, T) @ (B, T, hs) -> (B, T, hs)


class CausalSelfAttention(nn.Module):
    """All heads of causal self-attention in one go, plus the output projection.

    Computes the same thing as running `num_heads` `Head`s and concatenating their outputs
    (tests/test_model.py checks it), but with one matrix multiply for q, k and v of every head
    and one batched attention for all heads (`causal_attention`), much faster than a Python loop.

    Weight layout of `qkv`: rows [0, C) are the queries, [C, 2C) the keys, [2C, 3C) the values;
    within each, head h owns rows [h*hs, (h+1)*hs).

    Two options change what the heads compute (so `Head`, the classic, no longer matches): qk_norm
    and rotary, both applied to the queries and keys in `split_heads`.
    """

    def __init__(self, n_embd, num_heads, dropout=0.0, rotary=False, qk_norm=False):
        super().__init__()
        check_heads(n_embd, num_heads, rotary)
        self.num_heads = num_heads
        self.rotary = rotary
        self.qk_norm = qk_norm
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def split_heads(self, x, offset=0):
        """(B, T, C) -> q, k, v, each (B, H, T, hs); x's tokens sit at positions offset .. offset + T - 1.

        qk_norm: every query and key is scaled to the same length (RMS 1) before they meet, so an
        attention score can only grow by pointing q and k the same way, never by inflating them.
        rotary: queries and keys are then turned by their positions (`rotate`).
        """
        B, T, C = x.shape
        H, hs = self.num_heads, C // self.num_heads
        qkv = self.qkv(x).view(B, T, 3 * H, hs)  # every head's q, then every head's k, then every head's v
        qk, v = qkv[:, :, : 2 * H], qkv[:, :, 2 * H :]  # (B, T, 2H, hs), (B, T, H, hs)
        if self.qk_norm:
            qk = rms_norm(qk)
        if self.rotary:
            qk = rotate(qk, offset)
        q, k = qk.split(H, dim=2)
        return [t.transpose(1, 2) for t in (q, k, v)]  # (B, H, T, hs) each

    def forward(self, x, kv_cache=None):
        """x: (B, T, C) -> (B, T, C).

        kv_cache: None, or this layer's LayerKVCache during generation: it holds the keys and values
        of the tokens before x, and x's own are appended to it.
        """
        B, T, C = x.shape
        offset = kv_cache.length if kv_cache is not None else 0  # x sits at positions offset .. offset + T - 1
        q, k, v = self.split_heads(x, offset)  # (B, H, T, hs) each
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)  # (B, H, offset + T, hs): every token so far
        dropout_p = self.dropout if self.training else 0.0
        if offset == 0:  # queries and keys are the same positions: plain causal attention
            y = causal_attention(q, k, v, dropout_p)
        else:  # new tokens after cached ones: each sees every cached key and the new ones up to itself
            mask = causal_mask(T, offset, x.device)  # (T, offset + T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, H, T, hs) -> (B, T, C): heads side by side
        return self.resid_dropout(self.proj(y))

    def attention_weights(self, x):
        """The (B, H, T, T) attention matrices, written out like Head's (for pictures, not speed)."""
        q, k, _ = self.split_heads(x)  # (B, H, T, hs)
        T = x.shape[1]
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5  # (B, H, T, T)
        wei = wei.masked_fill(~causal_mask(T, 0, x.device), float("-inf"))  # no looking at the future
        return F.softmax(wei, dim=-1)


def causal_attention(q, k, v, dropout_p=0.0):
    """softmax(q @ k^T / sqrt(hs), future masked out) @ v for q, k, v of shape (B, H, T, hs).

    PyTorch's fused `scaled_dot_product_attention` is the fast way almost everywhere. The exception is
    a CPU in bf16 (train.py's `--precision auto` on CPUs with AVX512-BF16 or AMX): there, at this model's
    head size of 32, its kernel is slower than the three steps written out, and a default training step
    takes 100 ms with it against 73 ms without (docs/speedrun.md). In fp32 the fused kernel wins, so only
    that one case takes the explicit path; both give the same result (tests/test_model.py).
    """
    if not (q.device.type == "cpu" and q.dtype == torch.bfloat16 and dropout_p == 0.0 and cpu_has_fast_bf16()):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
    B, H, T, hs = q.shape
    # -inf wherever causal_mask forbids looking: added to the scores, it leaves a weight of 0 on every future position.
    future = torch.zeros(T, T, dtype=q.dtype, device=q.device).masked_fill(~causal_mask(T, 0, q.device), float("-inf"))
    q, k, v = (t.reshape(B * H, T, hs) for t in (q, k, v))  # every head of every sequence side by side
    scores = torch.baddbmm(future.expand(B * H, T, T), q, k.transpose(1, 2), alpha=hs**-0.5)  # (B*H, T, T)
    return (F.softmax(scores, dim=-1) @ v).view(B, H, T, hs)


def rms_norm(x):
    """x scaled so that its last dimension has root-mean-square 1 (no learned gain): F.rms_norm, which arrived in
    torch 2.4, or the same formula written out on an older torch."""
    if hasattr(F, "rms_norm"):
        return F.rms_norm(x, (x.shape[-1],))
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + torch.finfo(x.dtype).eps)  # F.rms_norm's eps


def rotate(x, offset=0, base=10000.0):
    """Rotary position embedding (RoPE) of x (B, T, heads, hs), whose tokens sit at positions offset .. offset + T - 1.

    The learned position embedding (day 2) adds a vector to each character. Rotary positions add nothing:
    they pair each number of a query or key in the first half with its partner in the second half,
    (x[j], x[j + hs/2]), and turn that pair like a clock hand by the angle position * f_j, with a frequency
    f_j from 1 for the first pair down to about 1/base for the last. A turn keeps lengths, and the dot
    product of a query at position i with a key at position j depends only on their angle difference,
    (i - j) * f: attention sees how far back a character is, not where it sits, and there are no
    parameters to learn. tests/test_model.py checks both properties.
    """
    T, half = x.shape[1], x.shape[-1] // 2
    freqs = base ** -(torch.arange(half, device=x.device, dtype=torch.float32) / half)  # (hs/2,): 1 .. ~1/base
    positions = torch.arange(offset, offset + T, device=x.device, dtype=torch.float32)
    angles = torch.outer(positions, freqs).view(T, 1, half)  # (T, 1, hs/2): the same for every head
    c, s = angles.cos(), angles.sin()
    cos, sin = torch.cat((c, c), dim=-1).to(x.dtype), torch.cat((-s, s), dim=-1).to(x.dtype)  # (T, 1, hs) each
    swapped = torch.cat((x[..., half:], x[..., :half]), dim=-1)  # each number's partner in its place
    # First half: x1 cos - x2 sin; second half: x2 cos + x1 sin. Each pair turned by its angle.
    return x * cos + swapped * sin


def causal_mask(T, offset, device):
    """(T, offset + T) bool mask: query i (at position offset + i) may see keys 0 .. offset + i.

    With offset 0 this is the usual lower triangle; after `offset` cached tokens, the first query
    already sees all of them.
    """
    return torch.ones(T, offset + T, dtype=torch.bool, device=device).tril(diagonal=offset)


class KVCache:
    """Every layer's keys and values for the tokens processed so far, so that generating one more
    token only runs that token through the model instead of the whole window again.

    Buffers are allocated once at full size, (B, H, block_size, hs) per layer for keys and for values.
    Each layer appends its new keys and values through `layers[i]`; once every layer has done so,
    the model calls `advance(T)`, so all layers agree on how many tokens are stored.
    """

    def __init__(self, model, batch_size):
        attn = model.blocks[0].attn
        weight = model.token_embedding.weight
        head_size = weight.shape[1] // attn.num_heads
        shape = (batch_size, attn.num_heads, model.block_size, head_size)
        self.length = 0  # tokens stored so far
        self.layers = [LayerKVCache(self, shape, weight.dtype, weight.device) for _ in model.blocks]

    def advance(self, T):
        self.length += T


class LayerKVCache:
    """One layer's part of a KVCache: its key and value buffers."""

    def __init__(self, cache, shape, dtype, device):
        self.cache = cache
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)

    @property
    def length(self):
        return self.cache.length

    def append(self, k, v):
        """Store k, v (B, H, T, hs) after the cached tokens; return all keys and values so far."""
        end = self.length + k.shape[2]
        self.keys[:, :, self.length : end] = k
        self.values[:, :, self.length : end] = v
        return self.keys[:, :, :end], self.values[:, :, :end]


class FeedForward(nn.Module):
    """Per-position MLP: widen 4x, GELU, project back."""

    def __init__(self, n_embd, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.GELU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)


class Block(nn.Module):
    """Transformer layer: attention lets positions talk, the MLP lets each one think.

    Pre-LayerNorm with residual connections: x + f(ln(x)) keeps a clean path for gradients.
    """

    def __init__(self, n_embd, num_heads, dropout=0.0, rotary=False, qk_norm=False):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, num_heads, dropout, rotary, qk_norm)
        self.ln2 = nn.LayerNorm(n_embd)
        self.ffwd = FeedForward(n_embd, dropout)

    def forward(self, x, kv_cache=None):
        x = x + self.attn(self.ln1(x), kv_cache)  # (B, T, C)
        x = x + self.ffwd(self.ln2(x))  # (B, T, C)
        return x


class GPTModel(nn.Module):
    """A GPT: token + position embeddings, `n_layer` blocks, final LayerNorm, linear head.

    position: "learned" (a trained vector per position, added to each character's; day 2) or "rope"
    (no position vectors: attention turns queries and keys by their positions, see `rotate`).
    qk_norm: normalise queries and keys before attention (CausalSelfAttention.split_heads).
    head_bias: give the output layer a bias per character. GPT-2 and nanoGPT have none, and neither did it
    help here (docs/results.md); checkpoints from before this option existed have one and still load.
    The defaults are the classic GPT that the tutorial builds; config.py chooses what train.py uses.
    """

    def __init__(self, vocab_size, *, n_embd, num_heads, n_layer, block_size, dropout=0.0, position="learned",
                 qk_norm=False, head_bias=False):
        # The sizes are keyword-only: GPTModel(65, n_embd=128, ...) can't swap num_heads and n_layer.
        super().__init__()
        check_model_args(n_embd=n_embd, num_heads=num_heads, n_layer=n_layer, block_size=block_size, dropout=dropout,
                         position=position, qk_norm=qk_norm, head_bias=head_bias)
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.position_embedding = nn.Embedding(block_size, n_embd) if position == "learned" else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, num_heads, dropout, position == "rope", qk_norm)
                                    for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=head_bias)
        # Weight tying: reading a character in (embedding) and writing one out (head) use the same
        # vectors, which saves vocab_size * n_embd parameters and helps small models learn faster.
        self.lm_head.weight = self.token_embedding.weight
        self.apply(self._init_weights)
        # Each block adds its attention and MLP outputs to the residual stream, so its variance grows
        # with depth; starting those two projections smaller (GPT-2's 1/sqrt(2 * n_layer)) evens it out.
        for block in self.blocks:
            for layer in (block.attn.proj, block.ffwd.net[2]):
                nn.init.normal_(layer.weight, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @classmethod
    def from_config(cls, cfg, vocab_size):
        """The model a config.Config describes, for a vocabulary of vocab_size characters."""
        return cls(vocab_size, **{name: getattr(cfg, name) for name in MODEL_ARGS})

    @staticmethod
    def _init_weights(module):
        # Small normal init (std 0.02, as GPT-2) keeps the initial logits near zero,
        # so the first loss is close to ln(vocab_size): every character equally likely.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None, kv_cache=None):
        """idx: (B, T) token ids, T <= block_size; targets: (B, T) or None.

        Returns (logits (B, T, V), loss): loss is the mean cross-entropy, or None without targets.
        With a KVCache, idx holds only the tokens after the cached ones; they are appended to it.
        """
        B, T = idx.shape
        offset = kv_cache.length if kv_cache is not None else 0
        if offset + T > self.block_size:
            raise ValueError(
                f"sequence length {offset + T} is longer than the model's block_size {self.block_size}; "
                "crop the input to the last block_size tokens"
            )
        x = self.drop(self.embed(idx, offset))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, kv_cache.layers[i] if kv_cache is not None else None)  # (B, T, C)
        if kv_cache is not None:
            kv_cache.advance(T)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            # A target of -1 is not trained (train.py --loss_on answers)
            loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T), ignore_index=-1)
        return logits, loss

    def embed(self, idx, offset=0):
        """(B, T) token ids at positions offset .. offset + T - 1 -> (B, T, C) vectors."""
        x = self.token_embedding(idx)  # (B, T, C)
        if self.position_embedding is not None:
            pos = torch.arange(offset, offset + idx.shape[1], device=idx.device)  # (T,) absolute positions
            x = x + self.position_embedding(pos)  # (B, T, C) + (T, C) -> (B, T, C)
        return x

    @torch.no_grad()
    def attention_maps(self, idx):
        """Every layer's attention weights for idx (B, T): a list of n_layer tensors (B, H, T, T).

        A separate, explicit pass for visualisation, so the fused forward stays as fast as ever.
        Runs in eval mode, so dropout never blurs the picture, and restores the previous mode.
        """
        was_training = self.training
        self.eval()
        try:
            x = self.embed(idx)
            maps = []
            for block in self.blocks:
                maps.append(block.attn.attention_weights(block.ln1(x)))  # (B, H, T, T)
                x = block(x)
            return maps
        finally:
            self.train(was_training)

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True, generator=None):
        """Continue each row of idx (B, T) by max_new_tokens sampled tokens -> (B, T + max_new_tokens).

        temperature: > 0 divides the logits (lower = safer, higher = wilder); 0 means greedy (argmax).
        top_k: sample only among the k most likely tokens (clamped to the vocabulary size).
        top_p: sample only among the most likely tokens whose probabilities add up to top_p (nucleus).
        generator: the torch.Generator to sample with (default: torch's global one).
        use_cache: reuse earlier tokens' keys and values (KVCache): the same tokens, faster (README
            measures it).
        Runs in eval mode (no dropout) and restores the previous mode afterwards.
        """
        new = list(self.generate_stream(idx, max_new_tokens, temperature, top_k, top_p, use_cache, generator))
        return torch.cat([idx, *new], dim=1)

    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True,
                        generator=None):
        """Like generate, but yields each new token (B, 1) as soon as it is sampled."""
        steps = self.generate_steps(idx, max_new_tokens, temperature, top_k, top_p, use_cache, generator)
        try:
            for next_id, _logits in steps:
                yield next_id
        finally:
            steps.close()  # a caller that stops early puts the model back in its mode at once

    @torch.no_grad()  # on a generator, PyTorch switches gradients off only while it runs
    def generate_steps(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True,
                       generator=None, adjust=None):
        """The decoding loop: yields (new token (B, 1), the logits it was sampled from (B, V)) per step, for
        tools that show the model's choices (the playground). generate and generate_stream keep the tokens.

        adjust(logits (B, V), new tokens so far (B, n)) -> logits: changes the scores before each draw (the API's
        logit_bias and penalties: sampling.LogitAdjuster).
        """
        check_sampling_args(temperature, top_k, top_p)
        was_training = self.training
        self.eval()
        prompt_length = idx.shape[1]
        try:
            start, cache = None, None  # where the model's window begins in idx; the KV cache
            for _ in range(max_new_tokens):
                new_start = window_start(idx.shape[1], self.block_size, start)
                if new_start != start:  # a new window: its positions changed, so the cache must start over
                    start, cache = new_start, None
                if not use_cache:
                    logits, _ = self(idx[:, start:])  # the whole window, every step
                elif cache is None:
                    cache = KVCache(self, idx.shape[0])
                    logits, _ = self(idx[:, start:], kv_cache=cache)  # prefill: the window in one pass
                else:
                    logits, _ = self(idx[:, -1:], kv_cache=cache)  # just the newest token
                last = logits[:, -1, :] if adjust is None else adjust(logits[:, -1, :], idx[:, prompt_length:])
                next_id = sample_next(last, temperature, top_k, top_p, generator)  # (B, 1)
                idx = torch.cat((idx, next_id), dim=1)
                yield next_id, last
        finally:
            self.train(was_training)


# The model's fields, read from GPTModel's own signature (every keyword after vocab_size): what config.py,
# checkpoints and --resume mean by "the model's sizes and architecture", listed once.
MODEL_ARGS = tuple(name for name, p in inspect.signature(GPTModel).parameters.items() if p.kind is p.KEYWORD_ONLY)


def check_heads(n_embd, num_heads, rotary=False):
    """Raise ValueError unless num_heads heads split n_embd evenly (and, for rotary positions, in pairs)."""
    if n_embd % num_heads != 0:
        raise ValueError(_("n_embd ({n_embd}) must be divisible by num_heads ({num_heads})").format(
            n_embd=n_embd, num_heads=num_heads))
    if rotary and (n_embd // num_heads) % 2:
        raise ValueError(_("--position rope needs an even head size (n_embd / num_heads), got {value}").format(
            value=n_embd // num_heads))


def check_model_args(*, n_embd, num_heads, n_layer, block_size, dropout, position, qk_norm, head_bias):
    """Raise ValueError with a clear message for model settings that cannot work (config.validate asks too)."""
    if not (n_embd >= 1 and num_heads >= 1 and n_layer >= 1):
        raise ValueError(_("n_embd, num_heads and n_layer must be >= 1"))
    if position not in ("learned", "rope"):
        raise ValueError(_("position must be learned or rope, got {value!r}").format(value=position))
    check_heads(n_embd, num_heads, rotary=position == "rope")
    if block_size < 1:
        raise ValueError(_("block_size must be >= 1"))
    if not 0.0 <= dropout < 1.0:
        raise ValueError(_("dropout must be in [0, 1), got {value}").format(value=dropout))


def window_start(length, block_size, start=None):
    """Where the model's window begins when predicting token number `length` (0-based) of a sequence.

    start: the window's start at the previous step, or None at the first step.

    The model has learned positions 0..block_size-1 only, so it sees at most block_size tokens. A KV
    cache cannot slide that window one token at a time: shifting it changes every token's position,
    hence every cached key and value. So a long prompt keeps its last block_size tokens, and when the
    window is full it drops its older half and starts again from the newer half. The cached path then
    refills its cache in one pass, once every block_size / 2 tokens; cached and uncached generation use
    this same rule, so they see the same windows and give the same tokens.
    """
    if start is None:
        return max(0, length - block_size)
    if length - start > block_size:
        return length - max(1, block_size // 2)
    return start
