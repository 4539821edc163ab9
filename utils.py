"""Shared helpers, in the order a run needs them: the character tokenizer, seeding, text and batches,
and evaluation.

Everything else a script needs has a module named for it: cli.py (one clear line for a user's
mistake), device.py (device and precision), checkpoint.py, plots.py (pictures and their fonts),
optim.py (optimizers and the learning-rate schedule) and token_cache.py (a text's ids cached on disk).
"""

import math
import random
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from bpe import BPETokenizer
from cli import UserError
from i18n import _

REPO_DIR = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------------------------
# Tokenizer


class CharTokenizer:
    """Character-level tokenizer: every distinct character in the text is one token.

    The vocabulary is the sorted set of characters, so the same text always gives the same ids.
    `stoi` maps str -> int, `itos` maps int -> str. bpe.BPETokenizer, the subword tokenizer, has the
    same methods, so every script works with either.
    """

    kind = "char"

    def __init__(self, text):
        if not text:
            raise ValueError("cannot build a tokenizer from empty text")
        chars = sorted(set(text))
        self._set_vocab({ch: i for i, ch in enumerate(chars)})

    @classmethod
    def from_stoi(cls, stoi):
        """Rebuild the tokenizer a checkpoint carries (its `tokenizer_stoi`)."""
        tok = cls.__new__(cls)
        tok._set_vocab(dict(stoi))
        return tok

    def extended(self, chars):
        """(a tokenizer that also knows chars, the characters added). Every known character keeps its id;
        the new ones, in sorted order, get the ids after the last: what fine-tuning on a new text needs, so
        the trained model's embedding rows still mean the same characters."""
        added = sorted(set(chars) - set(self.stoi))
        stoi = {**self.stoi, **{ch: self.vocab_size + i for i, ch in enumerate(added)}}
        return CharTokenizer.from_stoi(stoi), added

    def _set_vocab(self, stoi):
        self.stoi = stoi
        self.itos = {i: ch for ch, i in stoi.items()}
        self.vocab_size = len(stoi)
        # For fast bulk encoding: the vocabulary's code points in ascending order, and the id of each.
        codepoints = np.array([ord(ch) for ch in stoi], dtype=np.int64)
        order = np.argsort(codepoints)
        self._sorted_codepoints = codepoints[order]
        self._ids_by_codepoint = np.array(list(stoi.values()), dtype=np.int64)[order]

    def encode_array(self, text):
        """Encode text -> numpy int64 array of ids, vectorised (fast on millions of characters)."""
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        pos = np.searchsorted(self._sorted_codepoints, codepoints)
        pos = np.minimum(pos, len(self._sorted_codepoints) - 1)
        known = self._sorted_codepoints[pos] == codepoints
        if not known.all():
            unknown = sorted(set(chr(c) for c in codepoints[~known]))
            shown = ", ".join(repr(ch) for ch in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise ValueError(_(
                "cannot encode {n} unknown character(s): {shown}. The tokenizer only knows the {vocab} characters "
                "seen in its training text."
            ).format(n=len(unknown), shown=shown, vocab=self.vocab_size))
        return self._ids_by_codepoint[pos]

    def encode(self, text):
        """str -> list[int]. Raises ValueError naming any character not in the vocabulary."""
        return self.encode_array(text).tolist()

    def token_text(self, i):
        """How token i reads: its character."""
        return self.itos[i]

    def unknown(self, text):
        """The characters of text this tokenizer cannot encode (it knows only those of its training text)."""
        return sorted(set(text) - set(self.stoi))

    def decoder(self):
        """decode() for ids that arrive one at a time (streaming): a character is always whole."""
        return self

    @property
    def chars_per_token(self):
        """Characters per token, for bits per character: one each."""
        return np.ones(self.vocab_size, dtype=np.int64)

    def decode(self, ids):
        """list[int] (or a 1-D tensor) -> str."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        try:
            return "".join(self.itos[i] for i in ids)
        except KeyError as e:
            raise ValueError(_("cannot decode id {id}: ids go from 0 to {last}").format(
                id=e.args[0], last=self.vocab_size - 1)) from None


def tokenizer_from_checkpoint(ckpt):
    """The tokenizer a checkpoint was trained with: its BPE merges, or (the tutorial's format) its characters."""
    saved = ckpt.get("tokenizer")
    if isinstance(saved, dict) and saved.get("kind") == "bpe":
        return BPETokenizer.from_checkpoint(saved)
    return CharTokenizer.from_stoi(ckpt["tokenizer_stoi"])


# ----------------------------------------------------------------------------------------------
# Seeding


def set_seed(seed):
    """Seed python, numpy and torch (all devices) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# Text and batches


CHUNK_CHARS = 1 << 24  # read big files 16M characters at a time, so they never need to fit in memory


def read_text(path):
    """Read a UTF-8 text file, with a clear UserError if it is missing, not UTF-8 or empty."""
    text = "".join(read_chunks(path))
    if not text:
        raise empty_file_error(path)
    return text


def empty_file_error(path):
    return UserError(_("{path} is empty; give a text file with something to learn from").format(path=path))


def read_chunks(path):
    """Yield the text of a UTF-8 file in pieces of CHUNK_CHARS characters, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(_("no such text file: {path}; check the path and try again").format(path=path))
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for chunk in iter(lambda: f.read(CHUNK_CHARS), ""):
                yield chunk
    except UnicodeDecodeError:
        # Chinese text that isn't UTF-8 is most often GBK (Windows' default for Chinese): name the fix.
        raise UserError(_("{path} is not UTF-8 text (Chinese text saved on Windows is often GBK); save it as UTF-8 "
                          "in your editor (Windows Notepad: Save As, Encoding UTF-8), or on Linux and macOS convert it "
                          "with iconv -f GBK -t UTF-8 {path} > utf8.txt").format(path=path)) from None


def train_val_split(data, train_fraction=0.9):
    """First train_fraction of the tokens for training, the rest for validation."""
    n = int(train_fraction * len(data))
    return data[:n], data[n:]


def get_batch(data, batch_size, block_size, device, generator=None, targets=None):
    """Sample batch_size random windows of block_size tokens from data.

    data: 1-D torch tensor or numpy array of token ids. Returns x, y: (batch_size, block_size)
    int64 on device, with y the same windows shifted one token to the right (the next characters).
    targets: optional, a 1-D int64 tensor as long as data that y is read from instead: -1 where a
    prediction gets no loss (train.py --loss_on answers).
    """
    if len(data) <= block_size:
        raise ValueError(f"need more than block_size={block_size} tokens to sample a batch, got {len(data)}")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    if isinstance(data, torch.Tensor):
        offsets = torch.arange(block_size + 1)
        windows = data[starts[:, None] + offsets]  # (B, T + 1)
    else:
        windows = torch.from_numpy(np.stack([data[s : s + block_size + 1] for s in starts.tolist()]).astype(np.int64))
    x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()  # (B, T) each
    if targets is not None:
        y = targets[starts[:, None] + torch.arange(1, block_size + 1)]  # (B, T)
    return x.to(device), y.to(device)


# ----------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def estimate_loss(model, splits, eval_iters, batch_size, block_size, device, seed=0, targets=None):
    """Mean loss over eval_iters batches of each split, in eval mode.

    The batches come from their own generator, seeded the same way each time, so every evaluation
    scores the same windows (a fair comparison between steps) and training's randomness is untouched.
    targets: optional {split name: targets} for get_batch (-1: a prediction that is not scored).
    """
    model.eval()
    out = {}
    for name, data in splits.items():
        generator = torch.Generator().manual_seed(seed)
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            x, y = get_batch(data, batch_size, block_size, device, generator, (targets or {}).get(name))
            _, loss = model(x, y)
            losses[k] = loss.item()
        out[name] = losses.mean().item()
    model.train()
    return out


class TokenScores(NamedTuple):
    """What token_losses measures at each prediction of a text, in text order (N = tokens - 1)."""
    losses: torch.Tensor  # (N,) float: the loss (nats) of each prediction, -log p(target)
    targets: torch.Tensor  # (N,) int64: the token each one predicts (the text's tokens after the first)
    top_logprobs: torch.Tensor  # (N, top): log-probabilities of the model's `top` likeliest tokens there
    top_ids: torch.Tensor  # (N, top): those tokens


@torch.no_grad()
def token_losses(model, data, block_size, batch_size, device, top=0):
    """Score every prediction in the whole of `data`: the one whole-text scorer, used by train.py's
    whole-split evaluation, the playground's Surprise view and echo logprobs, and day 5.

    The text is cut into windows of block_size tokens, one after the other (the last may be shorter).
    Each token but the first is predicted exactly once, from the tokens before it in its window.
    top: also keep the `top` likeliest tokens at each prediction. Returns TokenScores, on the CPU.
    """
    if len(data) < 2:
        raise ValueError(f"need at least 2 tokens to predict one, got {len(data)}")
    if not isinstance(data, torch.Tensor):  # a read-only memory map of the token cache, or a list: copy it
        data = torch.from_numpy(np.array(data, dtype=np.int64))
    data = data.long()
    n = (len(data) - 1) // block_size  # whole windows
    x, y = data[: n * block_size].view(n, block_size), data[1 : n * block_size + 1].view(n, block_size)
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]
    if n * block_size + 1 < len(data):  # the rest: one shorter window
        batches.append((data[n * block_size : -1][None], data[n * block_size + 1 :][None]))
    was_training = model.training
    model.eval()
    losses, top_logprobs, top_ids = [], [], []
    for xb, yb in batches:
        logits, _ = model(xb.to(device))
        logits = logits.flatten(0, 1).float()  # (B * T, V)
        losses.append(F.cross_entropy(logits, yb.to(device).flatten(), reduction="none").cpu())
        if top:  # (B * T, top)
            best = torch.log_softmax(logits, dim=-1).topk(min(top, logits.shape[-1]), dim=-1)
            top_logprobs.append(best.values.cpu())
            top_ids.append(best.indices.cpu())
    model.train(was_training)
    losses = torch.cat(losses)
    if not top:
        top_logprobs, top_ids = [torch.zeros(len(losses), 0)], [torch.zeros(len(losses), 0, dtype=torch.long)]
    return TokenScores(losses, data[1:], torch.cat(top_logprobs), torch.cat(top_ids))


def full_split_loss(model, data, block_size, batch_size, device):
    """Mean loss (nats per token) over the whole of `data` (see token_losses). estimate_loss() samples
    a few random windows, which is quick but noisy; this is the number to compare runs by. Returns a float."""
    return token_losses(model, data, block_size, batch_size, device).losses.double().mean().item()


def full_split_scores(model, data, block_size, batch_size, device, chars_per_token, targets=None):
    """(nats per token, bits per character) over the whole of `data`.

    Bits per character is the one number that compares models with different tokenizers: the same
    total surprise, in bits (nats / ln 2), divided by the characters of text predicted rather than
    by the tokens. For a character model it is simply the loss / ln 2.
    chars_per_token: a numpy array, characters in each token id (the tokenizer's).
    targets: optional, as in get_batch: only the predictions whose target is not -1 are scored.
    """
    scores = token_losses(model, data, block_size, batch_size, device)
    scored = torch.ones(len(scores.targets), dtype=torch.bool) if targets is None else targets[1:] >= 0
    chars = torch.as_tensor(chars_per_token)[scores.targets[scored]].sum().item()
    losses = scores.losses.double()[scored]
    return losses.mean().item(), losses.sum().item() / math.log(2) / chars
