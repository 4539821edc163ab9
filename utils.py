"""Shared helpers, in the order a run needs them: the character tokenizer, devices, text and
batches, evaluation, the learning-rate schedule, checkpoints and pictures.

Every script imports these from here, so each job is written exactly once. (Caching a text file's
token ids on disk has its own module, token_cache.py.)
"""

import inspect
import logging
import math
import os
import random
import sys
import tempfile
from contextlib import nullcontext
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from i18n import _, language
from model import GPTModel

REPO_DIR = Path(__file__).resolve().parent


class UserError(Exception):
    """A problem the user can fix (bad flag, missing file...). Scripts print it as one line and exit 2."""


def run_main(main):
    """Run a script's main(), turning a UserError into one clear line on stderr and exit status 2."""
    try:
        main()
    except UserError as e:
        print(_("error: {message}").format(message=e), file=sys.stderr)
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
            raise ValueError(_(
                "cannot encode {n} unknown character(s): {shown}. The tokenizer only knows the {vocab} characters "
                "seen in its training text."
            ).format(n=len(unknown), shown=shown, vocab=self.vocab_size))
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
            raise ValueError(_("cannot decode id {id}: ids go from 0 to {last}").format(
                id=e.args[0], last=self.vocab_size - 1)) from None


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
        raise UserError(_("--device {name} was asked for, but PyTorch sees no CUDA GPU; use --device cpu or "
                          "auto").format(name=name))
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(_("--device mps was asked for, but Apple's MPS is not available here; use --device cpu or "
                          "auto"))
    if name != "cpu" and not name.startswith(("cuda", "mps")):
        raise UserError(_("unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps").format(name=name))
    return name


def cpu_has_fast_bf16(cpuinfo="/proc/cpuinfo"):
    """True if this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX, as Linux reports them).

    There bf16 matmuls run several times faster than fp32 (4.4x on the 2-core AMD EPYC of
    docs/speedrun.md); elsewhere PyTorch emulates them and fp32 is faster, so "auto" keeps fp32.
    """
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:  # not Linux: no cheap, reliable way to tell, so stay with fp32
        pass
    return False


def resolve_precision(device, precision="auto"):
    """ "bf16" or "fp32": what a run computes in. auto = bf16 on CUDA GPUs that support it and on CPUs
    with hardware bf16, fp32 elsewhere (Apple MPS always runs fp32)."""
    device = str(device)
    if precision == "auto":
        if device.startswith("cuda"):
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if device == "cpu" and cpu_has_fast_bf16() else "fp32"
    return "fp32" if device.startswith("mps") else precision


def autocast_context(device, precision="auto"):
    """The context training runs its forward pass in: bfloat16 autocast or plain fp32 (see resolve_precision).

    Under bf16 autocast the matrix multiplies run in bfloat16 (fp32's range, fewer digits) while the
    weights, the optimizer and the loss stay fp32.
    """
    if resolve_precision(device, precision) == "bf16":
        return torch.autocast("cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)
    return nullcontext()


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
    except UnicodeDecodeError as e:
        raise UserError(_("{path} is not UTF-8 text (byte {byte} of a block is invalid); save it as UTF-8").format(
            path=path, byte=e.start)) from None


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
# Evaluation


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


@torch.no_grad()
def full_split_loss(model, data, block_size, batch_size, device):
    """Mean loss over the whole of `data`: every non-overlapping window of block_size characters.

    Each character (but the first) is predicted exactly once, from the characters before it in its
    window. estimate_loss() samples a few random windows, which is quick but noisy; this is the
    number to compare runs by. Returns a float.
    """
    n = (len(data) - 1) // block_size  # whole windows: their targets still fit in data
    if n == 0:
        raise ValueError(f"need more than block_size={block_size} tokens, got {len(data)}")
    if not isinstance(data, torch.Tensor):  # a read-only memory map of the token cache: copy what we use
        data = torch.from_numpy(np.array(data[: n * block_size + 1], dtype=np.int64))
    x = data[: n * block_size].view(n, block_size).long()
    y = data[1 : n * block_size + 1].view(n, block_size).long()
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, n, batch_size):
        logits, _ = model(x[i : i + batch_size].to(device))
        total += F.cross_entropy(logits.flatten(0, 1).float(), y[i : i + batch_size].to(device).flatten(),
                                 reduction="sum").item()
    model.train(was_training)
    return total / (n * block_size)


# ----------------------------------------------------------------------------------------------
# Learning-rate schedule


def progress(step, seconds, max_iters, time_budget):
    """How much of a run is done, from 0 to 1: by steps or by the clock, whichever is further along.

    time_budget 0 means no clock, so the run (and its schedule) is the same on every machine.
    """
    by_steps = step / max(max_iters, 1)
    by_clock = seconds / time_budget if time_budget else 0.0
    return min(max(by_steps, by_clock), 1.0)


def lr_at(progress, base_lr, warmup, min_lr_ratio=0.1, schedule="cosine", cooldown=0.3):
    """Learning rate at a point of the run: a linear warmup, then a decay to base_lr * min_lr_ratio.

    progress: how much of the run is done, 0..1 (see progress()); warmup: the fraction of the run spent
    warming up. Both are measured on the same axis, so the schedule has the same shape whether steps
    or the clock end the run, and on a fast machine or a slow one. Warmup avoids large, badly aimed
    first updates while the optimizer's statistics are still empty; the decay lets the model settle.

    schedule "cosine": decay along half a cosine from the end of warmup to the end of the run.
    schedule "wsd" (warmup-stable-decay): stay at the peak, then decay linearly over the last
    `cooldown` fraction of the run. A long time at the peak learns fastest; the short cooldown at
    the end collects most of the gain that a slow decay would.
    """
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return base_lr * progress / warmup
    if schedule == "wsd":
        start = max(1.0 - cooldown, warmup)  # when the cooldown begins
        decay = (progress - start) / (1.0 - start) if progress > start else 0.0  # 0 -> 1 during the cooldown
        return base_lr * (1.0 - (1.0 - min_lr_ratio) * decay)
    decay = (progress - warmup) / (1.0 - warmup) if warmup < 1.0 else 1.0  # 0 -> 1 after warmup
    cosine = 0.5 * (1.0 + math.cos(math.pi * decay))  # 1 -> 0
    return base_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)


# ----------------------------------------------------------------------------------------------
# Checkpoints


def readable_mode():
    """The permissions an ordinary new file gets here: rw for everyone, less the umask (often 0644)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_folder(folder):
    """Make a rename inside folder durable (POSIX). Windows cannot open folders; it has nothing to do."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path, write):
    """Call write(file) on a temporary file in path's folder, then rename it to path.

    The rename is atomic, so a crash at any moment (or a reader in another process) sees either the
    old file or the new one, never half a file. The data is fsynced before the rename and the folder
    after it, so this holds after a power cut too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, readable_mode())  # mkstemp makes it private (0600); a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_folder(path.parent)


def make_checkpoint(model, tokenizer, config, **extra):
    """The checkpoint dict every script saves: the tutorial's day 4 format, plus any extra entries.

    config: a dict (or dataclass) with at least n_embd, num_heads, n_layer and block_size.
    `tokenizer_itos` is never read back (it is stoi inverted), but the tutorial's format has it, so
    checkpoints stay loadable by the tutorial's own code.
    """
    return {
        "model_state_dict": model.state_dict(),
        "tokenizer_stoi": tokenizer.stoi,
        "tokenizer_itos": tokenizer.itos,
        "vocab_size": tokenizer.vocab_size,
        "config": asdict(config) if is_dataclass(config) else dict(config),
        **extra,
    }


def save_checkpoint(obj, path):
    """torch.save, atomically: a crash mid-save leaves the previous checkpoint intact."""
    write_atomically(path, lambda f: torch.save(obj, f))


def load_checkpoint(path, device="cpu"):
    """Load a checkpoint safely (weights_only=True) onto device, with a clear UserError if it can't be."""
    path = Path(path)
    if not path.is_file():
        raise UserError(_("no checkpoint at {path}; train one first with `python3 train.py` (or pass "
                          "--checkpoint)").format(path=path))
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception:  # a text file, a damaged download, a pickle of arbitrary objects...
        raise UserError(_("{path} is not a checkpoint that Mini-GPT can read (a damaged file, or not one written "
                          "by train.py); pass the ckpt.pt that train.py saved").format(path=path)) from None


MODEL_ARGS = ("n_embd", "num_heads", "n_layer", "block_size", "dropout", "position", "qk_norm")


def saved_model_args(cfg):
    """The GPTModel arguments of a checkpoint's config (a dict). A field it lacks, such as qk_norm in a
    checkpoint saved before that option existed, gets GPTModel's own default: the classic model it was."""
    defaults = inspect.signature(GPTModel).parameters
    args = {k: defaults[k].default for k in MODEL_ARGS if defaults[k].default is not inspect.Parameter.empty}
    args.update((k, cfg[k]) for k in MODEL_ARGS if k in cfg)
    return args


def model_from_checkpoint(ckpt, device="cpu"):
    """Rebuild (model, tokenizer) from a checkpoint dict: train.py's, or day 4's (the same format)."""
    try:
        model = GPTModel(ckpt["vocab_size"], **saved_model_args(ckpt["config"]))
        tokenizer = CharTokenizer.from_stoi(ckpt["tokenizer_stoi"])
        state_dict = ckpt["model_state_dict"]
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(_("this checkpoint does not hold a Mini-GPT model ({reason})").format(
            reason=f"{type(e).__name__}: {e}")) from None
    mismatch = state_dict_mismatch(model, state_dict)
    if mismatch:
        raise UserError(_("this checkpoint's weights do not fit the model its config describes ({mismatch}); the "
                          "file was changed after train.py saved it").format(mismatch=mismatch))
    model.load_state_dict(state_dict)
    return model.to(device), tokenizer


def state_dict_mismatch(model, state_dict):
    """None if state_dict fits model exactly, else a short description of the first difference."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state_dict:
            return f"{name} is missing"
        if tuple(state_dict[name].shape) != tuple(tensor.shape):
            return f"{name} is {list(state_dict[name].shape)}, the config needs {list(tensor.shape)}"
    extra = sorted(set(state_dict) - set(expected))
    return f"unexpected {extra[0]}" if extra else None


def load_model(path, device="cpu"):
    """The one way scripts load a trained model: (model in eval mode on device, tokenizer)."""
    model, tokenizer = model_from_checkpoint(load_checkpoint(path, device), device)
    return model.eval(), tokenizer


# ----------------------------------------------------------------------------------------------
# Pictures


BUNDLED_FONT = REPO_DIR / "fonts" / "MiniGPT-CJK.otf"  # a subset of Noto Sans CJK SC: fonts/make_font_subset.py
BUNDLED_FONT_NAME = "MiniGPT CJK"
CJK_FONTS = ["Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "SimHei",
             "Microsoft YaHei", "PingFang SC", "Heiti SC", "Arial Unicode MS"]


def pyplot(chinese=False):
    """matplotlib.pyplot on the non-interactive Agg backend: saving PNGs works with no display.

    The repo's own CJK font (fonts/MiniGPT-CJK.otf) is registered, so Chinese labels render on a
    machine with no Chinese font installed; system CJK fonts follow it, for a learner's characters
    that the subset lacks. The fonts are listed as font.family itself: matplotlib falls back glyph by
    glyph along that list (not along the list behind a generic name like "sans-serif"). chinese=True
    puts the CJK fonts first, so Chinese text gets Chinese punctuation and spacing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # no chatter about font weights
    if BUNDLED_FONT.exists() and BUNDLED_FONT_NAME not in {f.name for f in font_manager.fontManager.ttflist}:
        font_manager.fontManager.addfont(str(BUNDLED_FONT))
    cjk = [BUNDLED_FONT_NAME, *installed_cjk_fonts(font_manager)]
    plt.rcParams["font.family"] = [*cjk, "DejaVu Sans"] if chinese else ["DejaVu Sans", *cjk]
    plt.rcParams["axes.unicode_minus"] = False  # the CJK font's hyphen-minus, not a missing U+2212
    return plt


def installed_cjk_fonts(font_manager=None):
    """The fonts from CJK_FONTS that matplotlib can find on this machine."""
    if font_manager is None:
        from matplotlib import font_manager
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return [name for name in CJK_FONTS if name in installed]


def is_cjk(ch):
    """True for Chinese, Japanese and Korean characters and their punctuation (U+2E80 onwards)."""
    return ord(ch) >= 0x2E80


def unplottable(text):
    """The characters of text that neither the bundled font nor a system CJK font can draw
    (empty when a system CJK font is installed: it is trusted to have them)."""
    from matplotlib.ft2font import FT2Font

    if installed_cjk_fonts():
        return ""
    covered = set(FT2Font(str(BUNDLED_FONT)).get_charmap()) if BUNDLED_FONT.exists() else set()
    return "".join(sorted({ch for ch in text if is_cjk(ch) and ord(ch) not in covered}))


def plot_losses(steps, train_losses, val_losses, path, title="Training progress", lang=None):
    """Save a train/val loss curve as a PNG, labelled in `lang` (default: the learner's language)."""
    lang = lang or language()
    plt = pyplot(chinese=lang == "zh")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(steps, train_losses, marker="o", label=_("train loss", lang))
    ax.plot(steps, val_losses, marker="s", label=_("val loss", lang))
    ax.set_xlabel(_("step", lang))
    ax.set_ylabel(_("cross-entropy loss", lang))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
