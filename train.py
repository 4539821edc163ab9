"""Train a character-level GPT on a text file (or a BPE one: --tokenizer bpe).

    python3 train.py                                  # tiny Shakespeare, 10 minutes on a laptop CPU
    python3 train.py --time_budget 120                # the best model 2 minutes can make
    python3 train.py --time_budget 0 --max_iters 3000 # exactly 3000 steps: repeatable, whatever the machine
    python3 train.py --data data/chinese.txt --out_dir out-chinese
    python3 train.py --preset tiny --max_iters 500    # any config.py field can be a flag
    python3 train.py --tokenizer bpe --vocab_size 512 # subword tokens (day1_bpe.py): compare by bits per character
    python3 train.py --resume                         # continue from <out_dir>/last.pt
    python3 train.py --init_from out-chinese/ckpt.pt --data data/qa.txt --out_dir out-qa  # fine-tune
    torchrun --standalone --nproc_per_node=4 train.py # data-parallel on 4 GPUs (or CPU processes)

Writes <out_dir>/ckpt.pt (best validation loss), last.pt (latest, for --resume), loss.png and log.csv.
Then sample with `python3 generate.py`.

Read train() first: it is day 4's loop (evaluate, step, repeat). prepare() and finish() below it
set the run up and wrap it up; several processes, Ctrl-C and the output folder's lock are taken care
of in train_runtime.py.
"""

import argparse
import csv
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from checkpoint import (
    grow_vocabulary, load_checkpoint, make_checkpoint, save_checkpoint, saved_model_args, state_dict_mismatch,
)
from cli import HelpFormatter, UserError, run_main
from config import (
    CUDA_PRESET, PRESETS, Config, add_config_args, apply_overrides,
    choose_preset, config_from_args, preset_sizes, validate,
)
from device import autocast_context, resolve_precision, should_compile
from i18n import _
from model import MODEL_ARGS, GPTModel
from optim import Optimizers, WeightAverage, learning_rate, make_optimizer, progress, train_step
from plots import plot_losses
from token_cache import load_tokens
from train_runtime import (
    CpuMeter, OutDirLock, Pace, StopRequest, agree_on_clock_and_ctrl_c, check_in_sync, choose_threads,
    setup_distributed, slow_run_note,
)
from bpe import BPETokenizer, train as train_bpe, train_fast
from utils import (
    REPO_DIR, CharTokenizer, estimate_loss, full_split_scores, get_batch, read_text, set_seed,
    tokenizer_from_checkpoint, train_val_split,
)

DEFAULT_DATA = REPO_DIR / "data" / "input.txt"
DEFAULT_SEED = 1337
# A time-budgeted run evaluates at least this many times (besides every eval_interval steps).
CLOCK_EVALS = 12
# What a resumed run cannot change: the model's shape and architecture (dropout, a training setting, can).
MODEL_SIZE = tuple(name for name in MODEL_ARGS if name != "dropout")
# ... nor how the text becomes tokens.
TOKENS = ("tokenizer", "vocab_size")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train a GPT on a UTF-8 text file: character-level, or BPE with "
                                                 "--tokenizer bpe.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--data", default=None, help=f"UTF-8 text file to learn from (default: {DEFAULT_DATA})")
    parser.add_argument(
        "--preset", choices=[*sorted(PRESETS), "none"], default=None,
        help=f"named model size from config.py; none = config.py's values (default: {CUDA_PRESET} on CUDA, "
             "config.py's values elsewhere)",
    )
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda, cuda:N or mps (under torchrun, each process takes its own GPU)")
    parser.add_argument("--out_dir", default="out", help="folder for ckpt.pt, last.pt, loss.png and log.csv")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"random seed (default: {DEFAULT_SEED}); with --time_budget 0, the same seed gives the "
                             "same run")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in <out_dir>/last.pt: hyperparameter flags given now override "
                             "its config, but its data, seed and model size stay as they were")
    parser.add_argument("--init_from", default=None, metavar="CKPT",
                        help="fine-tune: start a new run from this checkpoint's weights (its model size and "
                             "vocabulary, with any new characters of --data added), with a fresh optimizer, "
                             "schedule and step count")
    add_config_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rank, world_size, device = setup_distributed(args.device)
    threads = torch.get_num_threads()  # a busy CPU may make this run use fewer: put them back afterwards
    try:
        out_dir = Path(args.out_dir)
        with OutDirLock(out_dir) if rank == 0 else nullcontext():  # one run at a time writes to out_dir
            train(args, rank, world_size, device)
        if dist.is_initialized():
            # Leave together: rank 0 still scores and saves the best model after the loop, and a rank that tears
            # gloo down meanwhile was once seen to abort at exit ("terminate called without an active exception").
            dist.barrier()
    finally:
        torch.set_num_threads(threads)
        if dist.is_initialized():
            dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# The training loop


def train(args, rank, world_size, device):
    run = prepare(args, rank, world_size, device)  # config, data, model, optimizer; resumed if asked
    cfg, state = run.cfg, run.state
    start = time.perf_counter() - state.seconds  # the clock continues where a resumed run stopped
    run.meter, run.pace = CpuMeter(), Pace(state.step, state.seconds)  # did other programs slow it down?
    bar = progress_bar(run)
    with StopRequest() as ctrl_c, stop_cleanly(run, bar):
        while True:
            state.seconds, stop = agree_on_clock_and_ctrl_c(start, ctrl_c, world_size, device)  # rank 0 decides
            done = state.step >= cfg.max_iters or 0 < cfg.time_budget <= state.seconds
            if stop:
                save_and_exit(run, bar)  # Ctrl-C: the state between two steps is whole, keep it
            if run.master and (run.evaluation_due() or done) and not run.evaluated_now():
                evaluate_and_save(run)  # log both losses; save last.pt, and ckpt.pt when val is the best
            if done:
                break
            lr = learning_rate(cfg, state.step + 1, state.seconds)  # the rate for the step to step + 1
            run.optimizer.set_lr(lr)
            loss = train_step(run.model, run.optimizer, cfg, run.autocast, world_size, run.next_batch)
            state.step += 1
            run.update_average()  # in the run's last average_fraction: add these weights to the average
            run.pace.update(state.step)
            show_progress(bar, run, loss, lr, start)
    bar.close()
    finish(run)  # log.csv, loss.png, the summary and a sample


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
class Run:
    """Everything prepare() sets up. During training only `state` and the weights change."""
    cfg: Config
    state: RunState
    tokenizer: object  # utils.CharTokenizer or bpe.BPETokenizer
    raw_model: GPTModel  # what is saved and sampled
    model: torch.nn.Module  # what trains: raw_model, maybe compiled and wrapped for DDP
    optimizer: Optimizers
    batch_generator: torch.Generator
    splits: dict  # {"train": token ids, "val": token ids}
    autocast: object
    out_dir: Path
    device: str
    rank: int
    world_size: int
    average: WeightAverage = None  # the weights' mean over the run's last part (rank 0 only; None when off)
    eval_seconds: float = 0.0  # how long the last evaluation took
    threads: tuple = ()  # (threads PyTorch would use, threads this run uses, cores other programs kept busy)
    meter: CpuMeter = None
    pace: Pace = None
    tokens_per_char: float = 1.0  # of the validation split: turns a loss per token into one per character

    @property
    def master(self):  # only the first process logs, evaluates, samples and saves
        return self.rank == 0

    @property
    def ckpt_path(self):
        return self.out_dir / "ckpt.pt"

    @property
    def last_path(self):
        return self.out_dir / "last.pt"

    @property
    def eval_model(self):
        """The model evaluations score and ckpt.pt saves: the weight average once it has begun, else the
        weights as they train."""
        return self.average.model_or(self.raw_model) if self.average is not None else self.raw_model

    def update_average(self):
        """Add the current weights to the average once the run is in its last average_fraction."""
        if self.average is not None:
            self.average.update(self.raw_model, progress(self.state.step, self.state.seconds, self.cfg.max_iters,
                                                         self.cfg.time_budget))

    def next_batch(self):
        return get_batch(self.splits["train"], self.cfg.batch_size, self.cfg.block_size, self.device,
                         self.batch_generator)

    def evaluation_due(self):
        """Every eval_interval steps, and under a time budget also every 1/CLOCK_EVALS of it, so that even a
        one-minute run, which may not reach eval_interval steps, draws a curve in loss.png; but never so often
        that evaluating takes more than a tenth of the time."""
        state, cfg = self.state, self.cfg
        on_the_clock = cfg.time_budget > 0 and bool(state.history) and (
            state.seconds - state.history[-1].seconds >= max(cfg.time_budget / CLOCK_EVALS, 10 * self.eval_seconds))
        return state.step % cfg.eval_interval == 0 or on_the_clock

    def evaluated_now(self):
        return bool(self.state.history) and self.state.history[-1].step == self.state.step

    def save(self, path, resumable):
        """ckpt.pt holds the best model (the weight average once it has begun); last.pt (resumable) holds the
        weights as they train, the average so far, the optimizer and the random states."""
        extra = self.state.to_checkpoint()
        if not resumable:
            save_checkpoint(make_checkpoint(self.eval_model, self.tokenizer, self.cfg, **extra), path)
            return
        extra["optimizer_state_dict"] = self.optimizer.state_dict()
        extra["rng_state"] = rng_state(self.batch_generator)
        if self.average is not None:
            extra["average_state_dict"] = self.average.state_dict()
        save_checkpoint(make_checkpoint(self.raw_model, self.tokenizer, self.cfg, **extra), path)


def evaluate_and_save(run):
    """Estimate both losses, log them, and save last.pt, plus ckpt.pt when val is the best yet."""
    cfg, state = run.cfg, run.state
    started = time.perf_counter()
    with run.autocast:
        losses = estimate_loss(run.eval_model, run.splits, cfg.eval_iters, cfg.batch_size, cfg.block_size, run.device)
    if not all(math.isfinite(v) for v in losses.values()):
        raise FloatingPointError(state.step)
    run.eval_seconds = time.perf_counter() - started
    lr = learning_rate(cfg, state.step, state.seconds)
    bpc = losses["val"] * run.tokens_per_char / math.log(2)  # nats per token -> bits per character
    state.history.append(HistoryRow(state.step, state.seconds, lr, losses["train"], losses["val"], val_bpc=bpc))
    note = ""
    if state.step > 0 and losses["val"] < state.best_val_loss:
        state.best_val_loss = losses["val"]
        run.save(run.ckpt_path, resumable=False)
        note = _("  (best so far: saved ckpt.pt)")
    run.save(run.last_path, resumable=True)
    tqdm.write(_("step {step:5d} | {seconds:6.0f}s | train loss {train:.4f} | val loss {val:.4f}").format(
        step=state.step, seconds=state.seconds, train=losses["train"], val=losses["val"]) + note)


# ----------------------------------------------------------------------------------------------
# Before the loop: config, data, model and optimizer


def prepare(args, rank, world_size, device):
    out_dir = Path(args.out_dir)
    last_path = out_dir / "last.pt"
    if args.resume and args.init_from:
        raise UserError(_("--resume continues a run and --init_from starts a new one from a trained model: give "
                          "one of them"))
    resumed = load_checkpoint(last_path, "cpu") if args.resume else None
    source = load_source(args, out_dir) if args.init_from else None
    preset = choose_preset(args.preset, device)
    if resumed:
        check_resume_flags(args, resumed, last_path)
        state = RunState.from_checkpoint(resumed)
    else:
        state = RunState(data=str(args.data or DEFAULT_DATA), seed=DEFAULT_SEED if args.seed is None else args.seed,
                         init_from=str(args.init_from or ""))
    try:
        cfg = resumed_config(args, resumed) if resumed else config_from_args(args, preset)
        if source:
            cfg = replace(cfg, **source_model_args(args, source))
        validate(cfg)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None

    if cfg.tokenizer == "char" and args.vocab_size is not None:
        raise UserError(_("--vocab_size sets the size of a BPE vocabulary; a character tokenizer's is the number of "
                          "distinct characters in the text. Add --tokenizer bpe, or drop --vocab_size"))
    corpus = load_corpus(cfg, state, resumed, source, last_path)
    tokenizer = corpus.tokenizer
    if len(corpus.val) <= cfg.block_size:
        raise UserError(_(
            "{data} has {n:,} characters, too few for block_size {block_size}: the validation tenth needs more "
            "than {block_size}. Use a longer text or a smaller --block_size."
        ).format(data=state.data, n=corpus.n_chars, block_size=cfg.block_size))

    set_seed(state.seed)
    model = GPTModel.from_config(cfg, tokenizer.vocab_size)  # the same initial weights everywhere
    if source:  # ... or the trained ones, with a row for each new character
        weights = grow_vocabulary(source["model_state_dict"], source["vocab_size"], tokenizer.vocab_size)
        mismatch = state_dict_mismatch(model, weights)
        if mismatch:
            raise UserError(_("{path}'s weights do not fit the model its config describes ({mismatch})").format(
                path=args.init_from, mismatch=mismatch))
        model.load_state_dict(weights)
    model = model.to(device)
    torch.manual_seed(state.seed + rank)  # ... but each process its own dropout masks
    optimizer = make_optimizer(model, cfg, device)
    if cfg.optimizer == "muon" and len(optimizer.optimizers) == 1:  # this torch has no Muon: say, and save, the truth
        cfg = replace(cfg, optimizer="adamw")
    batch_generator = torch.Generator().manual_seed(state.seed + rank)  # ... and its own batches
    # The weights' average over the run's last part: only rank 0 evaluates and saves.
    average = WeightAverage(model, cfg.average_fraction) if cfg.average_fraction > 0 and rank == 0 else None
    if resumed:
        restore(resumed, model, optimizer, batch_generator, last_path, average)
        if world_size > 1:  # last.pt holds rank 0's random states: give each process its own stream again
            torch.manual_seed(state.seed + rank + 7919 * state.step)
            batch_generator.manual_seed(state.seed + rank + 7919 * state.step)

    trained = torch.compile(model) if should_compile(cfg.compile, device) else model
    if world_size > 1:
        trained = DDP(trained, device_ids=[int(device.split(":")[1])] if device.startswith("cuda") else None)
    run = Run(cfg=cfg, state=state, tokenizer=tokenizer, raw_model=model, model=trained, optimizer=optimizer,
              batch_generator=batch_generator, splits={"train": corpus.train, "val": corpus.val},
              autocast=autocast_context(device, cfg.precision), out_dir=out_dir, device=device, rank=rank,
              world_size=world_size, average=average, threads=choose_threads(device, world_size),
              tokens_per_char=len(corpus.val) / corpus.val_chars)
    if run.master:
        describe(run, preset, args, resumed, corpus)
        if source:
            describe_source(run, source, corpus.added)
    return run


@dataclass
class Corpus:
    """The text a run learns from, as token ids: the first 90% of its characters to train on, the rest to
    validate on, and the tokenizer that made the ids."""
    tokenizer: object  # utils.CharTokenizer or bpe.BPETokenizer
    train: object  # token ids: a 1-D tensor or numpy array
    val: object
    n_chars: int
    val_chars: int  # characters in the validation split: what bits per character divides by
    added: list = field(default_factory=list)  # fine-tuning: characters appended to the source's vocabulary
    bpe_seconds: float = 0.0  # how long learning the BPE merges took (0: they came from a checkpoint)


def load_corpus(cfg, state, resumed, source, last_path):
    """Tokenize the run's text: characters (cached beside the file), or BPE learned from the training split."""
    if cfg.tokenizer == "bpe":
        return load_bpe_corpus(cfg, state, resumed or source)
    text_data = load_tokens(state.data)  # encoded once, then cached beside the text file
    added = []
    if resumed:  # the vocabulary it was saved with (a fine-tuned run's is its source's, grown)
        tokenizer = tokenizer_from_checkpoint(resumed)
        fits = set(text_data.stoi) <= set(tokenizer.stoi) if state.init_from else text_data.stoi == tokenizer.stoi
        if not fits:
            raise UserError(_("{data} has changed since {path} was saved; resume needs the same text").format(
                data=state.data, path=last_path))
    elif source:
        tokenizer, added = tokenizer_from_checkpoint(source).extended(text_data.stoi)
    else:
        tokenizer = CharTokenizer.from_stoi(text_data.stoi)
    tokens = text_data.ids_in(tokenizer.stoi)
    train_data, val_data = train_val_split(tokens)  # a token per character: the same cut as the text's
    return Corpus(tokenizer, train_data, val_data, len(tokens), len(val_data), added)


# BPE is learned by the readable bpe.train when Hugging Face's tokenizers is not installed: its time grows with
# the text's length times the merges. Tiny Shakespeare with 256 merges (vocab_size 512) takes about 20 s; this
# limit is about a minute.
READABLE_BPE_LIMIT = 1_000_000 * 768


def load_bpe_corpus(cfg, state, saved):
    """BPE ids of the text. The merges are learned from the training split only (the validation text stays
    unseen), or come from the checkpoint being resumed or fine-tuned. Each split is encoded on its own."""
    text = read_text(state.data)
    train_text, val_text = train_val_split(text)
    seconds = 0.0
    if saved:
        tokenizer = tokenizer_from_checkpoint(saved)
    else:
        started = time.perf_counter()
        try:
            tokenizer = BPETokenizer(train_fast(train_text, cfg.vocab_size))
        except ImportError:
            merges = cfg.vocab_size - 256
            if len(train_text) * merges > READABLE_BPE_LIMIT:
                raise UserError(_("learning {merges:,} BPE merges from {n:,} characters needs Hugging Face's tokenizers "
                                  "library: pip install -r requirements-hf.txt").format(merges=merges,
                                                                                        n=len(train_text))) from None
            print(_("note: tokenizers is not installed, so the readable bpe.py learns the merges (the same ones, "
                    "slower); pip install -r requirements-hf.txt makes it take a second"))
            with tqdm(total=merges, desc=_("BPE merges"), unit=_("merge"), dynamic_ncols=True) as bar:
                tokenizer = BPETokenizer(train_bpe(train_text, cfg.vocab_size, progress=bar.update))
        seconds = time.perf_counter() - started
    splits = [torch.from_numpy(tokenizer.encode_array(part).astype("int64")) for part in (train_text, val_text)]
    return Corpus(tokenizer, *splits, len(text), len(val_text), bpe_seconds=seconds)


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
    saved = saved_model_args(source["config"], source["model_state_dict"])
    if args.preset is not None:
        raise UserError(_("--init_from takes the model's size from {path}, so it can't take --preset {preset}; "
                          "drop --preset").format(path=args.init_from, preset=args.preset))
    saved = {**saved, **saved_tokens(source)}
    conflicts = [_("--{name} {given} (it has {saved})").format(name=name, given=getattr(args, name), saved=saved[name])
                 for name in (*MODEL_SIZE, *TOKENS) if getattr(args, name) is not None and getattr(args, name) != saved[name]]
    if conflicts:
        raise UserError(_("--init_from {path} fine-tunes the model as it was trained, so it can't take {conflicts}. "
                          "Drop those flags").format(path=args.init_from, conflicts="; ".join(conflicts)))
    return {name: saved[name] for name in (*MODEL_SIZE, *TOKENS)}


def saved_tokens(ckpt):
    """A checkpoint's tokenizer settings: {"tokenizer": "char" or "bpe", "vocab_size": its size}."""
    kind = tokenizer_from_checkpoint(ckpt).kind
    return {"tokenizer": kind, "vocab_size": ckpt["vocab_size"] if kind == "bpe" else Config.vocab_size}


def describe_source(run, source, added):
    """Two lines: where the weights come from, and how the vocabulary grew."""
    print(_("fine-tuning: weights from {path} (trained {steps} steps on {data}); a fresh optimizer, schedule and "
            "step count").format(path=run.state.init_from, steps=source.get("step", "?"),
                                 data=source.get("data", "?")))
    if added:
        shown = "".join(added[:20]).replace("\n", "\\n") + ("…" if len(added) > 20 else "")
        print(_("vocabulary: its {old:,} characters keep their ids; {n:,} new ones from {data} were added after them "
                "({shown}), each starting at the mean of the old embedding rows").format(
            old=source["vocab_size"], n=len(added), data=run.state.data, shown=shown))
    else:
        print(_("vocabulary: its {old:,} characters cover every character of {data}; none added").format(
            old=source["vocab_size"], data=run.state.data))


def check_resume_flags(args, resumed, last_path):
    """--resume continues a run as it was saved: refuse flags that would silently change what it is."""
    saved_cfg = resumed["config"]
    conflicts = []
    if args.data is not None and Path(args.data).resolve() != Path(resumed["data"]).resolve():
        conflicts.append(_("--data {given} (it trains on {saved})").format(given=args.data, saved=resumed["data"]))
    if args.seed is not None and args.seed != resumed["seed"]:
        conflicts.append(_("--seed {given} (its seed is {saved})").format(given=args.seed, saved=resumed["seed"]))
    if args.preset is not None:
        conflicts.append(_("--preset {given} (its sizes are saved)").format(given=args.preset))
    saved_model = {**saved_model_args(saved_cfg, resumed["model_state_dict"]), **saved_tokens(resumed)}
    for name in (*MODEL_SIZE, *TOKENS):
        given, saved = getattr(args, name), saved_model.get(name)
        if given is not None and given != saved:
            conflicts.append(_("--{name} {given} (it has {saved})").format(name=name, given=given, saved=saved))
    if conflicts:
        raise UserError(_("--resume continues {path} as it was saved, so it can't take {conflicts}. Drop those "
                          "flags, or start a new run with another --out_dir").format(path=last_path,
                                                                                     conflicts="; ".join(conflicts)))


def resumed_config(args, resumed):
    """The saved config, with the hyperparameter flags given now applied on top."""
    known = {k: v for k, v in resumed["config"].items() if k in Config.__dataclass_fields__}
    known.update(saved_model_args(resumed["config"], resumed["model_state_dict"]))  # the model it was, even where Config's default moved on
    known.update(saved_tokens(resumed))
    given = {k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__ and v is not None}
    return apply_overrides(Config(**known), given)


def restore(resumed, model, optimizer, batch_generator, last_path, average=None):
    """Load last.pt's weights, weight average, optimizer state and random states."""
    mismatch = state_dict_mismatch(model, resumed["model_state_dict"])
    if mismatch:
        raise UserError(_("{path} does not fit this model's sizes ({mismatch}); don't change the model when "
                          "resuming").format(path=last_path, mismatch=mismatch))
    model.load_state_dict(resumed["model_state_dict"])
    try:
        optimizer.load_state_dict(resumed["optimizer_state_dict"])
    except (ValueError, KeyError) as e:
        raise UserError(_("{path} holds an optimizer state this run can't use ({reason})").format(
            path=last_path, reason=e)) from None
    set_rng_state(resumed["rng_state"], batch_generator)
    if average is not None and "average_state_dict" in resumed:  # else the average starts afresh
        average.load_state_dict(resumed["average_state_dict"])


def describe(run, preset, args, resumed, corpus):
    """The start-up summary: device, config, data, model, how the run ends."""
    cfg, state = run.cfg, run.state
    where = str(run.last_path) if resumed else (_("preset {name}").format(name=preset) if preset else "config.py")
    device = run.device + (_(" x {n} processes").format(n=run.world_size) if run.world_size > 1 else "")
    print(_("device: {device}   config: {where}   seed: {seed}").format(device=device, where=where, seed=state.seed))
    if preset and not args.preset and not resumed:
        print(_("note: on CUDA, train.py uses the {name} preset ({sizes}) instead of config.py's sizes; "
                "--preset none uses config.py's values").format(name=preset, sizes=preset_sizes(preset)))
    print(_("data: {data}: {n:,} characters, vocabulary of {vocab}").format(data=state.data, n=corpus.n_chars,
                                                                          vocab=run.tokenizer.vocab_size))
    if run.tokenizer.kind == "bpe":
        learned = (_("learned from the training split in {seconds:.1f} s").format(seconds=corpus.bpe_seconds)
                   if corpus.bpe_seconds else _("from the checkpoint"))
        print(_("tokens: BPE, 256 bytes + {merges:,} merges ({learned}); {tokens:,} tokens, {ratio:.2f} characters "
                "per token").format(merges=run.tokenizer.vocab_size - 256, learned=learned,
                                    tokens=len(corpus.train) + len(corpus.val), ratio=1 / run.tokens_per_char))
    print(_("model: {params:.2f}M parameters (n_embd {n_embd}, num_heads {num_heads}, n_layer {n_layer}, "
            "block_size {block_size})").format(params=run.raw_model.num_params() / 1e6, n_embd=cfg.n_embd,
                                               num_heads=cfg.num_heads, n_layer=cfg.n_layer,
                                               block_size=cfg.block_size))
    features = ([_("queries and keys normalised (qk_norm)")] if cfg.qk_norm else []) + (
        [_("rotary positions (RoPE) instead of a position embedding table")] if cfg.position == "rope" else [])
    if features:
        print(_("attention: {features}").format(features=_("; ").join(features)))
    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum * run.world_size
    if cfg.time_budget:
        ends = _("{steps} steps or {seconds:g} s, whichever comes first").format(steps=cfg.max_iters,
                                                                                 seconds=cfg.time_budget)
    else:
        ends = _("{steps} steps").format(steps=cfg.max_iters)
    print(_("training: {ends}, {tokens:,} tokens per step, {optimizer}, peak lr {lr}, {schedule} schedule, "
            "{precision}").format(ends=ends, tokens=tokens_per_step, optimizer=cfg.optimizer, lr=cfg.learning_rate,
                                  schedule=cfg.schedule, precision=resolve_precision(run.device, cfg.precision)))
    before, threads, busy = run.threads
    if threads != before:
        print(_("threads: other programs keep {busy:.1f} of this computer's {cores} cores busy, so this run uses "
                "{threads} thread(s) instead of {before}: on a busy CPU, threads wait for each other").format(
            busy=busy, cores=os.cpu_count(), threads=threads, before=before))
    if cfg.average_fraction > 0:
        print(_("weights: averaged over the last {share} of the run; evaluations score that average and "
                "ckpt.pt holds it").format(share=f"{100 * cfg.average_fraction:g}%"))
    if resumed:
        print(_("resuming {path} at step {step} (best val loss so far {best:.4f})").format(
            path=run.last_path, step=state.step, best=state.best_val_loss))
    elif run.ckpt_path.exists():
        print(_("note: {path} exists and will be replaced once this run has a better model; use --out_dir to "
                "keep it").format(path=run.ckpt_path))


def rng_state(batch_generator):
    """The random states a run draws from (batches, dropout), so --resume continues the exact same run."""
    state = {"torch": torch.get_rng_state(), "batches": batch_generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state, batch_generator):
    torch.set_rng_state(state["torch"])
    batch_generator.set_state(state["batches"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------
# During the loop: the clock, Ctrl-C, the progress bar


def save_and_exit(run, bar):
    """After a first Ctrl-C, between two steps: save everything to last.pt and say how to continue."""
    bar.close()
    if run.master:
        run.save(run.last_path, resumable=True)
        print("\n" + _("interrupted at step {step}: saved {path}. Continue with: python3 train.py --out_dir "
                       "{out_dir} --resume").format(step=run.state.step, path=run.last_path, out_dir=run.out_dir))
    raise SystemExit(130)


class stop_cleanly:
    """Around the loop: a second Ctrl-C (mid-step) and a NaN loss end the run with a clear message,
    leaving the last whole checkpoints in place."""

    def __init__(self, run, bar):
        self.run, self.bar = run, bar

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        run = self.run
        if kind is KeyboardInterrupt:
            self.bar.close()
            if run.master:
                print("\n" + _("stopped at once; {path} holds the state of the last evaluation. Continue with: "
                               "python3 train.py --out_dir {out_dir} --resume").format(path=run.last_path,
                                                                                       out_dir=run.out_dir))
            raise SystemExit(130)
        if kind is FloatingPointError:
            self.bar.close()
            if not math.isfinite(run.state.best_val_loss):  # this run has saved no trained model yet
                raise UserError(_(
                    "the loss became NaN or infinite near step {step}, before this run saved a trained model. Try a "
                    "lower --learning_rate (now {lr})").format(step=run.state.step, lr=run.cfg.learning_rate)) from None
            raise UserError(_(
                "the loss became NaN or infinite near step {step}; stopped without saving, so {last} and {ckpt} "
                "keep the last good model. Try a lower --learning_rate (now {lr})"
            ).format(step=run.state.step, last=run.last_path, ckpt=run.ckpt_path, lr=run.cfg.learning_rate)) from None
        return False


def progress_bar(run):
    """A tqdm bar that counts steps, or whole seconds under a time budget (rank 0 only)."""
    cfg, state = run.cfg, run.state
    if cfg.time_budget:
        return tqdm(total=math.ceil(cfg.time_budget), initial=int(state.seconds), desc=_("training"), unit="s",
                    dynamic_ncols=True, disable=not run.master,
                    bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt}s [{elapsed}<{remaining}{postfix}]")
    return tqdm(total=cfg.max_iters, initial=state.step, desc=_("training"), unit=_("step"), dynamic_ncols=True,
                disable=not run.master)


def show_progress(bar, run, loss, lr, start):
    if run.state.step % 10 == 0:  # reading the loss waits for the GPU, so not every step
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(run.state.step)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.1e}")
    if run.cfg.time_budget:
        bar.update(min(int(time.perf_counter() - start), bar.total) - bar.n)
    else:
        bar.update(1)


# ----------------------------------------------------------------------------------------------
# After the loop: check, log, plot, sample


def finish(run):
    if run.world_size > 1:
        check_in_sync(run.raw_model, run.world_size, run.master)
    if not run.master:
        return
    state, out_dir = run.state, run.out_dir
    plot_losses([r.step for r in state.history], [r.train_loss for r in state.history],
                [r.val_loss for r in state.history], out_dir / "loss.png",
                title=_("Mini-GPT on {name}").format(name=Path(state.data).name))
    saved = _(", ").join(map(str, [run.last_path, out_dir / "loss.png", out_dir / "log.csv"]))
    if not math.isfinite(state.best_val_loss):  # ckpt.pt exists only once an evaluation after step 0 ran
        write_log(state.history, out_dir / "log.csv")
        print("\n" + _("done: {steps} steps, so no trained model and no {ckpt}. Saved {saved}").format(
            steps=state.step, ckpt=run.ckpt_path, saved=saved))
        return
    full_val, full_bpc = evaluate_best_model(run)
    write_log(state.history, out_dir / "log.csv")
    print("\n" + _("done: {steps} steps in {seconds:.0f}s, best val loss {best:.4f} ({batches} sampled batches), "
                   "{full:.4f} on the whole validation split. Saved {ckpt}, {saved}").format(
        steps=state.step, seconds=state.seconds, best=state.best_val_loss, batches=run.cfg.eval_iters, full=full_val,
        ckpt=run.ckpt_path, saved=saved))
    print(_("bits per character: {bpc:.4f} on the whole validation split (the loss in bits, per character of "
            "text: comparable across tokenizers)").format(bpc=full_bpc))

    if run.cfg.sample_tokens > 0:
        start_id = run.tokenizer.encode("\n")[-1] if not run.tokenizer.unknown("\n") else 0
        context = torch.full((1, 1), start_id, dtype=torch.long, device=run.device)
        sample = run.raw_model.generate(context, run.cfg.sample_tokens, temperature=0.8)
        print("\n" + _("sample (temperature 0.8):") + "\n" + "-" * 60)
        print(run.tokenizer.decode(sample[0].tolist()).strip("\n"))
        print("-" * 60)
        print(_("next: python3 generate.py --checkpoint {ckpt}").format(ckpt=run.ckpt_path))
    note_a_slow_run(run)


def note_a_slow_run(run):
    """Under a time budget, one line if other programs took the CPU or the pace fell far behind its best."""
    if not run.cfg.time_budget or run.pace is None:
        return
    steps, seconds = run.state.step - run.pace.first_step, run.state.seconds - run.pace.first_seconds
    note = slow_run_note(steps, seconds, run.pace.best, run.meter.others(), torch.get_num_threads())
    if note:
        print(note)


def evaluate_best_model(run):
    """Load ckpt.pt's weights (the best model, which the sample below also uses) and score them on the
    whole validation split. The number goes into ckpt.pt and onto its row of log.csv."""
    state = run.state
    best = load_checkpoint(run.ckpt_path, "cpu")
    run.raw_model.load_state_dict(best["model_state_dict"])
    # As many windows per forward pass as keep the logits near 16 MB: quick, and small enough for a laptop.
    batch = max(1, min(512, 2**22 // (run.cfg.block_size * run.tokenizer.vocab_size)))
    # No autocast: in fp32 whatever the run trained in, so runs are compared by the model's exact loss.
    full_val, full_bpc = full_split_scores(run.raw_model, run.splits["val"], run.cfg.block_size, batch, run.device,
                                           run.tokenizer.chars_per_token)
    best["full_val_loss"], best["full_val_bpc"] = full_val, full_bpc
    i = next(i for i, row in enumerate(state.history) if row.step == best["step"])
    state.history[i] = state.history[i]._replace(full_val_loss=full_val, full_val_bpc=full_bpc)
    save_checkpoint(best, run.ckpt_path)
    return full_val, full_bpc


def write_log(history, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HistoryRow._fields)
        for row in history:
            writer.writerow([row.step, f"{row.seconds:.1f}", f"{row.lr:.3g}", f"{row.train_loss:.4f}",
                             f"{row.val_loss:.4f}", *("" if math.isnan(v) else f"{v:.4f}" for v in row[5:])])


if __name__ == "__main__":
    run_main(main)
