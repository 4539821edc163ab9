"""Shared helpers: the character tokenizer, devices, seeding, data, batches and checkpoints.

Every script imports these from here, so each job is written exactly once.
"""

import hashlib
import json
import logging
import math
import os
import random
import sys
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model import GPTModel

REPO_DIR = Path(__file__).resolve().parent


class UserError(Exception):
    """A problem the user can fix (bad flag, missing file...). Scripts print it as one line and exit 2."""


def run_main(main):
    """Run a script's main(), turning a UserError into one clear line on stderr and exit status 2."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


# ----------------------------------------------------------------------------------------------
# Tokenizer


class CharTokenizer:
    """Character-level tokenizer: every distinct character in the text is one token.

    The vocabulary is the sorted set of characters, so the same text always gives the same ids.
    `stoi` maps str -> int, `itos` maps int -> str.
    """

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
            raise ValueError(
                f"cannot encode {len(unknown)} unknown character(s): {shown}. "
                f"The tokenizer only knows the {self.vocab_size} characters seen in its training text."
            )
        return self._ids_by_codepoint[pos]

    def encode(self, text):
        """str -> list[int]. Raises ValueError naming any character not in the vocabulary."""
        return self.encode_array(text).tolist()

    def decode(self, ids):
        """list[int] (or a 1-D tensor) -> str."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        try:
            return "".join(self.itos[i] for i in ids)
        except KeyError as e:
            raise ValueError(f"cannot decode id {e.args[0]}: ids go from 0 to {self.vocab_size - 1}") from None


# ----------------------------------------------------------------------------------------------
# Device and seeding


def get_device(name="auto"):
    """'auto' picks cuda, then Apple's mps, then cpu; 'cpu', 'cuda', 'cuda:1' or 'mps' force one."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} was asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps was asked for, but Apple's MPS is not available here; use --device cpu or auto")
    if name != "cpu" and not name.startswith(("cuda", "mps")):
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return name


def autocast_context(device):
    """bfloat16 autocast on CUDA GPUs that support it (faster matmuls, same range as fp32); else fp32."""
    if str(device).startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def set_seed(seed):
    """Seed python, numpy and torch (all devices) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# Data


def read_text(path):
    """Read a UTF-8 text file, with a clear UserError if it is missing, not UTF-8 or empty."""
    text = "".join(_read_chunks(path))
    if not text:
        raise _empty_file(path)
    return text


def _empty_file(path):
    return UserError(f"{path} is empty; give a text file with something to learn from")


@dataclass
class TokenData:
    tokens: np.ndarray  # 1-D token ids, usually a read-only np.memmap of the cache file
    stoi: dict  # the vocabulary: character -> id


CHUNK_CHARS = 1 << 24  # encode big files 16M characters at a time, so they never need to fit in memory


def _file_hash(path):
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _read_chunks(path):
    """Yield the text of a UTF-8 file in pieces of CHUNK_CHARS characters, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such text file: {path}; check the path and try again")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for chunk in iter(lambda: f.read(CHUNK_CHARS), ""):
                yield chunk
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start} of a block is invalid); save it as UTF-8") from None


def load_tokens(path):
    """A text file's token ids and vocabulary, encoded once and cached beside the file.

    The cache is `<file>.<content hash>.tokens.npy` (uint16 ids when the vocabulary fits, else
    uint32) plus `.tokens.json` (the vocabulary), read back through np.memmap: a restart costs no
    re-encoding, and a corpus bigger than RAM is read from disk as batches need it. Editing the text
    changes its hash, so a stale cache is never used. If the folder is read-only, nothing is cached.
    """
    path = Path(path)
    chunks = _read_chunks(path)
    first = next(chunks, "")  # also checks the file exists and starts as valid UTF-8
    if not first:
        raise _empty_file(path)
    stem = f"{path.name}.{_file_hash(path)}.tokens"
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
        return TokenData(tokenizer.encode_array("".join(_read_chunks(path))).astype(dtype), tokenizer.stoi)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n,))
        pos = 0
        for chunk in _read_chunks(path):
            out[pos : pos + len(chunk)] = tokenizer.encode_array(chunk)
            pos += len(chunk)
        out.flush()
        del out
        remove_stale_caches(path, stem)
        # Vocabulary first, then the tokens, each renamed into place whole: a process that finds
        # both files (another torchrun rank, say) never reads a half-written one.
        vocab = json.dumps(tokenizer.stoi, ensure_ascii=False).encode("utf-8")
        write_atomically(vocab_file, lambda f: f.write(vocab))
        os.replace(tmp, cache)
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


def write_atomically(path, write):
    """Call write(file) on a temporary file in path's folder, then rename it to path.

    The rename is atomic, so a crash at any moment (or a reader in another process) sees either
    the old file or the new one, never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def train_val_split(data, train_fraction=0.9):
    """First train_fraction of the tokens for training, the rest for validation."""
    n = int(train_fraction * len(data))
    return data[:n], data[n:]


def get_batch(data, batch_size, block_size, device, generator=None):
    """Sample batch_size random windows of block_size tokens from data.

    data: 1-D torch tensor or numpy array of token ids. Returns x, y: (batch_size, block_size)
    int64 on device, with y the same windows shifted one token to the right (the next characters).
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
    return x.to(device), y.to(device)


# ----------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(obj, path):
    """torch.save, atomically: a crash mid-save leaves the previous checkpoint intact."""
    write_atomically(path, lambda f: torch.save(obj, f))


def load_checkpoint(path, device="cpu"):
    """Load a checkpoint safely (weights_only=True) onto device, with a clear UserError if missing."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; train one first with `python3 train.py` (or pass --checkpoint)")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # corrupt file, not a checkpoint, ...
        raise UserError(f"could not read checkpoint {path}: {e}") from None


MODEL_ARGS = ("n_embd", "num_heads", "n_layer", "block_size", "dropout")


def model_from_checkpoint(ckpt, device="cpu"):
    """Rebuild (model, tokenizer) from a checkpoint dict: train.py's, or day 4's smaller format."""
    try:
        cfg = ckpt["config"]
        args = {k: cfg[k] for k in MODEL_ARGS if k in cfg}
        model = GPTModel(vocab_size=ckpt["vocab_size"], **args)
        model.load_state_dict(ckpt["model_state_dict"])
        tokenizer = CharTokenizer.from_stoi(ckpt["tokenizer_stoi"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise UserError(f"this checkpoint does not hold a Mini-GPT model ({type(e).__name__}: {e})") from None
    return model.to(device), tokenizer


# ----------------------------------------------------------------------------------------------
# Training helpers


@torch.no_grad()
def estimate_loss(model, splits, eval_iters, batch_size, block_size, device, seed=0):
    """Mean loss over eval_iters batches of each split, in eval mode.

    The batches come from their own generator, seeded the same way each time, so every evaluation
    scores the same windows (a fair comparison between steps) and training's randomness is untouched.
    """
    model.eval()
    out = {}
    for name, data in splits.items():
        generator = torch.Generator().manual_seed(seed)
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            x, y = get_batch(data, batch_size, block_size, device, generator)
            _, loss = model(x, y)
            losses[k] = loss.item()
        out[name] = losses.mean().item()
    model.train()
    return out


def lr_at(step, progress, base_lr, warmup_iters, min_lr_ratio=0.1):
    """Learning rate for a step: linear warmup, then cosine decay down to base_lr * min_lr_ratio.

    step: optimizer steps already taken; progress: how much of the run is done, from 0 to 1
    (steps done / max_iters, or seconds used / time budget). Warmup avoids large, badly aimed
    first updates while AdamW's statistics are still empty; the decay lets the model settle.
    """
    if step < warmup_iters:
        return base_lr * (step + 1) / warmup_iters
    progress = min(max(progress, 0.0), 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return base_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)


def pyplot(chinese=False):
    """matplotlib.pyplot on the non-interactive Agg backend: saving PNGs works with no display.

    chinese=True puts a CJK font first when this machine has one (matplotlib's fallback from
    DejaVu Sans to a CJK font does not work for every font, so the CJK font must lead).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # no chatter about font weights
    cjk = installed_cjk_fonts(font_manager)
    plt.rcParams["font.sans-serif"] = [*cjk, "DejaVu Sans"] if chinese else ["DejaVu Sans", *cjk]
    return plt


def installed_cjk_fonts(font_manager=None):
    """The fonts from CJK_FONTS that matplotlib can find on this machine."""
    if font_manager is None:
        from matplotlib import font_manager
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return [name for name in CJK_FONTS if name in installed]


CJK_FONTS = ["Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "SimHei",
             "Microsoft YaHei", "PingFang SC", "Heiti SC", "Arial Unicode MS"]


def plot_losses(steps, train_losses, val_losses, path, title="Training progress"):
    """Save a train/val loss curve as a PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(steps, train_losses, marker="o", label="train loss")
    ax.plot(steps, val_losses, marker="s", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
