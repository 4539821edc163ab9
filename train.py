"""Train a character-level GPT on a text file.

    python3 train.py                                  # tiny Shakespeare, ~10 minutes on a laptop CPU
    python3 train.py --data data/chinese.txt --out_dir out-chinese
    python3 train.py --preset tiny --max_iters 500    # any config.py field can be a flag

Writes <out_dir>/ckpt.pt (the best model by validation loss), loss.png and log.csv.
Then sample from it with `python3 generate.py`.
"""

import argparse
import csv
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from config import CUDA_PRESET, PRESETS, add_config_args, config_from_args, validate
from model import GPTModel
from utils import (
    REPO_DIR, CharTokenizer, UserError, estimate_loss, get_batch, get_device, lr_at, plot_losses,
    read_text, run_main, save_checkpoint, set_seed, train_val_split,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train a character-level GPT on a UTF-8 text file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", default=str(REPO_DIR / "data" / "input.txt"), help="UTF-8 text file to learn from")
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default=None,
        help=f"named model size from config.py (default: {CUDA_PRESET} on CUDA, config.py's values elsewhere)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--out_dir", default="out", help="folder for ckpt.pt, loss.png and log.csv")
    parser.add_argument("--seed", type=int, default=1337, help="random seed (same seed, same run)")
    add_config_args(parser)
    return parser.parse_args(argv)


def make_optimizer(model, cfg):
    """AdamW that decays only the weight matrices and embeddings, not biases or LayerNorm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.99))


def checkpoint_dict(model, tokenizer, cfg, step, best_val_loss, data_path):
    return {
        "model_state_dict": model.state_dict(),
        "tokenizer_stoi": tokenizer.stoi,
        "tokenizer_itos": tokenizer.itos,
        "vocab_size": tokenizer.vocab_size,
        "config": asdict(cfg),
        "step": step,
        "best_val_loss": best_val_loss,
        "data": str(data_path),
    }


def main(argv=None):
    args = parse_args(argv)
    device = get_device(args.device)
    preset = args.preset or (CUDA_PRESET if device.startswith("cuda") else None)
    try:
        cfg = config_from_args(args, preset)
        validate(cfg)
    except ValueError as e:
        raise UserError(str(e)) from None
    set_seed(args.seed)

    text = read_text(args.data)
    tokenizer = CharTokenizer(text)
    data = torch.from_numpy(tokenizer.encode_array(text))
    train_data, val_data = train_val_split(data)
    if len(val_data) <= cfg.block_size:
        raise UserError(
            f"{args.data} has {len(text):,} characters, too few for block_size {cfg.block_size}: the validation "
            f"tenth needs more than {cfg.block_size}. Use a longer text or a smaller --block_size."
        )

    model = GPTModel(tokenizer.vocab_size, cfg.n_embd, cfg.num_heads, cfg.n_layer, cfg.block_size, cfg.dropout)
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "ckpt.pt"

    print(f"device: {device}   preset: {preset or 'none (config.py defaults)'}   seed: {args.seed}")
    print(f"data: {args.data}: {len(text):,} characters, vocabulary of {tokenizer.vocab_size}")
    print(f"model: {model.num_params() / 1e6:.2f}M parameters "
          f"(n_embd {cfg.n_embd}, num_heads {cfg.num_heads}, n_layer {cfg.n_layer}, block_size {cfg.block_size})")
    print(f"training: {cfg.max_iters} steps of {cfg.batch_size} x {cfg.block_size} tokens, lr {cfg.learning_rate}")
    if ckpt_path.exists():
        print(f"note: {ckpt_path} exists and will be replaced once this run has a better model; "
              "use --out_dir to keep it")

    splits = {"train": train_data, "val": val_data}
    batch_generator = torch.Generator().manual_seed(args.seed)
    history = []  # (step, seconds, lr, train loss, val loss)
    best_val = math.inf
    start = time.perf_counter()
    lr = lr_at(0, 0.0, cfg.learning_rate, cfg.warmup_iters, cfg.min_lr_ratio)
    bar = tqdm(total=cfg.max_iters, desc="training", unit="step", dynamic_ncols=True)
    for step in range(cfg.max_iters + 1):
        if step % cfg.eval_interval == 0 or step == cfg.max_iters:
            losses = estimate_loss(model, splits, cfg.eval_iters, cfg.batch_size, cfg.block_size, device)
            elapsed = time.perf_counter() - start
            history.append((step, elapsed, lr, losses["train"], losses["val"]))
            saved = ""
            if step > 0 and losses["val"] < best_val:
                best_val = losses["val"]
                save_checkpoint(checkpoint_dict(model, tokenizer, cfg, step, best_val, args.data), ckpt_path)
                saved = f"  -> saved {ckpt_path}"
            tqdm.write(f"step {step:5d} | {elapsed:6.0f}s | train loss {losses['train']:.4f} | "
                       f"val loss {losses['val']:.4f}{saved}")
        if step == cfg.max_iters:
            break

        lr = lr_at(step, step / cfg.max_iters, cfg.learning_rate, cfg.warmup_iters, cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_data, cfg.batch_size, cfg.block_size, device, batch_generator)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.update(1)
        if step % 10 == 0:  # reading the loss waits for the GPU, so not every step
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.1e}")
    bar.close()
    total = time.perf_counter() - start

    write_log(history, out_dir / "log.csv")
    steps, _, _, train_losses, val_losses = zip(*history)
    plot_losses(steps, train_losses, val_losses, out_dir / "loss.png", title=f"Mini-GPT on {Path(args.data).name}")
    print(f"\ndone in {total:.0f}s: best val loss {best_val:.4f}; saved {ckpt_path}, "
          f"{out_dir / 'loss.png'} and {out_dir / 'log.csv'}")

    if cfg.sample_tokens > 0:
        start_id = tokenizer.stoi.get("\n", 0)
        context = torch.full((1, 1), start_id, dtype=torch.long, device=device)
        sample = model.generate(context, cfg.sample_tokens, temperature=0.8, top_k=None)
        print("\nsample (temperature 0.8):\n" + "-" * 60)
        print(tokenizer.decode(sample[0].tolist()).strip("\n"))
        print("-" * 60)
    if best_val < math.inf:
        print(f"next: python3 generate.py --checkpoint {ckpt_path}")


def write_log(history, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "seconds", "lr", "train_loss", "val_loss"])
        for step, seconds, lr, train_loss, val_loss in history:
            writer.writerow([step, f"{seconds:.1f}", f"{lr:.3g}", f"{train_loss:.4f}", f"{val_loss:.4f}"])


if __name__ == "__main__":
    run_main(main)
