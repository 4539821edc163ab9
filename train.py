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
"""

import argparse
import csv
import math
import os
import random
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from config import (
    CUDA_PRESET, PRESETS, QUICK_BUDGET_SECONDS, Config, add_config_args, apply_overrides, choose_preset,
    config_from_args, validate,
)
from model import GPTModel
from utils import (
    REPO_DIR, CharTokenizer, UserError, autocast_context, estimate_loss, get_batch, get_device,
    load_checkpoint, load_tokens, lr_at, plot_losses, run_main, save_checkpoint, set_seed, train_val_split,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train a character-level GPT on a UTF-8 text file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", default=str(REPO_DIR / "data" / "input.txt"), help="UTF-8 text file to learn from")
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default=None,
        help=f"named model size from config.py (default: {CUDA_PRESET} on CUDA; elsewhere quick for a "
             f"--time_budget up to {QUICK_BUDGET_SECONDS:g} s, else config.py's values)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--out_dir", default="out", help="folder for ckpt.pt, last.pt, loss.png and log.csv")
    parser.add_argument("--seed", type=int, default=1337,
                        help="random seed: with --time_budget 0, the same seed gives the same run")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in <out_dir>/last.pt (flags given now override its config)")
    add_config_args(parser)
    return parser.parse_args(argv)


def make_optimizer(model, cfg, device):
    """AdamW that decays only the weight matrices and embeddings, not biases or LayerNorm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # The fused kernel updates every parameter in one pass: faster on CUDA and CPU.
    fused = device.startswith("cuda") or device == "cpu"
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.99), fused=fused)


def should_compile(cfg, device):
    if cfg.compile == "auto":
        # On CPU and MPS, measured here, compiling costs more start-up time than it saves.
        return device.startswith("cuda") and os.name != "nt" and hasattr(torch, "compile")
    if cfg.compile == "true" and (os.name == "nt" or device == "mps"):
        print("note: torch.compile is not supported on Windows or MPS; running without it")
        return False
    return cfg.compile == "true"


def rng_state(batch_generator):
    """Every random state a run depends on, so --resume continues the exact same run."""
    kind, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        # weights_only loading accepts tensors and plain Python values, not numpy arrays
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached_gauss),
        "torch": torch.get_rng_state(),
        "batches": batch_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state, batch_generator):
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gauss))
    torch.set_rng_state(state["torch"])
    batch_generator.set_state(state["batches"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dict(model, tokenizer, cfg, run, optimizer=None, batch_generator=None):
    """What ckpt.pt (model only) and last.pt (everything needed to resume) hold."""
    ckpt = {
        "model_state_dict": model.state_dict(),
        "tokenizer_stoi": tokenizer.stoi,
        "tokenizer_itos": tokenizer.itos,
        "vocab_size": tokenizer.vocab_size,
        "config": asdict(cfg),
        **run,  # step, seconds, best_val_loss, history, data, seed
    }
    if optimizer is not None:
        ckpt["optimizer_state_dict"] = optimizer.state_dict()
        ckpt["rng_state"] = rng_state(batch_generator)
    return ckpt


class StopRequest:
    """The first Ctrl-C asks the loop to stop at the end of the current step, so the state saved to
    last.pt is always whole; a second Ctrl-C stops at once, as usual."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: keep Python's usual Ctrl-C
            self.previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def setup_distributed(device_flag):
    """Under torchrun (RANK is set), join the process group; returns (rank, world_size, device)."""
    if "RANK" not in os.environ:
        return 0, 1, get_device(device_flag)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and device_flag in ("auto", "cuda")
    device = f"cuda:{local_rank}" if use_cuda else "cpu"
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")  # gloo: CPU processes
    return rank, world_size, device


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


def check_in_sync(model, world_size, master):
    """DDP keeps every process's weights identical; check it at the end instead of trusting it."""
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    everyone = [torch.zeros_like(flat) for _ in range(world_size)]
    dist.all_gather(everyone, flat)
    if not all(torch.equal(everyone[0], other) for other in everyone[1:]):
        raise RuntimeError("DDP processes ended with different weights; this is a bug, please report it")
    if master:
        print(f"all {world_size} processes hold identical weights")


def write_log(history, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "seconds", "lr", "train_loss", "val_loss"])
        for step, seconds, lr, train_loss, val_loss in history:
            writer.writerow([step, f"{seconds:.1f}", f"{lr:.3g}", f"{train_loss:.4f}", f"{val_loss:.4f}"])


def main(argv=None):
    args = parse_args(argv)
    rank, world_size, device = setup_distributed(args.device)
    try:
        train(args, rank, world_size, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def train(args, rank, world_size, device):
    master = rank == 0  # only the first process logs, evaluates, samples and saves
    out_dir = Path(args.out_dir)
    last_path, ckpt_path = out_dir / "last.pt", out_dir / "ckpt.pt"

    resumed = load_checkpoint(last_path, "cpu") if args.resume else None
    budget = args.time_budget if args.time_budget is not None else Config().time_budget
    preset = choose_preset(args.preset, device, budget)
    try:
        if resumed:
            given = {k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__ and v is not None}
            cfg = apply_overrides(Config(**resumed["config"]), given)
        else:
            cfg = config_from_args(args, preset)
        validate(cfg)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None

    data_path = resumed["data"] if resumed else args.data
    text_data = load_tokens(data_path)  # encoded once, then cached beside the text file
    tokenizer = CharTokenizer.from_stoi(text_data.stoi)
    if resumed and resumed["tokenizer_stoi"] != tokenizer.stoi:
        raise UserError(f"{data_path} has changed since {last_path} was saved; resume needs the same text")
    train_data, val_data = train_val_split(text_data.tokens)
    if len(val_data) <= cfg.block_size:
        raise UserError(
            f"{data_path} has {len(text_data.tokens):,} characters, too few for block_size {cfg.block_size}: the "
            f"validation tenth needs more than {cfg.block_size}. Use a longer text or a smaller --block_size."
        )

    set_seed(args.seed)
    model = GPTModel(tokenizer.vocab_size, cfg.n_embd, cfg.num_heads, cfg.n_layer, cfg.block_size, cfg.dropout)
    model.to(device)
    torch.manual_seed(args.seed + rank)  # same initial weights everywhere, different dropout masks
    optimizer = make_optimizer(model, cfg, device)
    batch_generator = torch.Generator().manual_seed(args.seed + rank)  # each process its own batches
    run = {"step": 0, "seconds": 0.0, "best_val_loss": math.inf, "history": [], "data": str(data_path),
           "seed": args.seed}
    if resumed:
        try:
            model.load_state_dict(resumed["model_state_dict"])
            optimizer.load_state_dict(resumed["optimizer_state_dict"])
        except (RuntimeError, ValueError) as e:
            raise UserError(f"{last_path} does not fit this model's sizes; don't change the model when resuming ({e})")
        set_rng_state(resumed["rng_state"], batch_generator)
        run.update({k: resumed[k] for k in ("step", "seconds", "best_val_loss", "history", "seed")})
        if world_size > 1:  # last.pt holds rank 0's random states: give each process its own stream again
            torch.manual_seed(run["seed"] + rank + 7919 * run["step"])
            batch_generator.manual_seed(run["seed"] + rank + 7919 * run["step"])

    raw_model = model  # what gets saved and sampled, without the compile / DDP wrappers
    if should_compile(cfg, device):
        model = torch.compile(model)
    if world_size > 1:
        model = DDP(model, device_ids=[int(device.split(":")[1])] if device.startswith("cuda") else None)
    autocast = autocast_context(device)

    if master:
        where = str(last_path) if resumed else (f"preset {preset}" if preset else "config.py")
        if preset and not args.preset and not resumed:
            where += " (chosen for this device and budget; --preset or model flags override it)"
        print(f"device: {device}{f' x {world_size} processes' if world_size > 1 else ''}   "
              f"config: {where}   seed: {run['seed']}")
        print(f"data: {data_path}: {len(text_data.tokens):,} characters, vocabulary of {tokenizer.vocab_size}")
        print(f"model: {raw_model.num_params() / 1e6:.2f}M parameters (n_embd {cfg.n_embd}, num_heads "
              f"{cfg.num_heads}, n_layer {cfg.n_layer}, block_size {cfg.block_size})")
        tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum * world_size
        stop = f"{cfg.max_iters} steps" + (f" or {cfg.time_budget:g} s, whichever comes first" if cfg.time_budget else "")
        print(f"training: {stop}, {tokens_per_step:,} tokens per step, peak lr {cfg.learning_rate}")
        if resumed:
            print(f"resuming {last_path} at step {run['step']} (best val loss so far {run['best_val_loss']:.4f})")
        elif ckpt_path.exists():
            print(f"note: {ckpt_path} exists and will be replaced once this run has a better model; "
                  "use --out_dir to keep it")
        out_dir.mkdir(parents=True, exist_ok=True)

    def progress(step, seconds):
        """How much of the run is done, 0..1: by steps or by the clock, whichever is further along."""
        by_clock = seconds / cfg.time_budget if cfg.time_budget else 0.0
        return max(step / max(cfg.max_iters, 1), by_clock)

    def save(path, with_state):
        save_checkpoint(checkpoint_dict(raw_model, tokenizer, cfg, run, optimizer if with_state else None,
                                        batch_generator), path)

    def evaluate_and_save(step, lr):
        """Estimate both losses, log them, and save last.pt, plus ckpt.pt when val is the best yet."""
        with autocast:
            losses = estimate_loss(raw_model, splits, cfg.eval_iters, cfg.batch_size, cfg.block_size, device)
        if not all(math.isfinite(v) for v in losses.values()):
            raise FloatingPointError(step)
        run["history"].append((step, run["seconds"], lr, losses["train"], losses["val"]))
        note = ""
        if step > 0 and losses["val"] < run["best_val_loss"]:
            run["best_val_loss"] = losses["val"]
            save(ckpt_path, with_state=False)
            note = "  (best so far: saved ckpt.pt)"
        save(last_path, with_state=True)
        tqdm.write(f"step {step:5d} | {run['seconds']:6.0f}s | train loss {losses['train']:.4f} | "
                   f"val loss {losses['val']:.4f}{note}")

    splits = {"train": train_data, "val": val_data}
    step = run["step"]
    start = time.perf_counter() - run["seconds"]
    lr = lr_at(step, progress(step, run["seconds"]), cfg.learning_rate, cfg.warmup_iters, cfg.min_lr_ratio)
    # The bar counts steps, or whole seconds under a time budget.
    bar = tqdm(total=math.ceil(cfg.time_budget) or cfg.max_iters, initial=int(run["seconds"]) if cfg.time_budget else step,
               desc="training", unit="s" if cfg.time_budget else "step", dynamic_ncols=True, disable=not master,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt}s [{elapsed}<{remaining}{postfix}]" if cfg.time_budget
               else None)
    with StopRequest() as ctrl_c:
        try:
            while True:
                run["seconds"] = time.perf_counter() - start
                done = step >= cfg.max_iters or 0 < cfg.time_budget <= run["seconds"]
                stop = ctrl_c.requested
                if world_size > 1:  # clocks and key presses differ: rank 0 decides for everyone
                    flags = torch.tensor([float(done), float(stop)], device=device)
                    dist.broadcast(flags, src=0)
                    done, stop = bool(flags[0]), bool(flags[1])
                if stop:  # Ctrl-C, seen between two steps: everything is consistent, save it
                    bar.close()
                    if master:
                        save(last_path, with_state=True)
                        print(f"\ninterrupted at step {step}: saved {last_path}. Continue with: "
                              f"python3 train.py --out_dir {out_dir} --resume")
                    raise SystemExit(130)
                already_evaluated = run["history"] and run["history"][-1][0] == step
                if master and (step % cfg.eval_interval == 0 or done) and not already_evaluated:
                    evaluate_and_save(step, lr)
                if done:
                    break

                lr = lr_at(step, progress(step, run["seconds"]), cfg.learning_rate, cfg.warmup_iters, cfg.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss = train_step(model, optimizer, cfg, autocast, world_size,
                                  lambda: get_batch(train_data, cfg.batch_size, cfg.block_size, device, batch_generator))
                step += 1
                run["step"] = step
                if step % 10 == 0:  # reading the loss waits for the GPU, so not every step
                    loss_value = loss.item()
                    if not math.isfinite(loss_value):
                        raise FloatingPointError(step)
                    bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.1e}")
                if cfg.time_budget:
                    bar.update(min(int(time.perf_counter() - start), bar.total) - bar.n)
                else:
                    bar.update(1)
        except KeyboardInterrupt:  # a second Ctrl-C, in the middle of a step: keep the last whole save
            bar.close()
            if master:
                print(f"\nstopped at once; {last_path} holds the state of the last evaluation. Continue with: "
                      f"python3 train.py --out_dir {out_dir} --resume")
            raise SystemExit(130)
        except FloatingPointError:
            bar.close()
            raise UserError(
                f"the loss became NaN or infinite near step {step}; stopped without saving, so {last_path} and "
                f"{ckpt_path} keep the last good model. Try a lower --learning_rate (now {cfg.learning_rate})"
            ) from None
    bar.close()
    if world_size > 1:
        check_in_sync(raw_model, world_size, master)
    if not master:
        return

    history = run["history"]
    write_log(history, out_dir / "log.csv")
    steps, _, _, train_losses, val_losses = zip(*history)
    plot_losses(steps, train_losses, val_losses, out_dir / "loss.png", title=f"Mini-GPT on {Path(data_path).name}")
    print(f"\ndone: {step} steps in {run['seconds']:.0f}s, best val loss {run['best_val_loss']:.4f}. "
          f"Saved {ckpt_path}, {last_path}, {out_dir / 'loss.png'} and {out_dir / 'log.csv'}")

    if cfg.sample_tokens > 0 and step > 0:
        start_id = tokenizer.stoi.get("\n", 0)
        context = torch.full((1, 1), start_id, dtype=torch.long, device=device)
        sample = raw_model.generate(context, cfg.sample_tokens, temperature=0.8)
        print("\nsample (temperature 0.8):\n" + "-" * 60)
        print(tokenizer.decode(sample[0].tolist()).strip("\n"))
        print("-" * 60)
        print(f"next: python3 generate.py --checkpoint {ckpt_path}")


if __name__ == "__main__":
    run_main(main)
