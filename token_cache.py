"""Encode a text file once and keep its token ids beside it, so a restart costs no re-encoding.

The cache is `<file>.<content hash>.tokens.npy` (uint16 ids when the vocabulary fits, else uint32)
plus `.tokens.json` (the vocabulary), read back through np.memmap: a corpus bigger than RAM is read
from disk as batches need it. Editing the text changes its hash, so a stale cache is never used.
If the folder is read-only, nothing is cached and the text is encoded in memory.
"""

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from files import fsync_folder, readable_mode, write_atomically
from utils import CharTokenizer, empty_file_error, read_chunks


@dataclass
class TokenData:
    tokens: np.ndarray  # 1-D token ids, usually a read-only np.memmap of the cache file
    stoi: dict  # the vocabulary: character -> id

    def ids_in(self, stoi):
        """The tokens renumbered into another vocabulary that holds all of this one's characters (a fine-tuned
        model's: the checkpoint's ids, then the new ones). The same array when the ids already agree."""
        if stoi == self.stoi:
            return self.tokens
        table = np.zeros(len(self.stoi), dtype=np.uint16 if len(stoi) <= 1 << 16 else np.uint32)
        for ch, i in self.stoi.items():
            table[i] = stoi[ch]
        return table[self.tokens]


def file_hash(path):
    """The first 16 hex digits of the file's SHA-1: enough to tell versions of a text apart."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def load_tokens(path):
    """A text file's token ids and vocabulary, encoded once and cached beside the file."""
    path = Path(path)
    chunks = read_chunks(path)
    first = next(chunks, "")  # also checks the file exists and starts as valid UTF-8
    if not first:
        raise empty_file_error(path)
    stem = f"{path.name}.{file_hash(path)}.tokens"
    cache, vocab_file = path.with_name(stem + ".npy"), path.with_name(stem + ".json")
    if cache.is_file() and vocab_file.is_file():
        stoi = json.loads(vocab_file.read_text(encoding="utf-8"))
        return TokenData(np.load(cache, mmap_mode="r"), stoi)

    # Pass 1: the vocabulary and the length. Pass 2: encode chunk by chunk into the cache file.
    chars, n = set(first), len(first)
    for chunk in chunks:
        chars.update(chunk)
        n += len(chunk)
    tokenizer = CharTokenizer("".join(chars))
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=stem + ".", suffix=".tmp")
        os.close(fd)
    except OSError:  # read-only folder: encode in memory instead
        return TokenData(tokenizer.encode_array("".join(read_chunks(path))).astype(dtype), tokenizer.stoi)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n,))
        pos = 0
        for chunk in read_chunks(path):
            out[pos : pos + len(chunk)] = tokenizer.encode_array(chunk)
            pos += len(chunk)
        out.flush()
        del out
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # on disk before the rename, so a power cut leaves no half-written cache
        os.chmod(tmp, readable_mode())  # mkstemp makes it private (0600); a cache is an ordinary file
        remove_stale_caches(path, stem)
        # Vocabulary first, then the tokens, each renamed into place whole: a process that finds
        # both files (another torchrun rank, say) never reads a half-written one.
        vocab = json.dumps(tokenizer.stoi, ensure_ascii=False).encode("utf-8")
        write_atomically(vocab_file, lambda f: f.write(vocab))
        os.replace(tmp, cache)
        fsync_folder(cache.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return TokenData(np.load(cache, mmap_mode="r"), tokenizer.stoi)


def remove_stale_caches(path, current_stem):
    """Delete the caches of earlier versions of the text at path, never the current one."""
    for pattern in ("*.tokens.npy", "*.tokens.json"):
        for old in path.parent.glob(f"{path.name}.{pattern}"):
            if not old.name.startswith(current_stem + "."):
                old.unlink(missing_ok=True)  # another process may have removed it already
