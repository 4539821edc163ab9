"""Train a character-level GPT on a text file.

    python3 train.py                                  # tiny Shakespeare, 10 minutes on a laptop CPU
    python3 train.py --time_budget 120                # the best model 2 minutes can make
    python3 train.py --time_budget 0 --max_iters 3000 # exactly 3000 steps: repeatable, whatever the machine
    python3 train.py --data data/chinese.txt --out_dir out-chinese
    python3 train.py --preset tiny --max_iters 500    # any config.py field can be a flag
    python3 train.py --resume                         # continue from <out_dir>/last.pt
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from config import (
    CUDA_PRESET, PRESETS, QUICK_BUDGET_SECONDS, Config, HelpFormatter, add_config_args, apply_overrides,
    choose_preset, config_from_args, validate,
)
from model import GPTModel
from token_cache import load_tokens
from train_runtime import OutDirLock, StopRequest, agree_on_clock_and_ctrl_c, check_in_sync, setup_distributed
from utils import (
    REPO_DIR, CharTokenizer, UserError, autocast_context, estimate_loss, get_batch, load_checkpoint,
    lr_at, make_checkpoint, plot_losses, progress, run_main, save_checkpoint, set_seed, state_dict_mismatch,
    train_val_split,
)

DEFAULT_DATA = REPO_DIR / "data" / "input.txt"
DEFAULT_SEED = 1337
MODEL_SIZE = ("n_embd", "num_heads", "n_layer", "block_size")  # what a resumed run cannot change


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train a character-level GPT on a UTF-8 text file.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--data", default=None, help=f"UTF-8 text file to learn from (default: {DEFAULT_DATA})")
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default=None,
        help=f"named model size from config.py (default: {CUDA_PRESET} on CUDA; elsewhere quick for a "
             f"--time_budget up to {QUICK_BUDGET_SECONDS:g} s, else config.py's values)",
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
    add_config_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rank, world_size, device = setup_distributed(args.device)
    try:
        out_dir = Path(args.out_dir)
        with OutDirLock(out_dir) if rank == 0 else nullcontext():  # one run at a time writes to out_dir
            train(args, rank, world_size, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# The training loop


def train(args, rank, world_size, device):
    run = prepare(args, rank, world_size, device)  # config, data, model, optimizer; resumed if asked
    cfg, state = run.cfg, run.state
    start = time.perf_counter() - state.seconds  # the clock continues where a resumed run stopped
    bar = progress_bar(run)
    with StopRequest() as ctrl_c, stop_cleanly(run, bar):
        while True:
            state.seconds, stop = agree_on_clock_and_ctrl_c(start, ctrl_c, world_size, device)  # rank 0 decides
            done = state.step >= cfg.max_iters or 0 < cfg.time_budget <= state.seconds
            if stop:
                save_and_exit(run, bar)  # Ctrl-C: the state between two steps is whole, keep it
            if run.master and (state.step % cfg.eval_interval == 0 or done) and not run.evaluated_now():
                evaluate_and_save(run)  # log both losses; save last.pt, and ckpt.pt when val is the best
            if done:
                break
            lr = learning_rate(cfg, state.step + 1, state.seconds)  # the rate for the step to step + 1
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            loss = train_step(run.model, run.optimizer, cfg, run.autocast, world_size, run.next_batch)
            state.step += 1
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


@dataclass
class RunState:
    """Where a run stands. It is saved in every checkpoint, so --resume continues from here."""
    data: str
    seed: int
    step: int = 0  # optimizer steps taken
    seconds: float = 0.0  # training time so far, by rank 0's clock
    best_val_loss: float = math.inf
    history: list = field(default_factory=list)  # a HistoryRow per evaluation

    def to_checkpoint(self):
        # Plain tuples: weights_only loading accepts them, not classes defined here.
        return {"data": self.data, "seed": self.seed, "step": self.step, "seconds": self.seconds,
                "best_val_loss": self.best_val_loss, "history": [tuple(row) for row in self.history]}

    @classmethod
    def from_checkpoint(cls, ckpt):
        return cls(data=ckpt["data"], seed=ckpt["seed"], step=ckpt["step"], seconds=ckpt["seconds"],
                   best_val_loss=ckpt["best_val_loss"], history=[HistoryRow(*row) for row in ckpt["history"]])


@dataclass
class Run:
    """Everything prepare() sets up. During training only `state` and the weights change."""
    cfg: Config
    state: RunState
    tokenizer: CharTokenizer
    raw_model: GPTModel  # what is saved and sampled
    model: torch.nn.Module  # what trains: raw_model, maybe compiled and wrapped for DDP
    optimizer: torch.optim.Optimizer
    batch_generator: torch.Generator
    splits: dict  # {"train": token ids, "val": token ids}
    autocast: object
    out_dir: Path
    device: str
    rank: int
    world_size: int

    @property
    def master(self):  # only the first process logs, evaluates, samples and saves
        return self.rank == 0

    @property
    def ckpt_path(self):
        return self.out_dir / "ckpt.pt"

    @property
    def last_path(self):
        return self.out_dir / "last.pt"

    def next_batch(self):
        return get_batch(self.splits["train"], self.cfg.batch_size, self.cfg.block_size, self.device,
                         self.batch_generator)

    def evaluated_now(self):
        return bool(self.state.history) and self.state.history[-1].step == self.state.step

    def save(self, path, resumable):
        """ckpt.pt holds the model; last.pt (resumable) also the optimizer and random states."""
        extra = self.state.to_checkpoint()
        if resumable:
            extra["optimizer_state_dict"] = self.optimizer.state_dict()
            extra["rng_state"] = rng_state(self.batch_generator)
        save_checkpoint(make_checkpoint(self.raw_model, self.tokenizer, self.cfg, **extra), path)


def learning_rate(cfg, step, seconds):
    """The schedule (utils.lr_at) at the point of the run that `step` steps and `seconds` reach."""
    done = progress(step, seconds, cfg.max_iters, cfg.time_budget)
    return lr_at(done, cfg.learning_rate, cfg.warmup_fraction, cfg.min_lr_ratio)


def train_step(model, optimizer, cfg, autocast, world_size, next_batch):
    """One optimizer step: forward + backward over cfg.grad_accum micro-batches, clip, AdamW.

    next_batch() returns (x, y). Returns the last micro-batch's loss (a tensor, to avoid a GPU sync).
    """
    for micro in range(cfg.grad_accum):
        x, y = next_batch()
        # DDP averages gradients across processes on backward; only do it on the last micro-batch.
        sync = nullcontext() if world_size == 1 or micro == cfg.grad_accum - 1 else model.no_sync()
        with sync:
            with autocast:
                _, loss = model(x, y)
            (loss / cfg.grad_accum).backward()  # summing the micro-batches' mean losses / n = one big batch
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)  # no step larger than grad_clip
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def evaluate_and_save(run):
    """Estimate both losses, log them, and save last.pt, plus ckpt.pt when val is the best yet."""
    cfg, state = run.cfg, run.state
    with run.autocast:
        losses = estimate_loss(run.raw_model, run.splits, cfg.eval_iters, cfg.batch_size, cfg.block_size, run.device)
    if not all(math.isfinite(v) for v in losses.values()):
        raise FloatingPointError(state.step)
    lr = learning_rate(cfg, state.step, state.seconds)
    state.history.append(HistoryRow(state.step, state.seconds, lr, losses["train"], losses["val"]))
    note = ""
    if state.step > 0 and losses["val"] < state.best_val_loss:
        state.best_val_loss = losses["val"]
        run.save(run.ckpt_path, resumable=False)
        note = "  (best so far: saved ckpt.pt)"
    run.save(run.last_path, resumable=True)
    tqdm.write(f"step {state.step:5d} | {state.seconds:6.0f}s | train loss {losses['train']:.4f} | "
               f"val loss {losses['val']:.4f}{note}")


# ----------------------------------------------------------------------------------------------
# Before the loop: config, data, model and optimizer


def prepare(args, rank, world_size, device):
    out_dir = Path(args.out_dir)
    last_path = out_dir / "last.pt"
    resumed = load_checkpoint(last_path, "cpu") if args.resume else None
    budget = args.time_budget if args.time_budget is not None else Config().time_budget
    preset = choose_preset(args.preset, device, budget)
    if resumed:
        check_resume_flags(args, resumed, last_path)
        state = RunState.from_checkpoint(resumed)
    else:
        state = RunState(data=str(args.data or DEFAULT_DATA), seed=DEFAULT_SEED if args.seed is None else args.seed)
    try:
        cfg = resumed_config(args, resumed) if resumed else config_from_args(args, preset)
        validate(cfg)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None

    text_data = load_tokens(state.data)  # encoded once, then cached beside the text file
    tokenizer = CharTokenizer.from_stoi(text_data.stoi)
    if resumed and resumed["tokenizer_stoi"] != tokenizer.stoi:
        raise UserError(f"{state.data} has changed since {last_path} was saved; resume needs the same text")
    train_data, val_data = train_val_split(text_data.tokens)
    if len(val_data) <= cfg.block_size:
        raise UserError(
            f"{state.data} has {len(text_data.tokens):,} characters, too few for block_size {cfg.block_size}: the "
            f"validation tenth needs more than {cfg.block_size}. Use a longer text or a smaller --block_size."
        )

    set_seed(state.seed)
    model = GPTModel.from_config(cfg, tokenizer.vocab_size).to(device)  # the same initial weights everywhere
    torch.manual_seed(state.seed + rank)  # ... but each process its own dropout masks
    optimizer = make_optimizer(model, cfg, device)
    batch_generator = torch.Generator().manual_seed(state.seed + rank)  # ... and its own batches
    if resumed:
        restore(resumed, model, optimizer, batch_generator, last_path)
        if world_size > 1:  # last.pt holds rank 0's random states: give each process its own stream again
            torch.manual_seed(state.seed + rank + 7919 * state.step)
            batch_generator.manual_seed(state.seed + rank + 7919 * state.step)

    trained = torch.compile(model) if should_compile(cfg, device) else model
    if world_size > 1:
        trained = DDP(trained, device_ids=[int(device.split(":")[1])] if device.startswith("cuda") else None)
    run = Run(cfg=cfg, state=state, tokenizer=tokenizer, raw_model=model, model=trained, optimizer=optimizer,
              batch_generator=batch_generator, splits={"train": train_data, "val": val_data},
              autocast=autocast_context(device), out_dir=out_dir, device=device, rank=rank, world_size=world_size)
    if run.master:
        describe(run, preset, args, resumed, len(text_data.tokens))
    return run


def check_resume_flags(args, resumed, last_path):
    """--resume continues a run as it was saved: refuse flags that would silently change what it is."""
    saved_cfg = resumed["config"]
    conflicts = []
    if args.data is not None and Path(args.data).resolve() != Path(resumed["data"]).resolve():
        conflicts.append(f"--data {args.data} (it trains on {resumed['data']})")
    if args.seed is not None and args.seed != resumed["seed"]:
        conflicts.append(f"--seed {args.seed} (its seed is {resumed['seed']})")
    if args.preset is not None:
        conflicts.append(f"--preset {args.preset} (its sizes are saved)")
    for name in MODEL_SIZE:
        given = getattr(args, name)
        if given is not None and given != saved_cfg.get(name):
            conflicts.append(f"--{name} {given} (it has {saved_cfg.get(name)})")
    if conflicts:
        raise UserError(f"--resume continues {last_path} as it was saved, so it can't take {'; '.join(conflicts)}. "
                        "Drop those flags, or start a new run with another --out_dir")


def resumed_config(args, resumed):
    """The saved config, with the hyperparameter flags given now applied on top."""
    known = {k: v for k, v in resumed["config"].items() if k in Config.__dataclass_fields__}
    given = {k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__ and v is not None}
    return apply_overrides(Config(**known), given)


def restore(resumed, model, optimizer, batch_generator, last_path):
    """Load last.pt's weights, optimizer state and random states."""
    mismatch = state_dict_mismatch(model, resumed["model_state_dict"])
    if mismatch:
        raise UserError(f"{last_path} does not fit this model's sizes ({mismatch}); don't change the model when "
                        "resuming")
    model.load_state_dict(resumed["model_state_dict"])
    try:
        optimizer.load_state_dict(resumed["optimizer_state_dict"])
    except (ValueError, KeyError) as e:
        raise UserError(f"{last_path} holds an optimizer state this run can't use ({e})") from None
    set_rng_state(resumed["rng_state"], batch_generator)


def describe(run, preset, args, resumed, n_chars):
    """The start-up summary: device, config, data, model, how the run ends."""
    cfg, state = run.cfg, run.state
    where = str(run.last_path) if resumed else (f"preset {preset}" if preset else "config.py")
    if preset and not args.preset and not resumed:
        where += " (chosen for this device and budget; --preset or model flags override it)"
    print(f"device: {run.device}{f' x {run.world_size} processes' if run.world_size > 1 else ''}   "
          f"config: {where}   seed: {state.seed}")
    print(f"data: {state.data}: {n_chars:,} characters, vocabulary of {run.tokenizer.vocab_size}")
    print(f"model: {run.raw_model.num_params() / 1e6:.2f}M parameters (n_embd {cfg.n_embd}, num_heads "
          f"{cfg.num_heads}, n_layer {cfg.n_layer}, block_size {cfg.block_size})")
    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum * run.world_size
    ends = f"{cfg.max_iters} steps" + (f" or {cfg.time_budget:g} s, whichever comes first" if cfg.time_budget else "")
    print(f"training: {ends}, {tokens_per_step:,} tokens per step, peak lr {cfg.learning_rate}")
    if resumed:
        print(f"resuming {run.last_path} at step {state.step} (best val loss so far {state.best_val_loss:.4f})")
    elif run.ckpt_path.exists():
        print(f"note: {run.ckpt_path} exists and will be replaced once this run has a better model; "
              "use --out_dir to keep it")


def make_optimizer(model, cfg, device):
    """AdamW that decays only the weight matrices and embeddings, not biases or LayerNorm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    try:
        # The fused kernel updates every parameter in one pass: faster on CUDA and CPU.
        return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.99), fused=True)
    except RuntimeError:  # this torch has no fused AdamW for this device (CPU needs torch >= 2.4)
        return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.99))


def should_compile(cfg, device):
    if cfg.compile == "auto":
        # On CPU and MPS, measured here, compiling costs more start-up time than it saves.
        return device.startswith("cuda") and os.name != "nt" and hasattr(torch, "compile")
    if cfg.compile == "true" and (os.name == "nt" or device == "mps"):
        print("note: torch.compile is not supported on Windows or MPS; running without it")
        return False
    return cfg.compile == "true"


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
        print(f"\ninterrupted at step {run.state.step}: saved {run.last_path}. Continue with: "
              f"python3 train.py --out_dir {run.out_dir} --resume")
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
                print(f"\nstopped at once; {run.last_path} holds the state of the last evaluation. Continue with: "
                      f"python3 train.py --out_dir {run.out_dir} --resume")
            raise SystemExit(130)
        if kind is FloatingPointError:
            self.bar.close()
            raise UserError(
                f"the loss became NaN or infinite near step {run.state.step}; stopped without saving, so "
                f"{run.last_path} and {run.ckpt_path} keep the last good model. Try a lower --learning_rate "
                f"(now {run.cfg.learning_rate})"
            ) from None
        return False


def progress_bar(run):
    """A tqdm bar that counts steps, or whole seconds under a time budget (rank 0 only)."""
    cfg, state = run.cfg, run.state
    if cfg.time_budget:
        return tqdm(total=math.ceil(cfg.time_budget), initial=int(state.seconds), desc="training", unit="s",
                    dynamic_ncols=True, disable=not run.master,
                    bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt}s [{elapsed}<{remaining}{postfix}]")
    return tqdm(total=cfg.max_iters, initial=state.step, desc="training", unit="step", dynamic_ncols=True,
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
    write_log(state.history, out_dir / "log.csv")
    plot_losses([r.step for r in state.history], [r.train_loss for r in state.history],
                [r.val_loss for r in state.history], out_dir / "loss.png",
                title=f"Mini-GPT on {Path(state.data).name}")
    saved = [run.last_path, out_dir / "loss.png", out_dir / "log.csv"]
    if math.isfinite(state.best_val_loss):  # ckpt.pt exists only once an evaluation after step 0 ran
        print(f"\ndone: {state.step} steps in {state.seconds:.0f}s, best val loss {state.best_val_loss:.4f}. "
              f"Saved {run.ckpt_path}, {', '.join(map(str, saved[:-1]))} and {saved[-1]}")
    else:
        print(f"\ndone: {state.step} steps, so no trained model and no {run.ckpt_path}. "
              f"Saved {', '.join(map(str, saved[:-1]))} and {saved[-1]}")
        return

    if run.cfg.sample_tokens > 0:
        start_id = run.tokenizer.stoi.get("\n", 0)
        context = torch.full((1, 1), start_id, dtype=torch.long, device=run.device)
        sample = run.raw_model.generate(context, run.cfg.sample_tokens, temperature=0.8)
        print("\nsample (temperature 0.8):\n" + "-" * 60)
        print(run.tokenizer.decode(sample[0].tolist()).strip("\n"))
        print("-" * 60)
        print(f"next: python3 generate.py --checkpoint {run.ckpt_path}")


def write_log(history, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HistoryRow._fields)
        for row in history:
            writer.writerow([row.step, f"{row.seconds:.1f}", f"{row.lr:.3g}", f"{row.train_loss:.4f}",
                             f"{row.val_loss:.4f}"])


if __name__ == "__main__":
    run_main(main)
