"""Checkpoints: the one way every script saves a model and loads it back.

A checkpoint is the tutorial's day 4 dict (weights, tokenizer, config) plus whatever a run adds
(train.py: its step, history and, in last.pt, the optimizer and random states). Files are written
atomically, so a crash never leaves half a checkpoint, and read with weights_only=True, so loading
a file never runs code from it.
"""

import inspect
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch

from cli import UserError
from config import Config
from files import shown_path, write_atomically
from i18n import _
from model import MODEL_ARGS, GPTModel
from utils import tokenizer_from_checkpoint


def make_checkpoint(model, tokenizer, config, **extra):
    """The checkpoint dict every script saves: the tutorial's day 4 format, plus any extra entries.

    config: a dict (or dataclass) with at least n_embd, num_heads, n_layer and block_size.
    `tokenizer_itos` is never read back (it is stoi inverted), but the tutorial's format has it, so
    checkpoints stay loadable by the tutorial's own code. A BPE tokenizer is saved as its merges
    under `tokenizer` instead.
    """
    if tokenizer.kind == "bpe":
        saved_tokenizer = {"tokenizer": tokenizer.to_checkpoint()}
    else:
        saved_tokenizer = {"tokenizer_stoi": tokenizer.stoi, "tokenizer_itos": tokenizer.itos}
    return {
        "model_state_dict": model.state_dict(),
        **saved_tokenizer,
        "vocab_size": tokenizer.vocab_size,
        "config": asdict(config) if is_dataclass(config) else dict(config),
        **extra,
    }


def save_checkpoint(obj, path):
    """torch.save, atomically: a crash mid-save leaves the previous checkpoint intact."""
    write_atomically(path, lambda f: torch.save(obj, f))


def load_checkpoint(path, device="cpu", train_command="python3 train.py"):
    """Load a checkpoint safely (weights_only=True) onto device, with a clear UserError if it can't be.
    train_command: what makes such a checkpoint, for the message when there is none."""
    path = Path(path)
    if not path.is_file():
        raise UserError(_("no checkpoint at {path}; train one first: {command} (or pass --checkpoint)").format(
            path=path, command=train_command))
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception:  # a text file, a damaged download, a pickle of arbitrary objects...
        raise UserError(_("{path} is not a checkpoint that Mini-GPT can read (a damaged file, or not one written "
                          "by train.py); pass the ckpt.pt that train.py saved").format(path=path)) from None


def saved_model_args(cfg, state_dict=None):
    """The GPTModel arguments of a checkpoint's config (a dict). A field it lacks, such as qk_norm in a
    checkpoint saved before that option existed, gets GPTModel's own default: the classic model it was.
    Whether the head has a bias is read from the weights themselves (state_dict), when given: day 4's
    checkpoints and those saved before head_bias existed don't say."""
    defaults = inspect.signature(GPTModel).parameters
    args = {k: defaults[k].default for k in MODEL_ARGS if defaults[k].default is not inspect.Parameter.empty}
    if state_dict is not None:
        args["head_bias"] = "lm_head.bias" in state_dict
    args.update((k, cfg[k]) for k in MODEL_ARGS if k in cfg)
    return args


def model_from_checkpoint(ckpt, device="cpu"):
    """Rebuild (model, tokenizer) from a checkpoint dict: train.py's, or day 4's (the same format)."""
    try:
        model = GPTModel(ckpt["vocab_size"], **saved_model_args(ckpt["config"], ckpt["model_state_dict"]))
        tokenizer = tokenizer_from_checkpoint(ckpt)
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


# The weights with a row per character: the token embedding (which the tied output layer shares) and the
# output layer's bias, if it has one.
VOCAB_ROWS = ("token_embedding.weight", "lm_head.weight", "lm_head.bias")


def grow_vocabulary(state_dict, old_vocab, new_vocab):
    """A trained model's weights for a vocabulary of new_vocab characters: the old one with new characters appended.

    The old characters keep their rows. Each new character's row starts as the mean of the old rows: a vector
    inside the region the trained layers have learned to read, and, through the tied output layer, a logit
    that starts at the average character's rather than at a random one, so no new character is predicted
    wildly before fine-tuning has seen it (Hugging Face's resize_token_embeddings also starts at the mean).
    Check the result with state_dict_mismatch before loading it."""
    grown = dict(state_dict)
    for name in VOCAB_ROWS:
        rows = state_dict.get(name)
        if rows is not None and rows.shape[0] == old_vocab < new_vocab:
            mean = rows.mean(0, keepdim=True).expand(new_vocab - old_vocab, *rows.shape[1:])
            grown[name] = torch.cat([rows, mean])  # (new_vocab, ...)
    return grown


def load_model(path, device="cpu", train_command="python3 train.py"):
    """The one way scripts load a trained model: (model in eval mode on device, tokenizer)."""
    model, tokenizer = model_from_checkpoint(load_checkpoint(path, device, train_command), device)
    return model.eval(), tokenizer


# ----------------------------------------------------------------------------------------------
# What a checkpoint says about how it was made (for the exports' model cards)


def training_command(ckpt):
    """A train.py command that makes this run again: its data and every field that differs from config.py's."""
    defaults = Config()
    flags = [f"--{name} {str(value).lower() if isinstance(value, bool) else value}"
             for name, value in ckpt.get("config", {}).items()
             if hasattr(defaults, name) and getattr(defaults, name) != value]
    parts = ["python3 train.py", f"--data {shown_path(ckpt.get('data', 'data/input.txt'))}"]
    if ckpt.get("seed", 1337) != 1337:
        parts.append(f"--seed {ckpt['seed']}")
    return " ".join(parts + flags)


def example_prompt(ckpt, tokenizer, qa):
    """A prompt the page starts with, from the model's own text: a question for a Q&A model, else the first line of
    its training text that it can encode (a Chinese model is never offered "ROMEO:")."""
    if qa:
        return "12+34等于多少？"
    try:
        with open(ckpt.get("data", ""), encoding="utf-8") as f:
            lines = [line.strip() for _, line in zip(range(50), f)]
    except (OSError, UnicodeDecodeError):
        lines = []
    return next((line[:40] for line in lines if line and not tokenizer.unknown(line)), "")
