"""Day 5: the tutorial's four experiments, run and written up for you.

    python3 day5_experiments.py --quick      # about 5 minutes on a laptop CPU: smaller runs, same questions
    python3 day5_experiments.py              # the full version: for a GPU, or a patient afternoon
    python3 day5_experiments.py --only 2 3   # just some of the experiments

  1  model size      tiny / small / default (--quick: tiny / small / medium), at equal time and at equal steps
  2  learning rate   1e-5, 3e-4, 1e-3, 3e-3 (the tutorial's list) and this repo's tuned CPU value
  3  sampling        temperature, top-k and top-p, measured on one checkpoint
  4  your own data   the same model on the Chinese poems, continuing 床前明月光

Every run is an ordinary train.py run, called as a function (train.main) in this process, kept under --work
(default out-day5/). The results go to --out (default out-day5/ too): README.md with a table per experiment,
and the pictures exp1_model_size.png and exp2_learning_rate.png, labelled in the learner's language.
The pages committed in docs/day5/ were made with --quick --out docs/day5.
"""

import argparse
import contextlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import train
from checkpoint import load_model
from cli import UserError, run_main
from config import Config
from device import cpu_name, get_device
from i18n import _
from plots import plot_curves
from utils import REPO_DIR, read_text, set_seed, token_losses, train_val_split

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
    """One finished training run, as train.main returned it."""
    name: str
    out_dir: Path
    rows: list  # its evaluations: train.py's HistoryRow, one per row of its log.csv
    params: int
    batch_size: int
    block_size: int

    @property
    def steps(self):
        return self.rows[-1].step

    @property
    def seconds(self):
        return self.rows[-1].seconds

    @property
    def val(self):
        return self.rows[-1].val_loss

    @property
    def train(self):
        return self.rows[-1].train_loss

    @property
    def tokens_per_s(self):
        return self.steps * self.batch_size * self.block_size / max(self.seconds, 1e-9)


def train_run(name, out_dir, flags, device):
    """`python3 train.py <flags>`, as a function call (so torch is imported once), its printout kept in
    <out_dir>/train.txt. A run that fails stops the experiments with its one-line error."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [*map(str, flags), "--out_dir", str(out_dir), "--device", device, "--sample_tokens", "0"]
    with open(out_dir / "train.txt", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        run = train.main(argv)  # its progress bar still shows, on stderr
    return Result(name, out_dir, run.state.history, run.raw_model.num_params(), run.cfg.batch_size,
                  run.cfg.block_size)


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

    say("  " + "\n  ".join(size_verdicts(by_time, by_steps, seconds, steps, "zh")).replace("**", ""))
    time_verdict, step_verdict = size_verdicts(by_time, by_steps, seconds, steps)
    plot_curves([
        (_("Equal time: {seconds:g} s each").format(seconds=seconds), _("seconds"),
         [(r.name, [row.seconds for row in r.rows], [row.val_loss for row in r.rows]) for r in by_time.values()]),
        (_("Equal steps: {steps} each").format(steps=steps), _("step"),
         [(r.name, [row.step for row in r.rows], [row.val_loss for row in r.rows]) for r in by_steps.values()]),
    ], _("val loss"), Path(args.out) / "exp1_model_size.png", size=(11, 4.2))

    return [
        "## Experiment 1: model size · 实验1：模型大小", "",
        f"Presets from `config.py`{', with ' + ', '.join(f'{k} {v}' for k, v in plan.size_shape.items()) if plan.size_shape else ''}.",
        "", f"**Equal wall-clock time** ({seconds:g} s of training each):", "",
        *table(by_time), "", time_verdict, "",
        f"**Equal steps** ({steps} each):", "", *table(by_steps), "", step_verdict, "",
        "![validation loss at equal time and at equal steps](exp1_model_size.png)", "",
    ]


def size_verdicts(by_time, by_steps, seconds, steps, lang=None):
    """What experiment 1 shows, in two sentences: at equal time, and at equal steps."""
    best_time = min(by_time.values(), key=lambda r: r.val)
    best_steps = min(by_steps.values(), key=lambda r: r.val)
    slowest = min(by_time.values(), key=lambda r: r.tokens_per_s)
    fastest = max(by_time.values(), key=lambda r: r.tokens_per_s)
    largest = max(by_steps.values(), key=lambda r: r.params)
    time_verdict = _("At equal time ({seconds:g} s each), **{best}** reached the lowest val loss ({val:.3f}); {fastest} "
                     "processes {ratio:.0f}x more tokens per second than {slowest}.", lang).format(
        seconds=seconds, best=best_time.name, val=best_time.val, fastest=fastest.name, slowest=slowest.name,
        ratio=fastest.tokens_per_s / slowest.tokens_per_s)
    time_verdict += " " + (_("In a short run, speed matters more than size.", lang) if best_time is fastest else
                           _("{best}'s extra learning per step outweighed its lower speed.", lang).format(
                               best=best_time.name))
    step_verdict = _("At equal steps ({steps} each), **{best}** reached the lowest val loss ({val:.3f}).", lang).format(
        steps=steps, best=best_steps.name, val=best_steps.val)
    step_verdict += " " + (_("Per step, the biggest model learns the most from the same data; it just costs more "
                             "time per step.", lang) if best_steps is largest else
                           _("In only {steps} steps the biggest model ({largest}) had not yet pulled ahead.",
                             lang).format(steps=steps, largest=largest.name))
    return time_verdict, step_verdict


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
    first_val = results[best].rows[0].val_loss
    target = first_val - 0.75 * (first_val - results[best].val)

    def first_step_below(r):
        return next((row.step for row in r.rows if row.val_loss <= target), None)

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
    start_loss = results[slowest].rows[0].val_loss
    barely = start_loss - results[slowest].val < 0.1 * (start_loss - results[best].val)

    def verdict(lang=None):
        text = _("**{fastest}** converged fastest (first to val loss {target:.2f}, at step {step}); {best} ended "
                 "lowest ({val:.3f}).", lang).format(fastest=f"{fastest:g}", target=target,
                                                     step=first_step_below(results[fastest]), best=f"{best:g}",
                                                     val=results[best].val)
        if barely:
            text += " " + _("{slowest} barely moves in {steps} steps: its steps are too small.", lang).format(
                slowest=f"{slowest:g}", steps=steps)
        return text

    say("  " + verdict("zh").replace("**", ""))
    lines += ["", verdict(), "", "![validation curves for each learning rate](exp2_learning_rate.png)", ""]
    plot_curves([(_("Validation loss for each learning rate"), _("step"),
                  [(f"lr {lr:g}" + (_(" (tuned)") if lr == tuned else ""), [row.step for row in r.rows],
                    [row.val_loss for row in r.rows]) for lr, r in results.items()])],
                _("val loss"), Path(args.out) / "exp2_learning_rate.png", markersize=3)
    return lines


# ----------------------------------------------------------------------------------------------
# Experiment 3: sampling


def words(text):
    """Words as runs of letters (and apostrophes inside them), split on spaces, punctuation and digits."""
    return re.findall(r"[^\W\d_]+(?:'[^\W\d_]+)*", text)


def distinct_ngrams(text, n):
    return len({text[i : i + n] for i in range(len(text) - n + 1)})


def sample_measures(text, train_words, model, ids, start):
    generated = words(text)
    known = sum(word in train_words for word in generated) / max(len(generated), 1)
    return {"distinct chars": len(set(text)), "distinct 3-grams": distinct_ngrams(text, 3),
            "known words": known, "nll": sample_nll(model, ids, start)}


def sample_nll(model, ids, start):
    """The model's mean negative log-likelihood (nats per character) of ids[start:], scored as the whole-split
    evaluation scores a text (utils.token_losses: windows of block_size one after the other)."""
    losses = token_losses(model, ids, model.block_size, 256, "cpu").losses
    return losses[max(start, 1) - 1:].double().mean().item()


def experiment_sampling(plan, args, scale):
    say("\n【实验3】生成参数：temperature、top-k 和 top-p 如何改变输出")
    tuned = Config().learning_rate
    ckpt = Path(args.work) / f"lr-{tuned:g}" / "ckpt.pt"
    if not ckpt.is_file():
        raise UserError(_("experiment 3 samples from experiment 2's checkpoint {path}; run experiment 2 first").format(
            path=ckpt))
    model, tokenizer = load_model(ckpt, "cpu")
    text = read_text(SHAKESPEARE)
    train_words = set(words(train_val_split(text)[0]))  # the training split's words
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

    def verdict(lang=None):
        text = _("From temperature 0.3 to 1.5, distinct 3-grams go from {cold3} to {hot3}, the share of real words from "
                 "{cold_known:.0%} to {hot_known:.0%} and the model's NLL from {cold_nll:.2f} to {hot_nll:.2f}:",
                 lang).format(cold3=cold["distinct 3-grams"], hot3=hot["distinct 3-grams"],
                              cold_known=cold["known words"], hot_known=hot["known words"], cold_nll=cold["nll"],
                              hot_nll=hot["nll"])
        usual = cold["distinct 3-grams"] < hot["distinct 3-grams"] and cold["nll"] < hot["nll"]
        return text + " " + (_("a low temperature gives safer, more repetitive text, a high one more varied text "
                               "with more broken words.", lang) if usual else
                             _("at this model's stage of training the usual pattern does not show clearly.", lang))

    say("  " + verdict("zh"))
    lines += ["", verdict(), ""]
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
