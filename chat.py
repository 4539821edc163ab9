"""Advanced project 2, step 4: ask the Q&A model questions in the terminal.

    python3 chat.py                                  # type questions; Ctrl-D (Windows: Ctrl-Z, Enter) or Ctrl-C to leave
    python3 chat.py "37+58等于多少？"                 # one question, one answer
    python3 chat.py --checkpoint out-qa/ckpt.pt --temperature 0.5

The question is wrapped as the model saw questions in training (问：…\\n答：), and the answer is
generated until the blank line that ends every answer.
"""

import argparse
import sys

import torch

from checkpoint import load_model
from cli import HelpFormatter, UserError, run_main
from device import get_device
from i18n import _
from qa_format import END, TRAIN_COMMAND, prompt
from sampling import check_sampling_args, sample_text
from utils import set_seed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Ask a Q&A checkpoint questions.", formatter_class=HelpFormatter)
    parser.add_argument("question", nargs="?", default=None, help="answer this one question and exit")
    parser.add_argument("--checkpoint", default="out-qa/ckpt.pt", help="a checkpoint trained on data/qa.txt")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = always the most likely answer")
    parser.add_argument("--max_new_tokens", type=int, default=60, help="longest answer, in characters")
    parser.add_argument("--seed", type=int, default=1337, help="random seed, for temperature > 0")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return parser.parse_args(argv)


def problem_with(question, tokenizer):
    """Why the model can't be asked this question, or None if it can."""
    if not question.strip():
        return _("the question is empty; ask something, e.g. 37+58等于多少？")
    unknown = tokenizer.unknown(prompt(question.strip()))
    if unknown:
        return _("the model has never seen {chars}, so it can't read this question; ask it without them").format(
            chars=", ".join(map(repr, unknown)))
    return None


def answer(model, tokenizer, question, args, write):
    """Stream the answer to one (checked) question through write()."""
    context = torch.tensor([tokenizer.encode(prompt(question.strip()))], device=next(model.parameters()).device)
    write("答：")
    sample_text(model, tokenizer, context, write, args.max_new_tokens, args.temperature, stop=END, stream=True)
    write("\n")


def main(argv=None):
    args = parse_args(argv)
    try:
        check_sampling_args(args.temperature)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.max_new_tokens < 1:
        raise UserError(_("--max_new_tokens must be >= 1, got {value}").format(value=args.max_new_tokens))
    train_qa = "python3 prepare_qa_data.py && " + TRAIN_COMMAND
    model, tokenizer = load_model(args.checkpoint, get_device(args.device), train_qa)
    if tokenizer.unknown("答"):
        raise UserError(_("{path} was not trained on Q&A text; train one with {command}").format(
            path=args.checkpoint, command=train_qa))
    set_seed(args.seed)

    def write(text):
        sys.stdout.write(text)
        sys.stdout.flush()

    if args.question is not None:
        problem = problem_with(args.question, tokenizer)
        if problem:
            raise UserError(problem)
        answer(model, tokenizer, args.question, args, write)
        return
    print(_("Ask a question (for example 37+58等于多少？ or 「床前明月光」的下一句是什么？); Ctrl-D (on Windows: Ctrl-Z, then Enter) or Ctrl-C quits."))
    while True:
        try:
            question = input("问：")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        problem = problem_with(question, tokenizer)
        if problem:
            print(f"({problem})")
            continue
        try:
            answer(model, tokenizer, question, args, write)
        except KeyboardInterrupt:  # Ctrl-C while answering: stop this answer, keep chatting
            print()


if __name__ == "__main__":
    run_main(main)
