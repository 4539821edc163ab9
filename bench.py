"""Measure Mini-GPT's speed on this machine: training tokens/s, achieved GFLOP/s against the
machine's own matmul peak, generation tokens/s and peak memory. Medians over repeated runs.

    python3 bench.py                                        # config.py's defaults
    python3 bench.py --preset small --block_size 64 --batch_size 12   # the classic CPU recipe
    python3 bench.py --preset default --json bench.json     # also write the numbers as JSON

These machines are often shared and noisy: compare numbers from one run, and quote medians.
"""

import argparse
import json
import resource
import statistics
import sys
import time

import torch

from cli import HelpFormatter, UserError, run_main
from config import CUDA_PRESET, PRESETS, add_config_args, choose_preset, config_from_args, validate
from device import autocast_context, cpu_name, get_device, resolve_precision, should_compile
from i18n import _, ljust, width
from model import GPTModel
from optim import make_optimizer, train_step
from utils import set_seed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--preset", choices=[*sorted(PRESETS), "none"], default=None,
                        help=f"model size from config.py (default: {CUDA_PRESET} on CUDA, config.py's values elsewhere)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the table shows their median")
    parser.add_argument("--steps", type=int, default=10, help="training steps per timed repeat (0 = skip training)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first (and compilation)")
    parser.add_argument("--gen_tokens", type=int, default=200, help="tokens per generation repeat (0 = skip)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results to this JSON file")
    parser.add_argument("--nanogpt", default=None, metavar="MODEL_PY",
                        help="also time nanoGPT's GPT (the model.py of a nanoGPT checkout) with the same sizes, batch, "
                             "optimizer and precision, interleaved with this repo's model in this process")
    add_config_args(parser)  # its --vocab_size is the timed model's vocabulary here: 65 (tiny Shakespeare's) if not given
    args = parser.parse_args(argv)
    args.vocab, args.vocab_size = args.vocab_size or 65, None
    return args


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def timed(fn, device, repeats):
    """Run fn() `repeats` times; the wall seconds of each, after making sure the device finished."""
    seconds = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def matmul_peak_gflops(device, dtype=torch.float32, n=2048, repeats=5):
    """This machine's own matmul speed: the median GFLOP/s of an n x n x n matrix multiply."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    inner = 4 if device == "cpu" else 50
    a @ b  # warm up
    runs = timed(lambda: [a @ b for _ in range(inner)], device, repeats)
    return 2 * n ** 3 * inner / statistics.median(runs) / 1e9


def flops_per_token(model, cfg):
    """Training FLOPs per token: 6 per weight (2 forward, 4 backward), plus attention's
    score and weighted-sum matmuls, 12 * n_layer * block_size * n_embd (the usual estimate, as in PaLM)."""
    lookup = model.position_embedding.weight.numel() if model.position_embedding is not None else 0
    weights = model.num_params() - lookup  # the position table is a lookup, not a matmul
    return 6 * weights + 12 * cfg.n_layer * cfg.block_size * cfg.n_embd


def peak_memory_mb(device):
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    if device == "mps":
        return torch.mps.driver_allocated_memory() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def random_batches(cfg, vocab_size, device):
    """A function returning (x, y) batches of random token ids, seeded: speed does not depend on the text.
    Contiguous, as train.py's batches are (nanoGPT's loss calls .view on the targets)."""
    generator = torch.Generator(device=device).manual_seed(0)

    def batch():
        x = torch.randint(vocab_size, (cfg.batch_size, cfg.block_size + 1), device=device, generator=generator)
        return x[:, :-1].contiguous(), x[:, 1:].contiguous()

    return batch


def bench_training(cfg, args, device):
    set_seed(0)
    model = GPTModel.from_config(cfg, args.vocab).to(device)
    optimizer = make_optimizer(model, cfg, device)
    compiled = should_compile(cfg, device)
    runner = torch.compile(model) if compiled else model
    autocast = autocast_context(device, cfg.precision)
    batch = random_batches(cfg, args.vocab, device)

    def steps(n):
        for _ in range(n):
            train_step(runner, optimizer, cfg, autocast, 1, batch)

    timed(lambda: steps(args.warmup), device, 1)
    runs = timed(lambda: steps(args.steps), device, args.repeats)
    tokens = args.steps * cfg.batch_size * cfg.block_size * cfg.grad_accum
    rates = [tokens / s for s in runs]
    return model, compiled, rates, flops_per_token(model, cfg)


def bench_against_nanogpt(cfg, args, device):
    """Training tokens/s of this repo's model and of nanoGPT's GPT at the same sizes, timed in turns.

    Both train with the same optimizer, optim.make_optimizer's (config.py's choice: Muon for the blocks'
    weight matrices and AdamW for the rest, or AdamW throughout), in the same precision, so the difference
    is the models' code. The two alternate repeat by repeat, so a noisy neighbour slows both alike.
    Returns {"mini-gpt": rates, "nanogpt": rates}.
    """
    import contextlib
    import importlib.util
    import io

    spec = importlib.util.spec_from_file_location("nanogpt_model", args.nanogpt)
    nanogpt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nanogpt)
    set_seed(0)
    ours = GPTModel.from_config(cfg, args.vocab).to(device)
    ours_opt = make_optimizer(ours, cfg, device)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter counts
        theirs = nanogpt.GPT(nanogpt.GPTConfig(block_size=cfg.block_size, vocab_size=args.vocab,
                                               n_layer=cfg.n_layer, n_head=cfg.num_heads, n_embd=cfg.n_embd,
                                               dropout=cfg.dropout)).to(device)
    theirs_opt = make_optimizer(theirs, cfg, device, blocks=theirs.transformer.h)
    autocast = autocast_context(device, cfg.precision)
    batch = random_batches(cfg, args.vocab, device)

    models = {"mini-gpt": (ours, ours_opt), "nanogpt": (theirs, theirs_opt)}
    rates = {name: [] for name in models}
    tokens = args.steps * cfg.batch_size * cfg.block_size * cfg.grad_accum
    for repeat in range(args.repeats + 1):  # the first round warms both up and is not counted
        for name, (model, optimizer) in models.items():
            [seconds] = timed(lambda: [train_step(model, optimizer, cfg, autocast, 1, batch)
                                       for _step in range(args.steps if repeat else args.warmup)], device, 1)
            if repeat:
                rates[name].append(tokens / seconds)
    return rates


def bench_generation(model, args, device):
    """Tokens/s generating args.gen_tokens tokens from a one-token prompt, with and without the KV cache.

    The two are interleaved, repeat by repeat, so a noisy neighbour slows both alike.
    """
    prompt = torch.zeros((1, 1), dtype=torch.long, device=device)
    modes = {"cached": True, "uncached": False}
    for use_cache in modes.values():
        model.generate(prompt, 8, use_cache=use_cache)  # warm up
    rates = {name: [] for name in modes}
    for _ in range(args.repeats):
        for name, use_cache in modes.items():
            [seconds] = timed(lambda: model.generate(prompt, args.gen_tokens, use_cache=use_cache), device, 1)
            rates[name].append(args.gen_tokens / seconds)
    return rates


def main(argv=None):
    args = parse_args(argv)
    device = get_device(args.device)
    preset = choose_preset(args.preset, device)
    try:
        cfg = config_from_args(args, preset)
        validate(cfg)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.repeats < 1 or min(args.steps, args.warmup, args.gen_tokens) < 0:
        raise UserError(_("--repeats must be >= 1; --steps, --warmup and --gen_tokens must be >= 0"))

    hardware = torch.cuda.get_device_name(device) if device.startswith("cuda") else cpu_name()
    print(_("device: {device} ({hardware}), torch {torch}, {threads} CPU threads").format(
        device=device, hardware=hardware, torch=torch.__version__, threads=torch.get_num_threads()))
    print(_("config: n_embd {n_embd}, num_heads {num_heads}, n_layer {n_layer}, block_size {block_size}, batch_size "
            "{batch_size}, grad_accum {grad_accum}, vocab {vocab}, optimizer {optimizer}").format(
        vocab=args.vocab, **{k: getattr(cfg, k) for k in ("n_embd", "num_heads", "n_layer", "block_size",
                                                                "batch_size", "grad_accum", "optimizer")}))

    precision = resolve_precision(device, cfg.precision)
    peak = matmul_peak_gflops(device, torch.bfloat16 if precision == "bf16" else torch.float32)
    if args.steps:
        model, compiled, train_rates, fpt = bench_training(cfg, args, device)
    else:  # generation only: an untrained model generates just as fast
        set_seed(0)
        model = GPTModel.from_config(cfg, args.vocab).to(device)
        compiled, train_rates, fpt = False, [], flops_per_token(model, cfg)
    gen = bench_generation(model, args, device) if args.gen_tokens else {}
    train_median = statistics.median(train_rates) if train_rates else 0.0
    achieved = train_median * fpt / 1e9
    results = {
        "device": device, "hardware": hardware, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "config": {k: getattr(cfg, k) for k in ("n_embd", "num_heads", "n_layer", "block_size", "batch_size",
                                                "grad_accum")},
        "params": model.num_params(), "compiled": compiled,
        "autocast": precision,
        "train_tokens_per_s": train_rates, "train_tokens_per_s_median": train_median,
        "train_gflops_per_s": achieved, "matmul_peak_gflops": peak, "fraction_of_peak": achieved / peak,
        "generate_tokens_per_s": gen,
        "generate_tokens_per_s_median": {name: statistics.median(rates) for name, rates in gen.items()},
        "peak_memory_mb": peak_memory_mb(device),
    }

    rows = [(_("parameters"), f"{model.num_params() / 1e6:.2f}M")]
    if train_rates:
        rows += [
            (_("training tokens/s (median)"),
             _("{median:,.0f}   (min {min:,.0f}, max {max:,.0f}, {repeats} x {steps} steps, {precision})").format(
                 median=train_median, min=min(train_rates), max=max(train_rates), repeats=args.repeats,
                 steps=args.steps, precision=results["autocast"] + (", compiled" if compiled else ""))),
            (_("training GFLOP/s"), _("{gflops:,.1f}   ({mflop:.2f} MFLOP per token)").format(gflops=achieved,
                                                                                              mflop=fpt / 1e6)),
            (_("{precision} matmul peak GFLOP/s").format(precision=precision),
             _("{gflops:,.1f}   (2048^3 matmul, measured now)").format(gflops=peak)),
            (_("fraction of peak"), f"{achieved / peak:.0%}"),
        ]
    if args.nanogpt:
        side = bench_against_nanogpt(cfg, args, device)
        medians = {name: statistics.median(r) for name, r in side.items()}
        results["side_by_side_tokens_per_s"] = side
        rows.append((_("training tokens/s, this model vs nanoGPT"),
                     _("{ours:,.0f} vs {theirs:,.0f} (ratio {ratio:.2f}; medians of {repeats}, taken in turns)").format(
                         ours=medians["mini-gpt"], theirs=medians["nanogpt"],
                         ratio=medians["mini-gpt"] / medians["nanogpt"], repeats=args.repeats)))
    if gen:
        cached, uncached = (results["generate_tokens_per_s_median"][k] for k in ("cached", "uncached"))
        rows.append((_("generation tokens/s, KV cache"),
                     _("{rate:,.0f}   ({n} tokens from a 1-token prompt)").format(rate=cached, n=args.gen_tokens)))
        rows.append((_("generation tokens/s, no cache"),
                     _("{rate:,.0f}   (the cache is {ratio:.1f}x faster)").format(rate=uncached,
                                                                                  ratio=cached / uncached)))
    memory = "GPU" if device != "cpu" else _("process RSS")
    rows.append((_("peak memory"), f"{results['peak_memory_mb']:,.0f} MB ({memory})"))
    columns = max(width(name) for name, value in rows)
    print()
    for name, value in rows:
        print(f"{ljust(name, columns)}  {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print("\n" + _("wrote {path}").format(path=args.json))


if __name__ == "__main__":
    run_main(main)
