"""Advanced project 3, step 3: does the code model write Python that parses?

    python3 eval_code.py                                   # out-code/ckpt.pt, temperatures 0.5 0.8 1.0
    python3 eval_code.py --samples 30 --out docs/code.md

For each temperature it generates samples that start with `def ` and with `class `, cuts out the
top-level block each one begins (see top_level_block) and asks Python's own parser, ast.parse,
whether it is valid Python.
"""

import argparse
import ast
from pathlib import Path

import torch
from tqdm import tqdm

from checkpoint import load_checkpoint, load_model
from cli import HelpFormatter, UserError, run_main
from device import get_device
from i18n import _
from sampling import check_sampling_args
from utils import set_seed

PROMPTS = ("def ", "class ")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Parse rate of a code model's generated functions and classes.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", default="out-code/ckpt.pt", help="a checkpoint trained on data/code.txt")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.5, 0.8, 1.0], help="to compare")
    parser.add_argument("--samples", type=int, default=20, help="samples per prompt and temperature")
    parser.add_argument("--max_new_tokens", type=int, default=1500, help="characters per sample")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return parser.parse_args(argv)


def top_level_block(text):
    """The `def` or `class` block that text starts with, or None if the sample ends inside it.

    Python marks a block by indentation. The header runs to the first line that ends with a colon (a
    long signature may take several lines). The body's indentation is that of its first non-blank
    line, and the block goes on through every line that is blank or indented at least that deep; the
    first line indented less ends it. (Most functions in the corpus are methods, so after a body at
    8 spaces the model often goes on with the next method at 4: that line ends the block too.)
    If no such line comes, the sample ran out inside the block.
    """
    lines = text.split("\n")
    header_end = next((i for i, line in enumerate(lines) if line.split("#")[0].rstrip().endswith(":")), None)
    if header_end is None:
        return None
    body_indent = None
    for i in range(header_end + 1, len(lines)):
        line = lines[i]
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if body_indent is None:
            body_indent = indent
            if indent == 0:  # no indented body at all: the block is just its header (and won't parse)
                return "\n".join(lines[:i]).rstrip() + "\n"
        elif indent < body_indent:
            return "\n".join(lines[:i]).rstrip() + "\n"
    return None


def parses(code):
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError):  # ValueError: a null byte
        return False


def main(argv=None):
    args = parse_args(argv)
    try:
        for t in args.temperatures:
            check_sampling_args(t)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.samples < 1 or args.max_new_tokens < 1:
        raise UserError(_("--samples and --max_new_tokens must be >= 1"))
    device = get_device(args.device)
    model, tokenizer = load_model(args.checkpoint, device)
    missing = [p for p in PROMPTS if tokenizer.unknown(p)]
    if missing or tokenizer.unknown("\n"):
        raise UserError(_("{path} was not trained on Python code; train one with python3 prepare_code_data.py && "
                          "python3 train.py --data data/code.txt --out_dir out-code").format(path=args.checkpoint))
    val = load_checkpoint(args.checkpoint).get("best_val_loss")
    rows, examples = [], {}
    for temperature in tqdm(args.temperatures, desc=_("temperatures")):
        counts = {"blocks": 0, "parsed": 0, "unfinished": 0}
        for text_prompt in PROMPTS:
            set_seed(args.seed)
            context = torch.tensor([tokenizer.encode(text_prompt)] * args.samples, device=device)
            out = model.generate(context, args.max_new_tokens, temperature=temperature)
            for ids in out.tolist():
                block = top_level_block(tokenizer.decode(ids))
                if block is None:
                    counts["unfinished"] += 1
                    continue
                counts["blocks"] += 1
                ok = parses(block)
                counts["parsed"] += ok
                if ok and text_prompt == "def ":
                    examples.setdefault(temperature, block)
        rate = counts["parsed"] / max(counts["blocks"], 1)
        rows.append(f"| {temperature:g} | {counts['blocks']} | {counts['parsed']} | **{rate:.0%}** | "
                    f"{counts['unfinished']} |")
    table = [_("| temperature | complete blocks | parse with ast.parse | parse rate | unfinished (left out) |"),
             "| ---: | ---: | ---: | ---: | ---: |", *rows]
    print(_("checkpoint {path}: best val loss {val:.4f}").format(path=args.checkpoint, val=val) if val is not None else "")
    print("\n".join(table))
    if examples:
        best = min(examples)
        print("\n" + _("a generated function that parses (temperature {t:g}):").format(t=best) + "\n\n" + examples[best])
    if args.out:
        text = (_("Best val loss of `{path}`: **{val:.4f}**.").format(path=args.checkpoint, val=val) + "\n\n"
                if val is not None else "")
        text += _("{samples} samples of {n} characters per prompt (`def `, `class `) and temperature:").format(
            samples=args.samples, n=args.max_new_tokens) + "\n\n" + "\n".join(table) + "\n"
        if examples:
            text += ("\n" + _("a generated function that parses (temperature {t:g}):").format(t=best)
                     + f"\n\n```python\n{examples[best]}```\n")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
        print(_("wrote {path}").format(path=args.out))


if __name__ == "__main__":
    run_main(main)
