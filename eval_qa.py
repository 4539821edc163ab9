"""Advanced project 2, step 3: how often does the Q&A model answer held-out questions exactly right?

    python3 eval_qa.py                                   # out-qa/ckpt.pt on data/qa_heldout.tsv
    python3 eval_qa.py --checkpoint out-qa/ckpt.pt --out docs/qa.md

Answers are generated greedily (temperature 0) until the blank line that ends an answer, then compared
with the expected answer exactly. Next to each score is a baseline that needs no model: for authors,
always naming the poet who wrote the most poems asked about in training.
"""

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from checkpoint import load_model
from cli import HelpFormatter, UserError, run_main
from device import get_device
from files import shown_path
from i18n import _
from qa_format import END, TRAIN_COMMAND, prompt
from utils import REPO_DIR, read_text

def kinds():
    """kind -> what it is, in the table (in the learner's language)."""
    return {
        "add2": _("2-digit addition (e.g. 37+58)"),
        "add3": _("3-digit addition"),
        "sub2": _("2-digit subtraction"),
        "sub3": _("3-digit subtraction"),
        "poem_next": _("the next line of a poem"),
        "poem_author": _("the author of a poem"),
        "poem_line_author": _("who wrote a line"),
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Exact-match accuracy of a Q&A checkpoint on held-out questions.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", default="out-qa/ckpt.pt", help="a checkpoint trained on data/qa.txt")
    parser.add_argument("--heldout", default=str(REPO_DIR / "data" / "qa_heldout.tsv"),
                        help="held-out questions from prepare_qa_data.py")
    parser.add_argument("--train_text", default=str(REPO_DIR / "data" / "qa.txt"),
                        help="the training text, for the baseline")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    parser.add_argument("--batch_size", type=int, default=256, help="questions answered at once")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return parser.parse_args(argv)


def read_heldout(path):
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        parts = line.split("\t")
        if len(parts) != 3:
            raise UserError(_("{path}, line {number}: expected kind, question and answer separated by tabs").format(
                path=path, number=number))
        rows.append(tuple(parts))
    return rows


@torch.no_grad()
def answer_all(model, tokenizer, questions, batch_size, max_new_tokens, device, progress=None):
    """Greedy answers to questions, batched: questions whose prompts have the same length go together."""
    answers = {}
    by_length = defaultdict(list)
    for q in questions:
        by_length[len(tokenizer.encode(prompt(q)))].append(q)
    for group in by_length.values():
        for i in range(0, len(group), batch_size):
            batch = group[i : i + batch_size]
            idx = torch.tensor([tokenizer.encode(prompt(q)) for q in batch], device=device)
            texts = [""] * len(batch)
            decoders = [tokenizer.decoder() for _ in batch]  # a BPE token may end inside a character
            for token in model.generate_stream(idx, max_new_tokens, temperature=0):
                for row, t in enumerate(token[:, 0].tolist()):
                    texts[row] += decoders[row].decode([t])
                if all(END in text for text in texts):
                    break
            for q, text in zip(batch, texts):
                answers[q] = text.split(END)[0].strip()
            if progress is not None:
                progress.update(len(batch))
    return answers


def pick_examples(rows, answers):
    """Of each kind of question, the first one answered right and the first answered wrong (when there is one):
    (kind, question, expected, answer) in the kinds' order."""
    picked = []
    for kind in kinds():
        for right in (True, False):
            row = next(((k, q, a) for k, q, a in rows if k == kind and (answers[q] == a) == right), None)
            if row:
                picked.append((*row, answers[row[1]]))
    return picked


def most_frequent_author(train_text):
    """The poet most often named in the training text's answers about authors."""
    authors = re.findall(r"问：(?:《.*?》的作者是谁|「.*?」是谁写的)？\n答：(.*?)\n", train_text)
    return Counter(authors).most_common(1)[0][0] if authors else None


def main(argv=None):
    args = parse_args(argv)
    if args.batch_size < 1:
        raise UserError(_("--batch_size must be >= 1, got {value}").format(value=args.batch_size))
    device = get_device(args.device)
    model, tokenizer = load_model(args.checkpoint, device, "python3 prepare_qa_data.py && " + TRAIN_COMMAND)
    if not Path(args.heldout).is_file():
        raise UserError(_("no held-out questions at {path}; make them first with python3 prepare_qa_data.py").format(
            path=shown_path(args.heldout)))
    rows = read_heldout(args.heldout)
    unknown = tokenizer.unknown("".join(prompt(q) for _, q, _ in rows))
    if unknown:
        raise UserError(_("{path} does not know {chars}: it was not trained on the text {heldout} was made with. "
                          "Train it with --data data/qa.txt").format(path=args.checkpoint, heldout=shown_path(args.heldout),
                                                                     chars=", ".join(map(repr, unknown[:10]))))
    # The longest answer in tokens (a character model may never have seen some answers' characters)
    longest = max(len(a + END) if tokenizer.kind == "char" else len(tokenizer.encode(a + END)) for _, _, a in rows)
    with tqdm(total=len(rows), desc=_("answering"), unit="q") as bar:
        answers = answer_all(model, tokenizer, [q for _, q, _ in rows], args.batch_size, longest + 2,
                             device, bar)

    top_author = most_frequent_author(read_text(args.train_text)) if Path(args.train_text).is_file() else None
    table = [_("| questions | held out | exact match | baseline |"), "| --- | ---: | ---: | ---: |"]
    scores = {}
    for kind, label in kinds().items():
        items = [(q, a) for k, q, a in rows if k == kind]
        if not items:
            continue
        right = sum(answers[q] == a for q, a in items)
        scores[kind] = right / len(items)
        if kind in ("poem_author", "poem_line_author") and top_author:
            base = _("{share:.1%} (always {author})").format(
                share=sum(a == top_author for _, a in items) / len(items), author=top_author)
        elif kind.startswith(("add", "sub")):
            base = _("0% (a memorised table: no held-out pair was seen)")
        else:
            common = Counter(a for _, a in items).most_common(1)[0][0]
            base = _("{share:.1%} (the most common answer)").format(
                share=sum(a == common for _, a in items) / len(items))
        table.append(f"| {label} | {len(items)} | **{scores[kind]:.1%}** | {base} |")
    print("\n".join(table))
    examples = pick_examples(rows, answers)
    print("\n" + _("examples:"))
    for k, q, a, got in examples:
        verdict = _("right") if got == a else _("expected {answer!r}").format(answer=a)
        print(f"  {q} -> {got!r} ({verdict})")
    if args.out:
        lines = [_("| question | expected | model's answer |"), "| --- | --- | --- |"]
        lines += [f"| {q} | {a} | {got}{' ✓' if got == a else ' ✗'} |" for _, q, a, got in examples]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        header = _("Exact match of `{checkpoint}` on the held-out questions of `{heldout}`, answers generated "
                   "greedily until the blank line that ends an answer (`python3 eval_qa.py`).").format(
            checkpoint=args.checkpoint, heldout=shown_path(args.heldout))
        examples_title = _("Some held-out questions and the answers given:")
        Path(args.out).write_text(header + "\n\n" + "\n".join(table) + "\n\n" + examples_title + "\n\n"
                                  + "\n".join(lines) + "\n", encoding="utf-8")
        print("\n" + _("wrote {path}").format(path=args.out))


if __name__ == "__main__":
    run_main(main)
