"""Byte-pair encoding (BPE): the subword tokenizer of GPT-2 and most models since, written to be read.

A character tokenizer has one token per character. BPE starts lower, at bytes, and builds up:

1. Write the text as UTF-8 bytes. Every text is bytes, so nothing is ever unknown: an English letter
   is one byte, a Chinese character three.
2. Count every pair of neighbouring tokens, merge the most frequent pair into one new token, and
   repeat until the vocabulary has the size you asked for. Each merge is a rule, "t" + "h" -> "th".
3. To encode a new text, apply the same rules, earliest first.

Before counting, the text is cut into words (PATTERN): a word with the space before it, a run of
punctuation, a run of spaces. Pairs are only counted inside a word, so no token spans two words.

Token ids follow GPT-2: the 256 bytes come first, numbered in the order of the printable character
GPT-2 shows each byte as (BYTE_CHARS: "!" is 0, "a" is 64, a space shows as "Ġ" and is 220), then
merge k makes token 256 + k. When two pairs are equally frequent, the pair with the smaller ids
(first id, then second) is merged first. This is what Hugging Face's `tokenizers` library does, so
`train` here and `train_fast` (the library, 100x faster) learn the same merges; a test checks it.
"""

import codecs
import re
from collections import Counter

import numpy as np

from i18n import _

# A word: letters, digits or _ with an optional space before them; or punctuation with an optional space;
# or a run of spaces and newlines (the last one is left to start the next word). GPT-2's pattern, simplified so
# that Python's re and the library's regex engine read it the same way.
PATTERN = r" ?\w+| ?[^\s\w]+|\s+(?!\S)|\s+"
N_BYTES = 256


def printable_bytes():
    """GPT-2's printable stand-in for each byte: a printable byte stands for itself, the others (space, newline,
    control bytes...) for the characters after "ÿ" in order, so a space shows as "Ġ" and a newline as "Ċ"."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, others = {}, 0
    for b in range(N_BYTES):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(N_BYTES + others)
            others += 1
    return chars


BYTE_CHARS = printable_bytes()  # byte value -> its printable stand-in
ID_OF_BYTE = {b: i for i, b in enumerate(sorted(range(N_BYTES), key=BYTE_CHARS.get))}  # byte value -> token id
BYTE_OF_ID = {i: b for b, i in ID_OF_BYTE.items()}


def words(text):
    """The pieces BPE works inside: 'to be, or' -> ['to', ' be', ',', ' or']."""
    return re.findall(PATTERN, text)


def merge(ids, pair, new_id):
    """ids with every occurrence of pair replaced by new_id, left to right: merge([5, 6, 5, 6], (5, 6), 9) -> [9, 9]."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train(text, vocab_size, progress=None):
    """Learn merges from text until the vocabulary has vocab_size tokens (256 bytes + merges).

    Returns the merges in order, a list of (id, id) pairs: merge k makes token 256 + k. Readable, not fast
    (a few seconds for 100 kB): train.py uses train_fast, which gives the same merges.
    progress: called once per merge (a tqdm bar's update), or None."""
    if vocab_size < N_BYTES:
        raise ValueError(_("a byte-level BPE vocabulary has at least the 256 bytes; got vocab_size {n}").format(
            n=vocab_size))
    counts = Counter(words(text))  # each distinct word once, with how often it occurs
    pieces = [[ID_OF_BYTE[b] for b in word.encode("utf-8")] for word in counts]
    freqs = list(counts.values())
    merges = []
    while N_BYTES + len(merges) < vocab_size:
        pairs = Counter()
        for ids, n in zip(pieces, freqs):
            for pair in zip(ids, ids[1:]):
                pairs[pair] += n
        if not pairs:  # every word is a single token: nothing left to merge
            break
        # The most frequent pair; of equally frequent ones, the smallest ids (as the library does).
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        new_id = N_BYTES + len(merges)
        pieces = [merge(ids, best, new_id) if len(ids) > 1 else ids for ids in pieces]
        merges.append(best)
        if progress:
            progress()
    return merges


def train_fast(text, vocab_size):
    """The same merges as train(text, vocab_size), learned by Hugging Face's `tokenizers` (Rust): seconds for the
    poems' 3.6 million characters, where train() would take hours. Raises ImportError without the library."""
    hf = library_tokenizer([])
    from tokenizers import pre_tokenizers, trainers

    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    hf.train_from_iterator([text], trainer)
    vocab = hf.get_vocab()  # its ids are ours: the bytes in BYTE_CHARS order, then one per merge
    merges = []
    for left, right in library_merges(hf):
        merges.append((vocab[left], vocab[right]))
        if vocab[left + right] != N_BYTES + len(merges) - 1:
            raise RuntimeError(f"unexpected id for merge {left!r} + {right!r}")
    return merges


def library_merges(hf):
    """A `tokenizers` BPE's merges, in order, as pairs of token strings."""
    import json

    merges = json.loads(hf.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]  # older versions: "a b"


def library_tokenizer(merges):
    """A `tokenizers` Tokenizer that encodes exactly as BPETokenizer(merges) does (with no merges: an untrained
    one, for train_fast): the same words, the same bytes, the same ids. Raises ImportError without the library."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    pieces = [BYTE_CHARS[BYTE_OF_ID[i]] for i in range(N_BYTES)]
    merge_strings = []
    for a, b in merges:
        merge_strings.append((pieces[a], pieces[b]))
        pieces.append(pieces[a] + pieces[b])
    model = models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=merge_strings) if merges else models.BPE()
    hf = Tokenizer(model)
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    hf.decoder = decoders.ByteLevel()
    return hf


class BPETokenizer:
    """Encode and decode with a list of merges (from train or train_fast). Same interface as CharTokenizer."""

    kind = "bpe"

    def __init__(self, merges):
        self.merges = [tuple(map(int, pair)) for pair in merges]
        self.ranks = {pair: k for k, pair in enumerate(self.merges)}  # which merge comes first
        self.vocab_size = N_BYTES + len(self.merges)
        self.token_bytes = [bytes([BYTE_OF_ID[i]]) for i in range(N_BYTES)]
        for a, b in self.merges:
            self.token_bytes.append(self.token_bytes[a] + self.token_bytes[b])
        # Characters per token, counted at the byte that starts each character (UTF-8 continuation bytes are
        # 10xxxxxx): what bits per character divides by. A token may end inside a character.
        self.chars_per_token = np.array([sum((b & 0xC0) != 0x80 for b in t) for t in self.token_bytes])
        self._cache = {}  # word -> ids: a text repeats its words, so each is encoded once
        self._fast = None

    def encode_word(self, word):
        ids = [ID_OF_BYTE[b] for b in word.encode("utf-8")]
        while len(ids) > 1:
            # The pair that was merged earliest in training; stop when no pair was ever merged.
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, len(self.ranks)))
            if pair not in self.ranks:
                break
            ids = merge(ids, pair, N_BYTES + self.ranks[pair])
        return ids

    def encode(self, text):
        """str -> list[int]. Any text encodes: a character it never saw is its bytes."""
        ids = []
        for word in words(text):
            if word not in self._cache:
                self._cache[word] = self.encode_word(word)
            ids.extend(self._cache[word])
        return ids

    def encode_array(self, text):
        """Encode a long text -> numpy array, by the library when it is installed (the same ids, faster)."""
        dtype = np.uint16 if self.vocab_size <= 1 << 16 else np.uint32
        try:
            if self._fast is None:
                self._fast = library_tokenizer(self.merges)
            return np.array(self._fast.encode(text).ids, dtype=dtype)
        except ImportError:
            return np.array(self.encode(text), dtype=dtype)

    def decode(self, ids):
        """list[int] (or a 1-D tensor) -> str. Bytes that do not make whole UTF-8 characters show as �."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        try:
            return b"".join(self.token_bytes[i] for i in ids).decode("utf-8", errors="replace")
        except (IndexError, TypeError):
            bad = next(i for i in ids if not isinstance(i, int) or not 0 <= i < self.vocab_size)
            raise ValueError(_("cannot decode id {id}: ids go from 0 to {last}").format(
                id=bad, last=self.vocab_size - 1)) from None

    def token_text(self, i):
        """How token i reads on its own (a piece of a character shows as �)."""
        return self.token_bytes[i].decode("utf-8", errors="replace")

    def token_label(self, i):
        """Token i as a learner reads it in a list: its text, or, when it is only part of a character, its bytes in
        hex, <e6 b7> (day1_bpe.py shows them so too)."""
        return text_or_hex(self.token_bytes[i])

    def unknown(self, text):
        """The characters of text this tokenizer cannot encode: none, for bytes cover everything."""
        return []

    def decoder(self):
        """decode() for ids that arrive one at a time (streaming): a character split across tokens is held
        back until its last byte arrives, so a stream never shows half a Chinese character."""
        return StreamDecoder(self.token_bytes)

    def to_checkpoint(self):
        return {"kind": self.kind, "merges": [list(pair) for pair in self.merges], "pattern": PATTERN}

    @classmethod
    def from_checkpoint(cls, saved):
        if saved.get("pattern", PATTERN) != PATTERN:
            raise ValueError("this checkpoint's BPE splits words with another pattern")
        return cls(saved["merges"])


def hex_bytes(token_bytes):
    """b"\\xe6\\xb7" -> "<e6 b7>": how a token that is only part of a character is shown."""
    return "<" + " ".join(f"{b:02x}" for b in token_bytes) + ">"


def text_or_hex(token_bytes):
    """Bytes as text, or as <hex> when they are not whole UTF-8 characters: the readable name of a token."""
    try:
        return token_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return hex_bytes(token_bytes)


class StreamDecoder:
    """Turns ids into text as they come, keeping an unfinished UTF-8 character until it is whole."""

    def __init__(self, token_bytes):
        self.token_bytes = token_bytes
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def decode(self, ids):
        return self.utf8.decode(b"".join(self.token_bytes[i] for i in ids))
