"""Day 5: the tutorial's four experiments, run and written up for you.

    python3 day5_experiments.py --quick      # about 5 minutes on a laptop CPU: smaller runs, same questions
    python3 day5_experiments.py              # the full version: for a GPU, or a patient afternoon
    python3 day5_experiments.py --only 2 3   # just some of the experiments

  1  model size      tiny / small / default (--quick: tiny / small / medium), at equal time and at equal steps
  2  learning rate   1e-5, 3e-4, 1e-3, 3e-3 (the tutorial's list) and this repo's tuned CPU value
  3  sampling        temperature, top-k and top-p, measured on one checkpoint
  4  your own data   the same model on the Chinese poems, continuing 床前明月光

Every run is an ordinary `python3 train.py` run (run in this process), kept under --work (default
out-day5/). The results go to --out (default out-day5/ too): README.md with a table per experiment,
and the pictures exp1_model_size.png and exp2_learning_rate.png, labelled in the learner's language.
The pages committed in docs/day5/ were made with --quick --out docs/day5.
"""

import argparse
import contextlib
import csv
import math
import re
import runpy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from checkpoint import load_model
from cli import UserError, run_main
from config import Config
from device import cpu_name, get_device
from i18n import _
from plots import pyplot
from utils import REPO_DIR, read_text, set_seed

SHAKESPEARE = REPO_DIR / "data" / "input.txt"
POEMS = REPO_DIR / "data" / "chinese.txt"


@dataclass
class Plan:
    """How big each experiment is. QUICK fits a laptop CPU in about 5 minutes; FULL is the real thing."""
    name: str
    sizes: tuple  # the presets experiment 1 compares
    size_shape: dict  # batch and context for experiment 1 (the presets give the model sizes)
    equal_time: float  # seconds each size trains for, in the equal-time comparison
    time_eval_interval: int  # steps between evaluations in the equal-time runs
    equal_steps: int  # steps each size trains for, in the equal-steps comparison
    lr_shape: dict  # model and batch for experiments 2-4
    lr_steps: int  # steps per learning rate
    poem_time: float  # seconds of training on the poems in experiment 4


QUICK = Plan("quick", sizes=("tiny", "small", "medium"), size_shape=dict(block_size=64, batch_size=8, eval_iters=10),
             equal_time=20, time_eval_interval=50, equal_steps=400,
             lr_shape=dict(preset="small", block_size=64, batch_size=16), lr_steps=300, poem_time=45)
FULL = Plan("full", sizes=("tiny", "small", "default"), size_shape=dict(), equal_time=300, time_eval_interval=250,
            equal_steps=1500, lr_shape=dict(preset="small", block_size=128, batch_size=32), lr_steps=3000,
            poem_time=580)

LEARNING_RATES = [1e-5, 3e-4, 1e-3, 3e-3]  # the tutorial's list; the repo's tuned value is added to it
SAMPLING = [  # (label, generate keyword arguments)
    ("temperature 0.3", dict(temperature=0.3)),
    ("temperature 0.8", dict(temperature=0.8)),
    ("temperature 1.0", dict(temperature=1.0)),
    ("temperature 1.5", dict(temperature=1.5)),
    ("top_k 10", dict(temperature=1.0, top_k=10)),
    ("top_k 200", dict(temperature=1.0, top_k=200)),
    ("top_p 0.9", dict(temperature=1.0, top_p=0.9)),
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Day 5: the tutorial's four experiments, measured.")
    parser.add_argument("--quick", action="store_true", help="smaller runs that finish in about 5 minutes on a CPU")
    parser.add_argument("--only", type=int, nargs="+", choices=[1, 2, 3, 4], default=[1, 2, 3, 4],
                        help="run only these experiments (3 needs 2's checkpoint, 4 trains its own)")
    parser.add_argument("--out", default="out-day5", help="folder for README.md and the PNGs (the committed pages: "
                                                          "--quick --out docs/day5)")
    parser.add_argument("--work", default="out-day5", help="folder for the runs' checkpoints and logs")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every run's steps and seconds by this (tests use a small value)")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# Running train.py


@dataclass
class Result:
    """One finished training run, read back from its log.csv and checkpoint."""
    name: str
    out_dir: Path
    rows: list  # log.csv rows: dicts of floats
    params: int
    batch_size: int
    block_size: int

    @property
    def steps(self):
        return int(self.rows[-1]["step"])

    @property
    def seconds(self):
        return self.rows[-1]["seconds"]

    @property
    def val(self):
        return self.rows[-1]["val_loss"]

    @property
    def train(self):
        return self.rows[-1]["train_loss"]

    @property
    def tokens_per_s(self):
        return self.steps * self.batch_size * self.block_size / max(self.seconds, 1e-9)


def train_run(name, out_dir, flags, device):
    """Run `python3 train.py <flags>`, its printout kept in <out_dir>/train.txt."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [*map(str, flags), "--out_dir", str(out_dir), "--device", device, "--sample_tokens", "0"]
    with open(out_dir / "train.txt", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        run_script(REPO_DIR / "train.py", argv)  # its progress bar still shows, on stderr
    rows = [{k: float(v) if v else math.nan for k, v in row.items()}  # full_val_loss: only on the best row
            for row in csv.DictReader(open(out_dir / "log.csv"))]
    model, _ = load_model(out_dir / "last.pt")
    cfg = torch.load(out_dir / "last.pt", weights_only=True)["config"]
    return Result(name, out_dir, rows, model.num_params(), cfg["batch_size"], cfg["block_size"])


def run_script(path, argv):
    """Run a script as `python3 <path> <argv>` would, but in this process (runpy), so torch is imported once.
    A run that fails (its one-line error is on stderr) stops the experiments with the same status."""
    saved = sys.argv
    sys.argv = [str(path), *argv]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
    finally:
        sys.argv = saved


def flags_from(shape):
    """{"preset": "small", "block_size": 64} -> ["--preset", "small", "--block_size", "64"]."""
    return [item for key, value in shape.items() for item in (f"--{key}", value)]


def say(text):
    tqdm.write(text)


# ----------------------------------------------------------------------------------------------
# Experiment 1: model size


def experiment_size(plan, args, scale):
    say(f"\n【实验1】模型大小：{' / '.join(plan.sizes)}，分别在相同时间和相同步数下比较")
    seconds, steps = plan.equal_time * scale, max(2, int(plan.equal_steps * scale))
    by_time, by_steps = {}, {}
    for preset in plan.sizes:
        shape = flags_from({"preset": preset, **plan.size_shape})
        say(f"  {preset}：训练 {seconds:g} 秒 ……")
        by_time[preset] = train_run(preset, Path(args.work) / f"size-{preset}-time", [
            *shape, "--time_budget", seconds, "--max_iters", 10**7, "--eval_interval", plan.time_eval_interval],
            args.device)
        say(f"  {preset}：训练 {steps} 步 ……")
        by_steps[preset] = train_run(preset, Path(args.work) / f"size-{preset}-steps", [
            *shape, "--time_budget", 0, "--max_iters", steps, "--eval_interval", max(1, steps // 6)], args.device)

    def table(results):
        lines = ["| size | parameters | seconds | steps | train loss | val loss | tokens/s |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in results.values():
            lines.append(f"| {r.name} | {r.params / 1e6:.2f}M | {r.seconds:.0f} | {r.steps:,} | {r.train:.3f} | "
                         f"{r.val:.3f} | {r.tokens_per_s:,.0f} |")
        return lines

    best_time = min(by_time.values(), key=lambda r: r.val)
    best_steps = min(by_steps.values(), key=lambda r: r.val)
    slowest = min(by_time.values(), key=lambda r: r.tokens_per_s)
    fastest = max(by_time.values(), key=lambda r: r.tokens_per_s)
    speed = f"{fastest.name} processes {fastest.tokens_per_s / slowest.tokens_per_s:.0f}x more tokens per second than {slowest.name}"
    time_verdict = (f"At equal time ({seconds:g} s each), **{best_time.name}** reached the lowest val loss "
                    f"({best_time.val:.3f}). " + (
                        f"{speed}: in a short run, speed matters more than size." if best_time is fastest else
                        f"{speed}, yet {best_time.name}'s extra learning per step outweighed its lower speed."))
    largest = max(by_steps.values(), key=lambda r: r.params)
    step_verdict = (f"At equal steps ({steps} each), **{best_steps.name}** reached the lowest val loss "
                    f"({best_steps.val:.3f}): " + (
                        "per step, the biggest model learns the most from the same data; it just costs more time "
                        "per step." if best_steps is largest else
                        f"in only {steps} steps the biggest model ({largest.name}) had not yet pulled ahead."))
    say(f"  相同时间下，{best_time.name} 的验证 loss 最低（{best_time.val:.3f}）；{fastest.name} 每秒处理的 token 是 "
        f"{slowest.name} 的 {fastest.tokens_per_s / slowest.tokens_per_s:.0f} 倍。"
        + ("时间很短时，速度比模型大小更重要。" if best_time is fastest else f"{best_time.name} 每一步学得更多，弥补了速度上的差距。"))
    say(f"  相同步数下，{best_steps.name} 的验证 loss 最低（{best_steps.val:.3f}）："
        + ("每一步里，大模型从同样的数据学到的最多，只是每一步更慢。" if best_steps is largest else
           f"只训练 {steps} 步，最大的模型（{largest.name}）还没来得及领先。"))

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in by_time.values():
        left.plot([row["seconds"] for row in r.rows], [row["val_loss"] for row in r.rows], marker="o", label=r.name)
    for r in by_steps.values():
        right.plot([row["step"] for row in r.rows], [row["val_loss"] for row in r.rows], marker="o", label=r.name)
    left.set(title=_("Equal time: {seconds:g} s each").format(seconds=seconds), xlabel=_("seconds"),
             ylabel=_("val loss"))
    right.set(title=_("Equal steps: {steps} each").format(steps=steps), xlabel=_("step"), ylabel=_("val loss"))
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(Path(args.out) / "exp1_model_size.png", dpi=110)
    plt.close(fig)

    return [
        "## Experiment 1: model size · 实验1：模型大小", "",
        f"Presets from `config.py`{', with ' + ', '.join(f'{k} {v}' for k, v in plan.size_shape.items()) if plan.size_shape else ''}.",
        "", f"**Equal wall-clock time** ({seconds:g} s of training each):", "",
        *table(by_time), "", time_verdict, "",
        f"**Equal steps** ({steps} each):", "", *table(by_steps), "", step_verdict, "",
        "![validation loss at equal time and at equal steps](exp1_model_size.png)", "",
    ]


# ----------------------------------------------------------------------------------------------
# Experiment 2: learning rate


def experiment_lr(plan, args, scale):
    say("\n【实验2】学习率：哪个收敛最快？")
    steps = max(2, int(plan.lr_steps * scale))
    tuned = Config().learning_rate
    rates = sorted(set(LEARNING_RATES) | {tuned})
    results = {}
    for lr in rates:
        say(f"  learning_rate {lr:g}：训练 {steps} 步 ……")
        results[lr] = train_run(f"{lr:g}", Path(args.work) / f"lr-{lr:g}", [
            *flags_from(plan.lr_shape), "--learning_rate", lr, "--time_budget", 0, "--max_iters", steps,
            "--eval_interval", max(1, steps // 12)], args.device)
    best = min(results, key=lambda lr: results[lr].val)
    target = results[best].rows[0]["val_loss"] - 0.75 * (results[best].rows[0]["val_loss"] - results[best].val)

    def first_step_below(r):
        return next((int(row["step"]) for row in r.rows if row["val_loss"] <= target), None)

    lines = ["## Experiment 2: learning rate · 实验2：学习率", "",
             f"The `small` model, {', '.join(f'{k} {v}' for k, v in plan.lr_shape.items() if k != 'preset')}, "
             f"{steps} steps each, with `train.py`'s learning-rate schedule. {tuned:g} is this repo's tuned CPU value.",
             "", f"| learning rate | final train loss | final val loss | first step with val ≤ {target:.2f} |",
             "| ---: | ---: | ---: | ---: |"]
    for lr, r in results.items():
        reached = first_step_below(r)
        lines.append(f"| {lr:g}{' (tuned)' if lr == tuned else ''} | {r.train:.3f} | {r.val:.3f} | "
                     f"{reached if reached is not None else 'never'} |")
    fastest = min((lr for lr in results if first_step_below(results[lr]) is not None),
                  key=lambda lr: first_step_below(results[lr]))
    slowest = min(rates)
    start_loss = results[slowest].rows[0]["val_loss"]
    barely = start_loss - results[slowest].val < 0.1 * (start_loss - results[best].val)
    verdict = (f"**{fastest:g}** converged fastest (first to val loss {target:.2f}, at step "
               f"{first_step_below(results[fastest])}); {best:g} ended lowest ({results[best].val:.3f})."
               + (f" {slowest:g} barely moves in {steps} steps: its steps are too small." if barely else ""))
    say(f"  收敛最快的是 {fastest:g}（最先让验证 loss 降到 {target:.2f}，在第 {first_step_below(results[fastest])} 步）；"
        f"最终最低的是 {best:g}（{results[best].val:.3f}）。" + (f"{slowest:g} 几乎不动：步子太小。" if barely else ""))
    lines += ["", verdict, "", "![validation curves for each learning rate](exp2_learning_rate.png)", ""]

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for lr, r in results.items():
        ax.plot([row["step"] for row in r.rows], [row["val_loss"] for row in r.rows], marker="o", markersize=3,
                label=f"lr {lr:g}" + (_(" (tuned)") if lr == tuned else ""))
    ax.set(title=_("Validation loss for each learning rate"), xlabel=_("step"), ylabel=_("val loss"))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(args.out) / "exp2_learning_rate.png", dpi=110)
    plt.close(fig)
    return lines


# ----------------------------------------------------------------------------------------------
# Experiment 3: sampling


def words(text):
    """Words as runs of letters (and apostrophes inside them), split on spaces, punctuation and digits."""
    return re.findall(r"[^\W\d_]+(?:'[^\W\d_]+)*", text)


def distinct_ngrams(text, n):
    return len({text[i : i + n] for i in range(len(text) - n + 1)})


@torch.no_grad()
def mean_nll(model, ids, start, batch_size=256):
    """The model's mean negative log-likelihood (nats per character) of ids[start:], each character
    scored with the block_size characters before it (fewer at the very beginning)."""
    model.eval()
    ids = torch.tensor(ids)
    block = model.block_size
    total = 0.0
    # Characters 1..block: one causal pass over the first block characters sees each one's whole prefix.
    logits, _ = model(ids[None, :block])
    logprobs = torch.log_softmax(logits[0, : len(ids) - 1], dim=-1)  # predicts ids[1 : block + 1]
    targets = torch.arange(1, 1 + len(logprobs))
    keep = targets >= start
    total -= logprobs[keep.nonzero()[:, 0], ids[targets[keep]]].sum().item()
    # Later characters: each one's own window of the block characters before it, many windows per pass.
    later = [t for t in range(block + 1, len(ids)) if t >= start]
    for i in range(0, len(later), batch_size):
        chunk = torch.tensor(later[i : i + batch_size])
        windows = ids[chunk[:, None] - block + torch.arange(block)]  # (N, block)
        logits, _ = model(windows)
        total -= torch.log_softmax(logits[:, -1], dim=-1)[torch.arange(len(chunk)), ids[chunk]].sum().item()
    return total / max(len(ids) - max(start, 1), 1)


def sample_measures(text, train_words, model, ids, start):
    generated = words(text)
    known = sum(word in train_words for word in generated) / max(len(generated), 1)
    return {"distinct chars": len(set(text)), "distinct 3-grams": distinct_ngrams(text, 3),
            "known words": known, "nll": mean_nll(model, ids, start)}


def experiment_sampling(plan, args, scale):
    say("\n【实验3】生成参数：temperature、top-k 和 top-p 如何改变输出")
    tuned = Config().learning_rate
    ckpt = Path(args.work) / f"lr-{tuned:g}" / "ckpt.pt"
    if not ckpt.is_file():
        raise UserError(_("experiment 3 samples from experiment 2's checkpoint {path}; run experiment 2 first").format(
            path=ckpt))
    model, tokenizer = load_model(ckpt, "cpu")
    text = read_text(SHAKESPEARE)
    train_words = set(words(text[: int(0.9 * len(text))]))  # the training split's words
    n_chars = 1000  # so that counts of distinct characters and 3-grams are "per 1,000 characters"
    prompt = "\n"
    lines = ["## Experiment 3: sampling · 实验3：生成参数", "",
             f"{n_chars:,} characters per setting from experiment 2's checkpoint (learning rate {tuned:g}), "
             "the same seed for each, so distinct characters and 3-grams are counts per 1,000 characters; "
             "known words is the share of generated words (runs of letters) that occur in the training text; "
             "NLL is the model's own mean negative log-likelihood of the sample, in nats per character.", "",
             "| setting | distinct chars /1k | distinct 3-grams /1k | known words | NLL | sample (start) |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    measured = {}
    for label, kwargs in tqdm(SAMPLING, desc="采样", leave=False):
        set_seed(1337)
        context = torch.tensor([tokenizer.encode(prompt)])
        ids = model.generate(context, n_chars, **kwargs)[0].tolist()
        text = tokenizer.decode(ids[len(prompt):])
        m = measured[label] = sample_measures(text, train_words, model, ids, len(prompt))
        preview = " ".join(text.split())[:60].replace("|", "/")
        lines.append(f"| {label} | {m['distinct chars']:.0f} | {m['distinct 3-grams']:.0f} | {m['known words']:.0%} | "
                     f"{m['nll']:.2f} | {preview} |")
        say(f"  {label}：不同字符 {m['distinct chars']:.0f}，不同 3-gram {m['distinct 3-grams']:.0f}，"
            f"真实单词占比 {m['known words']:.0%}，NLL {m['nll']:.2f}")
    cold, hot = measured["temperature 0.3"], measured["temperature 1.5"]
    verdict = (f"From temperature 0.3 to 1.5, distinct 3-grams go from {cold['distinct 3-grams']} to "
               f"{hot['distinct 3-grams']}, the share of real words from {cold['known words']:.0%} to "
               f"{hot['known words']:.0%} and the model's NLL from {cold['nll']:.2f} to {hot['nll']:.2f}: "
               + ("a low temperature gives safer, more repetitive text, a high one more varied text with more "
                  "broken words." if cold["distinct 3-grams"] < hot["distinct 3-grams"] and cold["nll"] < hot["nll"]
                  else "at this model's stage of training the usual pattern does not show clearly."))
    say(f"  temperature 从 0.3 到 1.5：不同 3-gram 从 {cold['distinct 3-grams']} 个变成 {hot['distinct 3-grams']} 个，"
        f"真实单词占比从 {cold['known words']:.0%} 变成 {hot['known words']:.0%}，NLL 从 {cold['nll']:.2f} 变成 {hot['nll']:.2f}。"
        + ("温度低：稳妥但重复；温度高：更多样，但错字更多。" if cold["distinct 3-grams"] < hot["distinct 3-grams"]
           and cold["nll"] < hot["nll"] else "这个模型还没训练到能清楚看出这个规律。"))
    lines += ["", verdict, ""]
    return lines


# ----------------------------------------------------------------------------------------------
# Experiment 4: your own data


def experiment_own_data(plan, args, scale):
    say("\n【实验4】自定义数据：同一个模型在唐诗上训练")
    seconds = plan.poem_time * scale
    shape = {**plan.lr_shape}
    r = train_run("poems", Path(args.work) / "poems", [
        *flags_from(shape), "--data", POEMS, "--time_budget", seconds, "--max_iters", 10**7,
        "--eval_interval", 10**7], args.device)
    model, tokenizer = load_model(r.out_dir / "ckpt.pt", "cpu")
    set_seed(1337)
    prompt = "床前明月光"
    ids = model.generate(torch.tensor([tokenizer.encode(prompt)]), 48, temperature=0.8, top_k=20)[0].tolist()
    sample = tokenizer.decode(ids)
    say(f"  验证 loss {r.val:.3f}（词汇表 {tokenizer.vocab_size} 个字）；续写：{sample}")
    return ["## Experiment 4: your own data · 实验4：自定义数据", "",
            f"The same `small` model trained for {seconds:g} s on `data/chinese.txt` ({tokenizer.vocab_size:,} distinct "
            f"characters): {r.steps:,} steps, val loss **{r.val:.3f}** (train {r.train:.3f}). This loss can't be "
            f"compared with Shakespeare's: each character is one of {tokenizer.vocab_size:,}, not one of 65.", "",
            "Continuing 床前明月光 (temperature 0.8, top-k 20):", "", "```", sample, "```", ""]


# ----------------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.scale <= 0:
        raise UserError(_("--scale must be > 0, got {value}").format(value=args.scale))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(_("--out {path} is a file, not a folder").format(path=out))
    out.mkdir(parents=True, exist_ok=True)
    print("=" * 60)
    print(f"第五天：四个实验（{'快速模式：步数更少、规模更小' if args.quick else '完整模式：GPU 上或者耐心等一个下午'}）")
    print("=" * 60)
    if args.quick:
        print("快速模式只为在笔记本 CPU 上几分钟内看到趋势；完整结果请去掉 --quick。")
        print("有 GPU 的话，请运行完整版 python3 day5_experiments.py：实验1 比较 tiny / small / default"
              "（default 有 1070 万参数，在没有 bf16 的 CPU 上几百步就要好几分钟），每个实验的步数也多得多。")
    start = time.perf_counter()
    experiments = {1: experiment_size, 2: experiment_lr, 3: experiment_sampling, 4: experiment_own_data}
    sections = []
    for number in args.only:
        sections += experiments[number](plan, args, args.scale)
    minutes = (time.perf_counter() - start) / 60
    device = get_device(args.device)
    hardware = torch.cuda.get_device_name(device) if device.startswith("cuda") else cpu_name()
    header = ["# Day 5 experiments · 第五天实验", "",
              f"Made by `python3 day5_experiments.py{' --quick' if args.quick else ''}` in {minutes:.1f} minutes on "
              f"{hardware} ({torch.get_num_threads()} threads, torch {torch.__version__}, device {device}). "
              f"{'Quick mode: fewer steps and smaller runs than the full version, so the trends matter, not the exact numbers. ' if args.quick else ''}"
              "Each run is an ordinary `train.py` run; their logs are under `" + str(args.work) + "/`.", ""]
    (out / "README.md").write_text("\n".join(header + sections), encoding="utf-8")
    print(f"\n✓ 结果已写入 {out / 'README.md'}（共 {minutes:.1f} 分钟）")


if __name__ == "__main__":
    run_main(main)
