"""How a training run starts: from scratch, from where it stopped (--resume) or from a trained model
(--init_from). Each kind of start is one function below, and each returns the same Start: the config, the
run's state, the tokenizer, the tokenized text and the model. Nothing after start_run() asks which it was,
the way nanoGPT's init_from block builds the same things for every kind of start.

The run's state (RunState, with a HistoryRow per evaluation) lives here too: it is what a checkpoint saves and
what --resume reads back.
"""

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from bpe import BPETokenizer, train as train_bpe, train_fast
from checkpoint import grow_vocabulary, load_checkpoint, saved_model_args, state_dict_mismatch
from cli import UserError
from config import Config, apply_overrides, choose_preset, config_from_args, validate
from i18n import _
from model import MODEL_ARGS, GPTModel
from qa_format import QUESTION_PATTERN, question_mask
from token_cache import load_tokens
from utils import REPO_DIR, CharTokenizer, read_text, set_seed, tokenizer_from_checkpoint, train_val_split

DEFAULT_DATA = REPO_DIR / "data" / "input.txt"
DEFAULT_SEED = 1337
# What a resumed or fine-tuned run cannot change: the model's shape and architecture (dropout, a training
# setting, can) ...
MODEL_SIZE = tuple(name for name in MODEL_ARGS if name != "dropout")
# ... nor how the text becomes tokens.
TOKENS = ("tokenizer", "vocab_size")


class HistoryRow(NamedTuple):
    """One evaluation: a row of log.csv and a point of loss.png."""
    step: int
    seconds: float
    lr: float
    train_loss: float
    val_loss: float
    full_val_loss: float = math.nan  # the whole validation split, measured once for the best model
    val_bpc: float = math.nan  # val_loss in bits per character of the text (val_loss / ln 2 for a character model)
    full_val_bpc: float = math.nan  # full_val_loss in bits per character: the number that compares tokenizers


@dataclass
class RunState:
    """Where a run stands. It is saved in every checkpoint, so --resume continues from here."""
    data: str
    seed: int
    init_from: str = ""  # the checkpoint a fine-tuning run started from ("" when it started from scratch)
    step: int = 0  # optimizer steps taken
    seconds: float = 0.0  # training time so far, by rank 0's clock
    best_val_loss: float = math.inf
    history: list = field(default_factory=list)  # a HistoryRow per evaluation

    def to_checkpoint(self):
        # Plain tuples: weights_only loading accepts them, not classes defined here.
        return {"data": self.data, "seed": self.seed, "init_from": self.init_from, "step": self.step,
                "seconds": self.seconds, "best_val_loss": self.best_val_loss,
                "history": [tuple(row) for row in self.history]}

    @classmethod
    def from_checkpoint(cls, ckpt):
        return cls(data=ckpt["data"], seed=ckpt["seed"], init_from=ckpt.get("init_from", ""), step=ckpt["step"],
                   seconds=ckpt["seconds"], best_val_loss=ckpt["best_val_loss"],
                   history=[HistoryRow(*row) for row in ckpt["history"]])


@dataclass
class Corpus:
    """The text a run learns from, as token ids: the first 90% of its characters to train on, the rest to
    validate on, and the tokenizer that made the ids."""
    tokenizer: object  # utils.CharTokenizer or bpe.BPETokenizer
    train: object  # token ids: a 1-D tensor or numpy array
    val: object
    n_chars: int
    val_chars: int  # characters in the validation split: what bits per character divides by
    bpe_seconds: float = 0.0  # how long learning the BPE merges took (0: they came from a checkpoint)
    targets: dict = field(default_factory=dict)  # --loss_on answers: {"train", "val"}: ids as targets, -1 in questions


@dataclass
class Start:
    """What every kind of start gives the training loop."""
    cfg: Config
    state: RunState
    corpus: Corpus
    model: GPTModel  # on the CPU: its initial weights, or the checkpoint's
    origin: str  # where the config came from, for the start-up summary
    preset: str = None  # the preset the sizes came from (None: config.py's values, or a checkpoint's)
    saved: dict = field(default_factory=dict)  # --resume: last.pt's optimizer, random states and weight average
    notes: list = field(default_factory=list)  # lines the start-up summary ends with

    @property
    def tokenizer(self):
        return self.corpus.tokenizer

    def restore(self, optimizer, batch_generator, average, rank, world_size):
        """Put back what last.pt saved besides the weights (nothing, for a new run): the optimizer's state, the
        random states and the weight average."""
        if not self.saved:
            return
        try:
            optimizer.load_state_dict(self.saved["optimizer_state_dict"])
        except (ValueError, KeyError) as e:
            raise UserError(_("{path} holds an optimizer state this run can't use ({reason})").format(
                path=self.origin, reason=e)) from None
        set_rng_state(self.saved["rng_state"], batch_generator)
        if average is not None and "average_state_dict" in self.saved:  # else the average starts afresh
            average.load_state_dict(self.saved["average_state_dict"])
        if world_size > 1:  # last.pt holds rank 0's random states: give each process its own stream again
            torch.manual_seed(self.state.seed + rank + 7919 * self.state.step)
            batch_generator.manual_seed(self.state.seed + rank + 7919 * self.state.step)


def start_run(args, device):
    """The one place that decides how this run begins (train.py's flags in args)."""
    out_dir = Path(args.out_dir)
    if args.resume and args.init_from:
        raise UserError(_("--resume continues a run and --init_from starts a new one from a trained model: give "
                          "one of them"))
    if args.resume:
        start = resume(args, out_dir / "last.pt")
    elif args.init_from:
        start = init_from(args, out_dir, device)
    else:
        start = from_scratch(args, device)
    if start.cfg.loss_on == "answers":
        start.corpus.targets = answers_only(start.corpus, start.state.data)
        masked = int((start.corpus.targets["train"] < 0).sum())
        start.notes.append(_("loss on answers only: {masked:,} of the {total:,} training tokens are in questions, "
                             "neither trained nor scored").format(masked=masked, total=len(start.corpus.train)))
    if not args.resume and (out_dir / "ckpt.pt").exists():
        start.notes.insert(0, _("note: {path} exists and will be replaced once this run has a better model; use "
                                "--out_dir to keep it").format(path=out_dir / "ckpt.pt"))
    return start


def from_scratch(args, device):
    """A new model with random weights, sized by the flags, the preset or config.py."""
    preset = choose_preset(args.preset, device)
    state = new_state(args)
    cfg = checked_config(lambda: config_from_args(args, preset))
    check_vocab_size_flag(cfg, args)
    if cfg.tokenizer == "bpe":
        corpus = bpe_corpus(state.data, *learn_merges(state.data, cfg.vocab_size))
    else:
        text_data = load_tokens(state.data)  # encoded once, then cached beside the text file
        corpus = char_corpus(text_data, CharTokenizer.from_stoi(text_data.stoi))
    model = new_model(cfg, corpus, state)
    return Start(cfg, state, corpus, model, origin=origin(preset), preset=preset)


def resume(args, last_path):
    """The run saved in last.pt, continued exactly: its config (with the hyperparameter flags given now on top),
    text, tokenizer, weights, optimizer and random states."""
    saved = load_checkpoint(last_path, "cpu")
    check_resume_flags(args, saved, last_path)
    state = RunState.from_checkpoint(saved)
    cfg = checked_config(lambda: resumed_config(args, saved))
    check_vocab_size_flag(cfg, args)
    tokenizer = tokenizer_from_checkpoint(saved)  # the vocabulary it was saved with
    if cfg.tokenizer == "bpe":
        corpus = bpe_corpus(state.data, tokenizer)
    else:
        text_data = load_tokens(state.data)
        # A fine-tuned run's vocabulary is its source's, grown: the text needs only to fit in it.
        fits = set(text_data.stoi) <= set(tokenizer.stoi) if state.init_from else text_data.stoi == tokenizer.stoi
        if not fits:
            raise UserError(_("{data} has changed since {path} was saved; resume needs the same text").format(
                data=state.data, path=last_path))
        corpus = char_corpus(text_data, tokenizer)
    model = new_model(cfg, corpus, state)
    mismatch = state_dict_mismatch(model, saved["model_state_dict"])
    if mismatch:
        raise UserError(_("{path} does not fit this model's sizes ({mismatch}); don't change the model when "
                          "resuming").format(path=last_path, mismatch=mismatch))
    model.load_state_dict(saved["model_state_dict"])
    restore = {name: saved[name] for name in ("optimizer_state_dict", "rng_state", "average_state_dict")
               if name in saved}
    notes = [_("resuming {path} at step {step} (best val loss so far {best:.4f})").format(
        path=last_path, step=state.step, best=state.best_val_loss)]
    return Start(cfg, state, corpus, model, origin=str(last_path), saved=restore, notes=notes)


def init_from(args, out_dir, device):
    """Fine-tuning: a trained model's weights and sizes, on new text, with a fresh optimizer and schedule. Its
    vocabulary grows by the text's new characters, appended after the old ones."""
    source = load_source(args, out_dir)
    preset = choose_preset(args.preset, device)
    state = new_state(args)
    cfg = checked_config(lambda: replace(config_from_args(args, preset), **source_model_args(args, source)))
    check_vocab_size_flag(cfg, args)
    old = tokenizer_from_checkpoint(source)
    added = []
    if cfg.tokenizer == "bpe":
        corpus = bpe_corpus(state.data, old)
    else:
        text_data = load_tokens(state.data)
        tokenizer, added = old.extended(text_data.stoi)
        corpus = char_corpus(text_data, tokenizer)
    model = new_model(cfg, corpus, state)
    # The trained weights, with a row for each new character:
    weights = grow_vocabulary(source["model_state_dict"], source["vocab_size"], corpus.tokenizer.vocab_size)
    mismatch = state_dict_mismatch(model, weights)
    if mismatch:
        raise UserError(_("{path}'s weights do not fit the model its config describes ({mismatch})").format(
            path=args.init_from, mismatch=mismatch))
    model.load_state_dict(weights)
    return Start(cfg, state, corpus, model, origin=origin(preset), preset=preset,
                 notes=describe_source(state, source, added))


# ----------------------------------------------------------------------------------------------
# What the starts share


def new_state(args):
    return RunState(data=str(args.data or DEFAULT_DATA), seed=DEFAULT_SEED if args.seed is None else args.seed,
                    init_from=str(args.init_from or ""))


def origin(preset):
    return _("preset {name}").format(name=preset) if preset else "config.py"


def new_model(cfg, corpus, state):
    """The model cfg describes for the corpus's vocabulary, with the initial weights the run's seed gives (the same
    in every process). A text too short to validate on is refused first."""
    if len(corpus.val) <= cfg.block_size:
        raise UserError(_(
            "{data} has {n:,} characters, too few for block_size {block_size}: the validation tenth needs more "
            "than {block_size}. Use a longer text or a smaller --block_size."
        ).format(data=state.data, n=corpus.n_chars, block_size=cfg.block_size))
    set_seed(state.seed)
    return GPTModel.from_config(cfg, corpus.tokenizer.vocab_size)


def checked_config(make):
    """make()'s config, validated: a bad value is one clear line."""
    try:
        cfg = make()
        validate(cfg)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None
    return cfg


def check_vocab_size_flag(cfg, args):
    if cfg.tokenizer == "char" and args.vocab_size is not None:
        raise UserError(_("--vocab_size sets the size of a BPE vocabulary; a character tokenizer's is the number of "
                          "distinct characters in the text. Add --tokenizer bpe, or drop --vocab_size"))


def char_corpus(text_data, tokenizer):
    """A cached text's characters as the tokenizer's ids, split 90/10 (a token per character: the text's cut)."""
    tokens = text_data.ids_in(tokenizer.stoi)
    train_data, val_data = train_val_split(tokens)
    return Corpus(tokenizer, train_data, val_data, len(tokens), len(val_data))


def bpe_corpus(data, tokenizer, bpe_seconds=0.0):
    """BPE ids of the text, each split encoded on its own."""
    text = read_text(data)
    train_text, val_text = train_val_split(text)
    splits = [torch.from_numpy(tokenizer.encode_array(part).astype("int64")) for part in (train_text, val_text)]
    return Corpus(tokenizer, *splits, len(text), len(val_text), bpe_seconds=bpe_seconds)


def answers_only(corpus, data):
    """--loss_on answers: {"train", "val"}: each split's ids as targets, with -1 (no loss, and not scored) at each
    token of a question. Training and evaluation then measure the same thing, so the best checkpoint is the one
    that answers best."""
    texts = train_val_split(read_text(data))
    if not QUESTION_PATTERN.search(texts[0]):
        raise UserError(_("--loss_on answers trains only the answers of question-and-answer text, but {data} has no "
                          "questions (问：... then 答：...). Make it with python3 prepare_qa_data.py, or drop "
                          "--loss_on").format(data=data))
    return {name: question_targets(ids, text, corpus.tokenizer)
            for name, ids, text in zip(("train", "val"), (corpus.train, corpus.val), texts)}


def question_targets(ids, text, tokenizer):
    """ids as a tensor of targets, -1 at each token that starts inside a question of text."""
    in_question = torch.from_numpy(question_mask(text))
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    chars = torch.as_tensor(tokenizer.chars_per_token)[ids]  # characters starting in each token
    # The character each token starts (a token holding only the end of a character: that character)
    first = (torch.cumsum(chars, 0) - chars - (chars == 0).long()).clamp(0, max(len(text) - 1, 0))
    return torch.where(in_question[first], -1, ids)


# BPE is learned by the readable bpe.train when Hugging Face's tokenizers is not installed: its time grows with
# the text's length times the merges. Tiny Shakespeare with 256 merges (vocab_size 512) takes about 20 s; this
# limit is about a minute.
READABLE_BPE_LIMIT = 1_000_000 * 768


def learn_merges(data, vocab_size):
    """A BPE tokenizer learned from the training split only, so the validation text stays unseen, and the seconds
    that took."""
    train_text, _unused = train_val_split(read_text(data))
    started = time.perf_counter()
    try:
        tokenizer = BPETokenizer(train_fast(train_text, vocab_size))
    except ImportError:
        merges = vocab_size - 256
        if len(train_text) * merges > READABLE_BPE_LIMIT:
            raise UserError(_("learning {merges:,} BPE merges from {n:,} characters needs Hugging Face's tokenizers "
                              "library: pip install -r requirements-hf.txt").format(merges=merges,
                                                                                    n=len(train_text))) from None
        print(_("note: tokenizers is not installed, so the readable bpe.py learns the merges (the same ones, "
                "slower); pip install -r requirements-hf.txt makes it take a second"))
        with tqdm(total=merges, desc=_("BPE merges"), unit=_("merge"), dynamic_ncols=True) as bar:
            tokenizer = BPETokenizer(train_bpe(train_text, vocab_size, progress=bar.update))
    return tokenizer, time.perf_counter() - started


# ----------------------------------------------------------------------------------------------
# --resume: what it may and may not change


def check_resume_flags(args, resumed, last_path):
    """--resume continues a run as it was saved: refuse flags that would silently change what it is."""
    conflicts = []
    if args.data is not None and Path(args.data).resolve() != Path(resumed["data"]).resolve():
        conflicts.append(_("--data {given} (it trains on {saved})").format(given=args.data, saved=resumed["data"]))
    if args.seed is not None and args.seed != resumed["seed"]:
        conflicts.append(_("--seed {given} (its seed is {saved})").format(given=args.seed, saved=resumed["seed"]))
    if args.preset is not None:
        conflicts.append(_("--preset {given} (its sizes are saved)").format(given=args.preset))
    conflicts += size_conflicts(args, saved_sizes(resumed))
    if conflicts:
        raise UserError(_("--resume continues {path} as it was saved, so it can't take {conflicts}. Drop those "
                          "flags, or start a new run with another --out_dir").format(path=last_path,
                                                                                     conflicts="; ".join(conflicts)))


def resumed_config(args, resumed):
    """The saved config, with the hyperparameter flags given now applied on top."""
    known = {k: v for k, v in resumed["config"].items() if k in Config.__dataclass_fields__}
    known.update(saved_sizes(resumed))  # the model it was, even where Config's default moved on
    given = {k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__ and v is not None}
    return apply_overrides(Config(**known), given)


def saved_sizes(ckpt):
    """A checkpoint's model sizes and architecture, and its tokenizer settings ("char" or "bpe", its size)."""
    kind = tokenizer_from_checkpoint(ckpt).kind
    tokens = {"tokenizer": kind, "vocab_size": ckpt["vocab_size"] if kind == "bpe" else Config.vocab_size}
    return {**saved_model_args(ckpt["config"], ckpt["model_state_dict"]), **tokens}


def size_conflicts(args, saved):
    """A line per size or tokenizer flag given that contradicts the saved model."""
    given = {name: getattr(args, name) for name in (*MODEL_SIZE, *TOKENS) if getattr(args, name) is not None}
    return [_("--{name} {given} (it has {saved})").format(name=name, given=value, saved=saved.get(name))
            for name, value in given.items() if value != saved.get(name)]


# ----------------------------------------------------------------------------------------------
# --init_from: the model it starts from


def load_source(args, out_dir):
    """The checkpoint a fine-tuning run starts from, refused if this run would overwrite it."""
    path = Path(args.init_from)
    if path.resolve() in {(out_dir / name).resolve() for name in ("ckpt.pt", "last.pt")}:
        raise UserError(_("--init_from {path} is inside --out_dir {out_dir}, so this run would overwrite the model "
                          "it starts from; give another --out_dir").format(path=path, out_dir=out_dir))
    source = load_checkpoint(path, "cpu")
    if "model_state_dict" not in source or not ({"tokenizer_stoi", "tokenizer"} & set(source)):
        raise UserError(_("{path} is not a checkpoint that Mini-GPT can read (a damaged file, or not one written "
                          "by train.py); pass the ckpt.pt that train.py saved").format(path=path))
    return source


def source_model_args(args, source):
    """The model a fine-tuning run trains is its source's: the same sizes and architecture. A flag or preset
    that says otherwise is refused; dropout, a training setting, can change."""
    if args.preset is not None:
        raise UserError(_("--init_from takes the model's size from {path}, so it can't take --preset {preset}; "
                          "drop --preset").format(path=args.init_from, preset=args.preset))
    saved = saved_sizes(source)
    conflicts = size_conflicts(args, saved)
    if conflicts:
        raise UserError(_("--init_from {path} fine-tunes the model as it was trained, so it can't take {conflicts}. "
                          "Drop those flags").format(path=args.init_from, conflicts="; ".join(conflicts)))
    return {name: saved[name] for name in (*MODEL_SIZE, *TOKENS)}


def describe_source(state, source, added):
    """Two lines: where the weights come from, and how the vocabulary grew."""
    lines = [_("fine-tuning: weights from {path} (trained {steps} steps on {data}); a fresh optimizer, schedule and "
               "step count").format(path=state.init_from, steps=source.get("step", "?"), data=source.get("data", "?"))]
    if added:
        shown = "".join(added[:20]).replace("\n", "\\n") + ("…" if len(added) > 20 else "")
        lines.append(_("vocabulary: its {old:,} characters keep their ids; {n:,} new ones from {data} were added after "
                       "them ({shown}), each starting at the mean of the old embedding rows").format(
            old=source["vocab_size"], n=len(added), data=state.data, shown=shown))
    else:
        lines.append(_("vocabulary: its {old:,} characters cover every character of {data}; none added").format(
            old=source["vocab_size"], data=state.data))
    return lines


# ----------------------------------------------------------------------------------------------
# Random states: saved in last.pt, so --resume continues the exact same run


def rng_state(batch_generator):
    """The random states a run draws from (batches, dropout)."""
    state = {"torch": torch.get_rng_state(), "batches": batch_generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state, batch_generator):
    torch.set_rng_state(state["torch"])
    batch_generator.set_state(state["batches"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
