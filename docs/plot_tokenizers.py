"""Compare tokenizers by bits per character: the table and the picture of docs/tokenizers.md, from recorded runs.

    python3 docs/plot_tokenizers.py RUNS_75S RUNS_10MIN --out docs/tokenizers.png
    MINIGPT_LANG=zh python3 docs/plot_tokenizers.py RUNS_75S RUNS_10MIN --out docs/tokenizers_zh.png

Each RUNS folder holds one train.py output folder per run, named CORPUS-TOKENIZER-SEED (input-char-1337,
chinese-2048-1338: TOKENIZER is char or a BPE vocabulary size), each with its console log beside it as
FOLDER.log (what train.py printed). Prints the markdown table and writes the picture.
"""

import argparse
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from i18n import _, language  # noqa: E402  (after the path above)
from plots import pyplot  # noqa: E402

CORPORA = ("input", "chinese")  # data/input.txt, data/chinese.txt


def corpus_name(corpus):
    return _("tiny Shakespeare") if corpus == "input" else _("Tang poems")


def read_run(folder):
    """What one run measured: its steps, bits per character, tokens per character and parameters."""
    log = Path(str(folder) + ".log").read_text(encoding="utf-8")
    ckpt = torch.load(Path(folder) / "ckpt.pt", map_location="cpu", weights_only=True)
    ratio = re.search(r"([0-9.]+) characters per token", log)
    weights = {t.data_ptr(): t.numel() for t in ckpt["model_state_dict"].values()}  # a tied matrix once
    return {"steps": int(re.search(r"done: (\d+) steps", log).group(1)), "bpc": ckpt["full_val_bpc"],
            "tokens_per_char": 1 / float(ratio.group(1)) if ratio else 1.0, "params": sum(weights.values()),
            "vocab": ckpt["vocab_size"]}


def collect(root):
    """{(corpus, tokenizer): {seed: run}} for every run folder under root."""
    runs = defaultdict(dict)
    for folder in sorted(Path(root).iterdir()):
        match = re.fullmatch(r"(input|chinese)-(char|\d+)-(\d+)", folder.name)
        if match and (folder / "ckpt.pt").is_file():
            runs[match.group(1), match.group(2)][int(match.group(3))] = read_run(folder)
    return runs


def order(key):
    corpus, tokenizer = key
    return CORPORA.index(corpus), 0 if tokenizer == "char" else int(tokenizer)


def name(tokenizer):
    return _("characters") if tokenizer == "char" else f"BPE {int(tokenizer):,}"


def table(short, long):
    rows = [_("| text | tokenizer | vocabulary | parameters | tokens per character | 75 s: steps | 75 s: bits per "
              "character (seeds 1337 / 1338) | 10 min: steps | 10 min: bits per character |"),
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key in sorted(set(short) | set(long), key=order):
        runs = list(short.get(key, {}).values()) + list(long.get(key, {}).values())
        first = runs[0]
        quick = [short[key][s] for s in sorted(short.get(key, {}))]
        slow = [long[key][s] for s in sorted(long.get(key, {}))]
        rows.append(" | ".join([
            "", corpus_name(key[0]), name(key[1]), f"{first['vocab']:,}", f"{first['params'] / 1e6:.2f}M",
            f"{first['tokens_per_char']:.2f}",
            " / ".join(f"{r['steps']:,}" for r in quick) or "–", " / ".join(f"{r['bpc']:.3f}" for r in quick) or "–",
            " / ".join(f"{r['steps']:,}" for r in slow) or "–", " / ".join(f"{r['bpc']:.3f}" for r in slow) or "–", ""
        ]).strip())
    return "\n".join(rows)


def draw(short, long, path):
    plt = pyplot(chinese=language() == "zh")
    fig, axes = plt.subplots(1, len(CORPORA), figsize=(10, 4.2), layout="constrained")
    for ax, corpus in zip(axes, CORPORA):
        keys = sorted({k for k in set(short) | set(long) if k[0] == corpus}, key=order)
        for offset, (runs, label, color) in enumerate(((short, _("75 seconds"), "#9db8ea"),
                                                        (long, _("10 minutes"), "#2f6fde"))):
            for i, key in enumerate(keys):
                values = [r["bpc"] for r in runs.get(key, {}).values()]
                if not values:
                    continue
                x = i + (offset - 0.5) * 0.38
                ax.bar(x, statistics.mean(values), width=0.36, color=color, label=label if i == 0 else None)
                ax.plot([x] * len(values), values, "k.", markersize=5)  # each seed
                ax.text(x, max(values), f"{statistics.mean(values):.2f}\n", ha="center", va="bottom", fontsize=8,
                        linespacing=0.6)
        ax.set_xticks(range(len(keys)), [name(k[1]) for k in keys])
        ax.set_title(corpus_name(corpus))
        ax.set_ylabel(_("bits per character (lower is better)"))
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(_("The same model and time with each tokenizer: bits per character on the whole validation split"),
                 fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("short", help="folder of the 75-second runs")
    parser.add_argument("long", help="folder of the 10-minute runs")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()
    short, long = collect(args.short), collect(args.long)
    print(table(short, long))
    draw(short, long, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
