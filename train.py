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

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from cli import HelpFormatter, UserError, run_main
from config import CUDA_PRESET, PRESETS, Config, add_config_args, preset_sizes
from device import autocast_context, resolve_precision, should_compile
from files import shown_path
from i18n import _
from model import GPTModel
from optim import Optimizers, WeightAverage, learning_rate, make_optimizer, progress, train_step
from plots import plot_losses
from qa_format import looks_like_qa
from start import DEFAULT_DATA, DEFAULT_SEED, HistoryRow, RunState, rng_state, start_run
from train_runtime import (
    CpuMeter, OutDirLock, Pace, StopRequest, agree_on_clock_and_ctrl_c, check_in_sync, choose_threads,
    progress_bar, setup_distributed, show_progress, slow_run_note,
)
from utils import estimate_loss, full_split_scores, get_batch

# A time-budgeted run evaluates at least this many times (besides every eval_interval steps).
CLOCK_EVALS = 12


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
            run = train(args, rank, world_size, device)
        if dist.is_initialized():
            # Leave together: rank 0 still scores and saves the best model after the loop, and a rank that tears
            # gloo down meanwhile was once seen to abort at exit ("terminate called without an active exception").
            dist.barrier()
    finally:
        torch.set_num_threads(threads)
        if dist.is_initialized():
            dist.destroy_process_group()
    return run  # for day5_experiments.py, which calls training as a function


# ----------------------------------------------------------------------------------------------
# The training loop


def train(args, rank, world_size, device):
    run = prepare(args, rank, world_size, device)  # config, data, model, optimizer; resumed if asked
    cfg, state = run.cfg, run.state
    start = time.perf_counter() - state.seconds  # the clock continues where a resumed run stopped
    run.meter, run.pace = CpuMeter(), Pace(state.step, state.seconds)  # did other programs slow it down?
    bar = progress_bar(cfg, state, run.master)  # steps, or seconds under a time budget
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
            # Day 4's four lines: forward, zero_grad, backward, step (with the gradient clipped: optim.py)
            loss = train_step(run.model, run.optimizer, cfg, run.autocast, world_size, run.next_batch)
            state.step += 1
            run.update_average()  # in the run's last average_fraction: add these weights to the average
            run.pace.update(state.step)
            show_progress(bar, state.step, loss, lr, cfg.time_budget, start)
    bar.close()
    finish(run)  # log.csv, loss.png, the summary and a sample
    return run


@dataclass
class Run:
    """Everything prepare() sets up. During training `state` (the step, the clock, the history), the weights, the
    optimizer's state and the average change, and so do the three timers the loop keeps: `meter` and `pace`
    (set as the loop starts) and `eval_seconds` (after each evaluation). The rest stays as prepare() made it."""
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
    targets: dict = field(default_factory=dict)  # --loss_on answers: {"train", "val"}: -1 where nothing is scored

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
                         self.batch_generator, self.targets.get("train"))

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
        losses = estimate_loss(run.eval_model, run.splits, cfg.eval_iters, cfg.batch_size, cfg.block_size, run.device,
                               targets=run.targets)
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
    """The run's config, text, model and optimizer, however it starts (start.py), and a summary of them."""
    start = start_run(args, device)  # from scratch, --resume or --init_from: the same things either way
    cfg, state = start.cfg, start.state
    model = start.model.to(device)
    torch.manual_seed(state.seed + rank)  # the same initial weights everywhere, but each process its own dropout
    optimizer = make_optimizer(model, cfg, device)
    if cfg.optimizer == "muon" and len(optimizer.optimizers) == 1:  # this torch has no Muon: say, and save, the truth
        cfg = replace(cfg, optimizer="adamw")
    batch_generator = torch.Generator().manual_seed(state.seed + rank)  # ... and its own batches
    # The weights' average over the run's last part: only rank 0 evaluates and saves.
    average = WeightAverage(model, cfg.average_fraction) if cfg.average_fraction > 0 and rank == 0 else None
    start.restore(optimizer, batch_generator, average, rank, world_size)  # --resume: last.pt's optimizer and more

    trained = torch.compile(model) if should_compile(cfg.compile, device) else model
    if world_size > 1:
        trained = DDP(trained, device_ids=[int(device.split(":")[1])] if device.startswith("cuda") else None)
    threads = choose_threads(device, world_size)  # on a busy CPU, fewer threads (it watches the CPU for 0.2 s)
    corpus = start.corpus
    run = Run(cfg=cfg, state=state, tokenizer=corpus.tokenizer, raw_model=model, model=trained, optimizer=optimizer,
              batch_generator=batch_generator, splits={"train": corpus.train, "val": corpus.val},
              targets=corpus.targets,
              autocast=autocast_context(device, cfg.precision), out_dir=Path(args.out_dir), device=device, rank=rank,
              world_size=world_size, average=average, threads=threads,
              tokens_per_char=len(corpus.val) / corpus.val_chars)
    if run.master:
        describe(run, start, args)
    return run


def describe(run, start, args):
    """The start-up summary: device, config, data, model, how the run ends."""
    cfg, state = run.cfg, run.state
    device = run.device + (_(" x {n} processes").format(n=run.world_size) if run.world_size > 1 else "")
    print(_("device: {device}   config: {where}   seed: {seed}").format(device=device, where=start.origin,
                                                                       seed=state.seed))
    if start.preset and not args.preset:
        print(_("note: on CUDA, train.py uses the {name} preset ({sizes}) instead of config.py's sizes; "
                "--preset none uses config.py's values").format(name=start.preset, sizes=preset_sizes(start.preset)))
    corpus = start.corpus
    print(_("data: {data}: {n:,} characters, vocabulary of {vocab}").format(
        data=shown_path(state.data), n=corpus.n_chars, vocab=run.tokenizer.vocab_size))
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
    for note in start.notes:  # how it started: resumed, fine-tuned, or replacing an earlier ckpt.pt
        print(note)


# ----------------------------------------------------------------------------------------------
# During the loop: Ctrl-C and a NaN loss


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
        if looks_like_qa(run.tokenizer, state.data):  # a Q&A model is asked questions, not continued
            print(_("next: python3 eval_qa.py --checkpoint {ckpt} (the held-out questions), then python3 chat.py "
                    "--checkpoint {ckpt}").format(ckpt=run.ckpt_path))
        else:
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
                                           run.tokenizer.chars_per_token, run.targets.get("val"))
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
