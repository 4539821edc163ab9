"""Choosing tokens and writing text: how the next token is drawn from the logits (temperature, top-k,
top-p: sample_next), text that stops at a stop string without showing it (StopText), and one sample written as it
comes (sample_text). The model (model.py) computes the logits; generate.py, chat.py, eval_qa.py and the playground
turn them into text through here."""

import math

import torch
from torch.nn import functional as F

from i18n import _


def check_sampling_args(temperature, top_k=None, top_p=None):
    """Raise ValueError with a clear message for sampling settings that make no sense."""
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(_("temperature must be a finite number >= 0 (0 = greedy), got {value}").format(value=temperature))
    if top_k is not None and top_k < 1:
        raise ValueError(_("top_k must be at least 1 (or None to disable), got {value}").format(value=top_k))
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(_("top_p must be in (0, 1] (or None to disable), got {value}").format(value=top_p))


def sampling_probs(logits, temperature=1.0, top_k=None, top_p=None):
    """The distribution the next token is drawn from, (B, V), given last-position logits (B, V).

    temperature 0 puts all the probability on the most likely token (greedy).
    """
    if temperature == 0:
        return F.one_hot(logits.argmax(dim=-1), logits.size(-1)).to(logits.dtype)
    logits = logits / temperature
    if top_k is not None:
        # Clamp: asking for more candidates than the vocabulary has just means "all of them".
        k = min(top_k, logits.size(-1))
        kth_best = torch.topk(logits, k).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    probs = F.softmax(logits, dim=-1)  # (B, V)
    if top_p is not None and top_p < 1.0:
        # Nucleus: keep the fewest most-likely tokens whose probabilities reach top_p, drop the tail.
        sorted_probs, order = probs.sort(dim=-1, descending=True)  # (B, V)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # probability mass ranked above each token
        sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)  # the top token always stays
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Pick the next token id from last-position logits (B, V) -> (B, 1).

    generator: a torch.Generator to draw from (e.g. one per request in a server); default: the global one.
    """
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # greedy: always the most likely token
    probs = sampling_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


class LogitAdjuster:
    """OpenAI's logit_bias, presence_penalty and frequency_penalty, applied to the logits before each draw.

    For every token j, with c[j] the times it was generated so far in this answer:
        logit[j] + bias[j] - c[j] * frequency_penalty - (1 if c[j] > 0 else 0) * presence_penalty
    Positive penalties make a repeated token less likely: presence once it has appeared at all, frequency more with
    each repeat. A bias of -100 practically bans a token, +100 practically forces it.
    """

    def __init__(self, vocab_size, bias=None, presence_penalty=0.0, frequency_penalty=0.0):
        self.bias = torch.zeros(vocab_size)
        for token, value in (bias or {}).items():
            self.bias[token] = value
        self.presence, self.frequency = presence_penalty, frequency_penalty

    def __call__(self, logits, generated):
        """logits (B, V), generated (B, n) -> adjusted logits (B, V)."""
        if self.bias.device != logits.device or self.bias.dtype != logits.dtype:
            self.bias = self.bias.to(logits.device, logits.dtype)  # once, not at every token
        logits = logits + self.bias
        if generated.shape[1] == 0 or (self.presence == 0 and self.frequency == 0):
            return logits
        counts = torch.zeros_like(logits).scatter_add_(-1, generated, torch.ones_like(generated, dtype=logits.dtype))
        return logits - counts * self.frequency - (counts > 0).to(logits.dtype) * self.presence  # (B, V)


class StopText:
    """Text that arrives a piece at a time, released only once it can no longer turn out to be the
    start of a stop string, so that a stop string itself is never shown.

    add(piece) returns the text that is now safe to show (maybe ""); `stopped` turns true once a stop
    string appears (the text is cut before it); rest() returns what is still held back.
    """

    def __init__(self, stops=()):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1  # the longest unfinished stop string
        self.text, self.sent, self.stopped = "", 0, False

    def add(self, piece):
        start = len(self.text)
        self.text += piece
        # New characters can only complete a stop string that ends among them: search just there.
        hits = [i for s in self.stops if (i := self.text.find(s, max(0, start - len(s) + 1))) >= 0]
        if hits:
            self.text, self.stopped = self.text[: min(hits)], True
            return self.rest()
        ready = len(self.text) - self.hold
        if ready <= self.sent:
            return ""
        released, self.sent = self.text[self.sent : ready], ready
        return released

    def rest(self):
        released, self.sent = self.text[self.sent :], len(self.text)
        return released


def sample_text(model, tokenizer, context, write, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                stop=None, stream=False, use_cache=True):
    """Generate one sample after context (1, T); write(text) receives it piece by piece.

    With a stop string, text is held back until it cannot be the start of the stop string any more,
    so the stop string itself is never written. stream=False writes everything at the end.
    Returns the number of new tokens generated.
    """
    text = StopText([stop] if stop else [])
    decoder = tokenizer.decoder()  # a BPE token may end inside a character: that part waits for the next token
    held, count = [], 0  # without stream, everything is written at the end
    tokens = model.generate_stream(context, max_new_tokens, temperature, top_k, top_p, use_cache=use_cache)
    for token in tokens:
        count += 1
        piece = text.add(decoder.decode(token[0].tolist()))
        if stream:
            write(piece)
        else:
            held.append(piece)
        if text.stopped:
            break
    tokens.close()  # a character left unfinished by the last token is dropped: never half a character
    write("".join(held) + text.rest())
    return count
