"""Advanced project 2, step 1: build a question-and-answer text for train.py, in Chinese.

    python3 prepare_qa_data.py                 # writes data/qa.txt and data/qa_heldout.tsv
    python3 train.py --data data/qa.txt --out_dir out-qa
    python3 eval_qa.py                         # exact match on the held-out questions
    python3 chat.py                            # ask it yourself

Every example has the same shape, and a blank line ends each answer:

    问：37+58等于多少？
    答：95

Two kinds of question:
- arithmetic, which tests generalisation: the held-out sums and differences are pairs of numbers
  that never appear in training (2-digit addition; also 3-digit addition and subtraction);
- poem knowledge, which tests recall: 「床前明月光」的下一句是什么？ and 《静夜思》的作者是谁？, built from
  the first --num_poems poems of data/chinese.txt (the 唐诗三百首). The poems' own text is in the
  training mix; a held-out question asks about a line or a title that no training question asks about.

Deterministic: the same --seed gives the same files.
"""

import argparse
import random
import re
from qa_format import END, TRAIN_COMMAND, example
from collections import Counter
from pathlib import Path

from cli import UserError, run_main
from i18n import _
from files import shown_path
from utils import REPO_DIR, read_text

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Build the Q&A training text and its held-out questions.")
    parser.add_argument("--poems", default=str(REPO_DIR / "data" / "chinese.txt"), help="poems to ask about")
    parser.add_argument("--num_poems", type=int, default=313, help="ask about the first this many poems")
    parser.add_argument("--poem_repeats", type=int, default=4, help="copies of those poems' text in the mix")
    parser.add_argument("--three_digit", type=int, default=3000,
                        help="training examples of 3-digit addition, and again of 3-digit subtraction")
    parser.add_argument("--add2_repeats", type=int, default=3,
                        help="copies of each 2-digit addition in the mix: the skill the target is set on")
    parser.add_argument("--heldout_share", type=float, default=0.1, help="share of questions held out")
    parser.add_argument("--out", default=str(REPO_DIR / "data" / "qa.txt"), help="the training text")
    parser.add_argument("--heldout", default=str(REPO_DIR / "data" / "qa_heldout.tsv"),
                        help="the held-out questions: kind, question, answer (tab-separated)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# Arithmetic


def split_pairs(pairs, share, rng):
    """Shuffle pairs and return (train, held out): the held-out pairs never appear in training."""
    pairs = sorted(pairs)
    rng.shuffle(pairs)
    n_held = max(1, round(len(pairs) * share))
    return pairs[n_held:], pairs[:n_held]


def sample_pairs(low, high, count, rng, ordered=False):
    """count distinct pairs (a, b) with low <= a, b <= high (a >= b if ordered), in a fixed order."""
    pairs = set()
    while len(pairs) < count:
        a, b = rng.randint(low, high), rng.randint(low, high)
        pairs.add((max(a, b), min(a, b)) if ordered else (a, b))
    return sorted(pairs)


def kind_rng(seed, kind):
    """Each kind of question draws from its own random stream, so changing how many of one kind there are
    (--three_digit) leaves the other kinds' held-out questions as they were: mixes stay comparable."""
    return random.Random(f"{seed}:{kind}")


def arithmetic(args):
    """(training examples, held-out rows). Every 2-digit sum is covered; 3-digit ones are sampled."""
    add2 = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    sub2 = [(a, b) for a in range(10, 100) for b in range(10, a + 1)]
    n3 = args.three_digit + round(args.three_digit * args.heldout_share)
    add3 = sample_pairs(100, 999, n3, kind_rng(args.seed, "add3 sample"))
    sub3 = sample_pairs(100, 999, n3, kind_rng(args.seed, "sub3 sample"), ordered=True)
    train, held = [], []
    for kind, pairs, op in (("add2", add2, "+"), ("sub2", sub2, "-"), ("add3", add3, "+"), ("sub3", sub3, "-")):
        train_pairs, held_pairs = split_pairs(pairs, args.heldout_share, kind_rng(args.seed, kind))
        value = (lambda a, b: a + b) if op == "+" else (lambda a, b: a - b)
        copies = args.add2_repeats if kind == "add2" else 1
        train += [example(f"{a}{op}{b}等于多少？", value(a, b)) for a, b in train_pairs] * copies
        held += [(kind, f"{a}{op}{b}等于多少？", str(value(a, b))) for a, b in held_pairs]
    return train, held


# ----------------------------------------------------------------------------------------------
# Poems


def read_poems(path, count):
    """The first count poems of a file laid out as: title, author, the poem's lines, a blank line."""
    blocks = [b.strip("\n") for b in read_text(path).split("\n\n") if b.strip()][:count]
    poems = []
    for block in blocks:
        lines = block.split("\n")
        if len(lines) >= 3:
            poems.append({"title": lines[0], "author": lines[1], "text": block,
                          "lines": [c for c in re.split(r"[，。？！；、\n]", "\n".join(lines[2:])) if c]})
    return poems


def poem_questions(poems, share, seed):
    """(training examples, held-out rows) about which line follows which, and who wrote what."""
    line_counts = Counter(line for p in poems for line in p["lines"])
    title_counts = Counter(p["title"] for p in poems)
    nexts = [(f"「{a}」的下一句是什么？", b) for p in poems for a, b in zip(p["lines"], p["lines"][1:])
             if line_counts[a] == 1]  # a line that occurs twice has no single answer
    authors = [(f"《{p['title']}》的作者是谁？", p["author"]) for p in poems if title_counts[p["title"]] == 1]
    train, held = [], []
    for kind, questions in (("poem_next", nexts), ("poem_author", authors)):
        train_q, held_q = split_pairs(questions, share, kind_rng(seed, kind))
        train += [example(q, a) for q, a in train_q]
        held += [(kind, q, a) for q, a in held_q]
    return train, held


def main(argv=None):
    args = parse_args(argv)
    if not 0 < args.heldout_share < 1:
        raise UserError(_("--heldout_share must be between 0 and 1, got {value}").format(value=args.heldout_share))
    if min(args.num_poems, args.three_digit, args.poem_repeats) < 0 or args.add2_repeats < 1:
        raise UserError(_("--num_poems, --three_digit and --poem_repeats must be >= 0, --add2_repeats >= 1"))
    poems = read_poems(args.poems, args.num_poems)
    if not poems:
        raise UserError(_("{path} has no poems laid out as title, author, lines and a blank line").format(
            path=args.poems))
    math_train, math_held = arithmetic(args)
    poem_train, poem_held = poem_questions(poems, args.heldout_share, args.seed)
    pieces = math_train + poem_train + [p["text"] + END for p in poems] * args.poem_repeats
    kind_rng(args.seed, "order").shuffle(pieces)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("".join(pieces), encoding="utf-8")
    rows = math_held + poem_held
    Path(args.heldout).write_text("".join(f"{k}\t{q}\t{a}\n" for k, q, a in rows), encoding="utf-8")
    counts = Counter(kind for kind, _, _ in math_held + poem_held)
    print(_("wrote {path}: {math:,} arithmetic and {poem:,} poem questions, {poems} poems x {repeats}, {chars:,} "
            "characters").format(path=shown_path(args.out), math=len(math_train), poem=len(poem_train), poems=len(poems),
                                 repeats=args.poem_repeats, chars=sum(map(len, pieces))))
    print(_("wrote {path}: held-out {counts}").format(
        path=shown_path(args.heldout), counts=", ".join(f"{k} {n}" for k, n in sorted(counts.items()))))
    print(_("next: {command}   (see README, advanced project 2)").format(command=TRAIN_COMMAND))


if __name__ == "__main__":
    run_main(main)
