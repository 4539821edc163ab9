"""The Mini-GPT model: a character-level, decoder-only transformer.

Read it top to bottom:
  Head                 one causal self-attention head, written out step by step (day 3)
  CausalSelfAttention  all heads at once: the fast version the model actually runs
  FeedForward, Block   the rest of a transformer layer
  GPTModel             embeddings -> n_layer blocks -> logits, plus `generate`

Shapes in comments: B = batch, T = time (sequence length), C = n_embd,
H = num_heads, hs = head_size = C // H, V = vocab_size.
"""

import math

import torch
import torch.nn as nn
from torch.nn import functional as F


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
    and PyTorch's fused `scaled_dot_product_attention`, which is much faster than a Python loop.

    Weight layout of `qkv`: rows [0, C) are the queries, [C, 2C) the keys, [2C, 3C) the values;
    within each, head h owns rows [h*hs, (h+1)*hs).
    """

    def __init__(self, n_embd, num_heads, block_size, dropout=0.0):
        super().__init__()
        if n_embd % num_heads != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.block_size = block_size
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def split_heads(self, x):
        """(B, T, C) -> q, k, v, each (B, H, T, hs)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        return [t.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2) for t in (q, k, v)]

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.split_heads(x)  # (B, H, T, hs) each
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # put the heads side by side again
        return self.resid_dropout(self.proj(y))


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

    def __init__(self, n_embd, num_heads, block_size, dropout=0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, num_heads, block_size, dropout)
        self.ln2 = nn.LayerNorm(n_embd)
        self.ffwd = FeedForward(n_embd, dropout)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))  # (B, T, C)
        x = x + self.ffwd(self.ln2(x))  # (B, T, C)
        return x


class GPTModel(nn.Module):
    """A GPT: token + position embeddings, `n_layer` blocks, final LayerNorm, linear head."""

    def __init__(self, vocab_size, n_embd, num_heads, n_layer, block_size, dropout=0.0):
        super().__init__()
        if n_embd % num_heads != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by num_heads ({num_heads})")
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.position_embedding = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, num_heads, block_size, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)
        self.apply(self._init_weights)

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

    def forward(self, idx, targets=None):
        """idx: (B, T) token ids, T <= block_size; targets: (B, T) or None.

        Returns (logits (B, T, V), loss): loss is the mean cross-entropy, or None without targets.
        """
        B, T = idx.shape
        if T > self.block_size:
            raise ValueError(
                f"sequence length {T} is longer than the model's block_size {self.block_size}; "
                "crop the input to the last block_size tokens"
            )
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.token_embedding(idx) + self.position_embedding(pos)  # (B, T, C) + (T, C) -> (B, T, C)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Continue each row of idx (B, T) by max_new_tokens sampled tokens -> (B, T + max_new_tokens).

        temperature: > 0 divides the logits (lower = safer, higher = wilder); 0 means greedy (argmax).
        top_k: sample only among the k most likely tokens (clamped to the vocabulary size).
        Runs in eval mode (no dropout) and restores the previous mode afterwards.
        """
        check_sampling_args(temperature, top_k)
        was_training = self.training
        self.eval()
        for _ in range(max_new_tokens):
            # Positions only go up to block_size, so the model can only see the last block_size tokens.
            idx_cond = idx[:, -self.block_size:]  # (B, <=block_size)
            logits, _ = self(idx_cond)
            next_id = sample_next(logits[:, -1, :], temperature, top_k)  # (B, 1)
            idx = torch.cat((idx, next_id), dim=1)  # (B, T + 1)
        self.train(was_training)
        return idx


def check_sampling_args(temperature, top_k):
    """Raise ValueError with a clear message for sampling settings that make no sense."""
    if temperature < 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1 (or None to disable), got {top_k}")


def sample_next(logits, temperature=1.0, top_k=None):
    """Pick the next token id from last-position logits (B, V) -> (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # greedy: always the most likely token
    logits = logits / temperature
    if top_k is not None:
        # Clamp: asking for more candidates than the vocabulary has just means "all of them".
        k = min(top_k, logits.size(-1))
        kth_best = torch.topk(logits, k).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1)  # (B, 1)
