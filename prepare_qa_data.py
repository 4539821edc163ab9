"""Advanced project 2, step 1: build a question-and-answer text for train.py, in Chinese.

    python3 prepare_qa_data.py                 # writes data/qa.txt and data/qa_heldout.tsv
    python3 train.py --data data/qa.txt --out_dir out-qa --loss_on answers
    python3 eval_qa.py                         # exact match on the held-out questions
    python3 chat.py                            # ask it yourself

Every example has the same shape, and a blank line ends each answer:

    问：37+58等于多少？
    答：95

Two kinds of question:
- arithmetic, which tests generalisation: the held-out sums and differences are pairs of numbers
  that never appear in training (2-digit addition and subtraction; also 3-digit ones);
- poem knowledge, which tests recall: 「床前明月光」的下一句是什么？, 《静夜思》的作者是谁？ and
  「床前明月光」是谁写的？, built from the first --num_poems poems of data/chinese.txt (the 唐诗三百首).
  A held-out question asks about a line or a title that no training question asks about.

The poems themselves are in the mix twice over: as written (title, author, lines), and rewritten as
plain sentences (--rewrites), each naming the poem and its author and stating which line follows which:

    李白《静夜思》里，「床前明月光」的下一句是「疑是地上霜」。

A fact read in one fixed form is hard for a model to pull out with a question; the same fact read in
several forms is easy (Allen-Zhu & Li, "Physics of Language Models, Part 3.1", arXiv 2309.14316). The
rewrites are plain text, never questions, so every held-out fact is in the training text but no held-out
question is. --knowledge_out writes that poem text alone, for pretraining on it first.

Deterministic: the same --seed gives the same files.
"""

import argparse
import random
import re
from collections import Counter
from pathlib import Path

from cli import UserError, run_main
from files import shown_path
from i18n import _
from qa_format import END, TRAIN_COMMAND, example
from utils import REPO_DIR, read_text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Build the Q&A training text and its held-out questions.")
    parser.add_argument("--poems", default=str(REPO_DIR / "data" / "chinese.txt"), help="poems to ask about")
    parser.add_argument("--num_poems", type=int, default=313, help="ask about the first this many poems")
    parser.add_argument("--poem_repeats", type=int, default=10, help="copies of those poems' text in the mix")
    parser.add_argument("--rewrites", type=int, default=1,
                        help="copies of the poems rewritten as sentences, each worded anew (0 = the poems only as "
                             "written)")
    parser.add_argument("--three_digit", type=int, default=2000,
                        help="training examples of 3-digit addition, and again of 3-digit subtraction")
    parser.add_argument("--add2_repeats", type=int, default=3,
                        help="copies of each 2-digit addition in the mix")
    parser.add_argument("--sub2_repeats", type=int, default=3, help="copies of each 2-digit subtraction in the mix")
    parser.add_argument("--heldout_share", type=float, default=0.1, help="share of questions held out")
    parser.add_argument("--out", default=str(REPO_DIR / "data" / "qa.txt"), help="the training text")
    parser.add_argument("--heldout", default=str(REPO_DIR / "data" / "qa_heldout.tsv"),
                        help="the held-out questions: kind, question, answer (tab-separated)")
    parser.add_argument("--knowledge_out", default=None,
                        help="also write the poem text of the mix alone (no questions) here, to pretrain on")
    parser.add_argument("--seed", type=int, default=0, help="another seed holds out other questions")
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
        copies = {"add2": args.add2_repeats, "sub2": args.sub2_repeats}.get(kind, 1)
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
    """(training examples, held-out rows) about which line follows which, who wrote a poem, and whose a line is."""
    line_counts = Counter(line for p in poems for line in p["lines"])
    title_counts = Counter(p["title"] for p in poems)
    # A line or a title that occurs twice has no single answer, so it is never asked about.
    nexts = [(f"「{a}」的下一句是什么？", b) for p in poems for a, b in zip(p["lines"], p["lines"][1:])
             if line_counts[a] == 1]
    authors = [(f"《{p['title']}》的作者是谁？", p["author"]) for p in poems if title_counts[p["title"]] == 1]
    line_authors = [(f"「{line}」是谁写的？", p["author"]) for p in poems for line in p["lines"]
                    if line_counts[line] == 1]
    train, held = [], []
    for kind, questions in (("poem_next", nexts), ("poem_author", authors), ("poem_line_author", line_authors)):
        train_q, held_q = split_pairs(questions, share, kind_rng(seed, kind))
        train += [example(q, a) for q, a in train_q]
        held += [(kind, q, a) for q, a in held_q]
    return train, held


# Ways to say one fact in a sentence. Each names the poem and its author, so every sentence ties its lines
# to both; the wording changes from copy to copy.
FOLLOWS = (
    "{author}《{title}》里，「{a}」的下一句是「{b}」。",
    "《{title}》是{author}写的，其中「{a}」后面接着「{b}」。",
    "「{a}」，「{b}」——{author}的《{title}》。",
    "在{author}的《{title}》中，「{b}」紧跟在「{a}」之后。",
)
WROTE = (
    "《{title}》的作者是{author}。",
    "{author}写了《{title}》。",
    "《{title}》是{author}的诗。",
)
# A line, then its author: a model that read only "author, then lines" can't answer "whose line is this?"
# (the reversal curse: a fact learned one way round is not known the other way round)
LINE_BY = (
    "「{a}」出自{author}的《{title}》。",
    "「{a}」这一句的作者是{author}。",
    "「{a}」，{author}《{title}》。",
)


def rewrite(poem, rng):
    """One poem as plain sentences, each worded by a random choice of template: who wrote it, each pair of
    neighbouring lines in the poem's order, then each line followed by its author."""
    facts = dict(title=poem["title"], author=poem["author"])
    sentences = [rng.choice(WROTE).format(**facts)]
    sentences += [rng.choice(FOLLOWS).format(a=a, b=b, **facts) for a, b in zip(poem["lines"], poem["lines"][1:])]
    sentences += [rng.choice(LINE_BY).format(a=a, **facts) for a in poem["lines"]]
    return "\n".join(sentences) + END


def poem_text(poems, repeats, rewrites, seed):
    """The poems as written, repeats times, and rewritten as sentences, rewrites times (each copy worded anew)."""
    rng = kind_rng(seed, "rewrites")
    return [p["text"] + END for p in poems] * repeats + [rewrite(p, rng) for _ in range(rewrites) for p in poems]


def write_text(path, text):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")


def main(argv=None):
    args = parse_args(argv)
    if not 0 < args.heldout_share < 1:
        raise UserError(_("--heldout_share must be between 0 and 1, got {value}").format(value=args.heldout_share))
    sizes = (args.num_poems, args.three_digit, args.poem_repeats, args.rewrites)
    if min(sizes) < 0 or min(args.add2_repeats, args.sub2_repeats) < 1:
        raise UserError(_("--num_poems, --three_digit, --poem_repeats and --rewrites must be >= 0, --add2_repeats "
                          "and --sub2_repeats >= 1"))
    poems = read_poems(args.poems, args.num_poems)
    if not poems:
        raise UserError(_("{path} has no poems laid out as title, author, lines and a blank line").format(
            path=args.poems))
    math_train, math_held = arithmetic(args)
    poem_train, poem_held = poem_questions(poems, args.heldout_share, args.seed)
    knowledge = poem_text(poems, args.poem_repeats, args.rewrites, args.seed)
    pieces = math_train + poem_train + knowledge
    kind_rng(args.seed, "order").shuffle(pieces)
    write_text(args.out, "".join(pieces))
    if args.knowledge_out:
        kind_rng(args.seed, "knowledge order").shuffle(knowledge)  # shuffled, so validation holds no whole poem
        write_text(args.knowledge_out, "".join(knowledge))
    rows = math_held + poem_held
    write_text(args.heldout, "".join(f"{k}\t{q}\t{a}\n" for k, q, a in rows))
    counts = Counter(kind for kind, _, _ in math_held + poem_held)
    print(_("wrote {path}: {math:,} arithmetic and {poem:,} poem questions, {poems} poems x {repeats} as written "
            "and x {rewrites} rewritten, {chars:,} characters").format(
        path=shown_path(args.out), math=len(math_train), poem=len(poem_train), poems=len(poems),
        repeats=args.poem_repeats, rewrites=args.rewrites, chars=sum(map(len, pieces))))
    if args.knowledge_out:
        print(_("wrote {path}: the poems alone, {chars:,} characters, to pretrain on").format(
            path=shown_path(args.knowledge_out), chars=sum(map(len, knowledge))))
    print(_("wrote {path}: held-out {counts}").format(
        path=shown_path(args.heldout), counts=", ".join(f"{k} {n}" for k, n in sorted(counts.items()))))
    print(_("next: {command}   (see README, advanced project 2)").format(command=TRAIN_COMMAND))


if __name__ == "__main__":
    run_main(main)
