"""Sample text from a trained Mini-GPT checkpoint.

    python3 generate.py                                    # continue from a new line, out/ckpt.pt
    python3 generate.py --prompt "ROMEO:" --temperature 0.8 --top_k 40
    python3 generate.py --temperature 0                    # greedy: always the most likely character
    python3 generate.py --stream --top_p 0.9               # print characters as they come
    python3 generate.py --no_cache                         # without the KV cache: feel the difference
"""

import argparse
import sys
import time

import torch

from checkpoint import load_model
from cli import HelpFormatter, UserError, run_main, unescape
from device import get_device
from i18n import _
from sampling import check_sampling_args, sample_text
from utils import read_text, set_seed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Sample text from a trained Mini-GPT checkpoint.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--checkpoint", default="out/ckpt.pt", help="checkpoint written by train.py")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default="\\n", help=r"text to continue; \n means a newline")
    prompt.add_argument("--prompt_file", default=None, help="read the text to continue from this UTF-8 file")
    parser.add_argument("--max_new_tokens", type=int, default=500,
                        help="tokens to generate per sample (characters, for a character-level model)")
    parser.add_argument("--temperature", type=float, default=0.8, help="randomness: 0 = greedy, <1 safer, >1 wilder")
    parser.add_argument("--top_k", type=int, default=None, help="sample only from the k most likely tokens")
    parser.add_argument("--top_p", type=float, default=None,
                        help="sample only from the most likely tokens that together reach probability p")
    parser.add_argument("--stop", default=None, help=r"end a sample where this text appears (\n = newline)")
    parser.add_argument("--num_samples", type=int, default=1, help="how many samples to print")
    parser.add_argument("--stream", action="store_true", help="print each character as soon as it is sampled")
    parser.add_argument("--no_cache", action="store_true", help="recompute the whole window every step instead of reusing cached keys and values (slower)")
    parser.add_argument("--seed", type=int, default=1337, help="random seed (same seed, same text)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        check_sampling_args(args.temperature, args.top_k, args.top_p)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.max_new_tokens < 0:
        raise UserError(_("--max_new_tokens must be >= 0, got {value}").format(value=args.max_new_tokens))
    if args.num_samples < 1:
        raise UserError(_("--num_samples must be >= 1, got {value}").format(value=args.num_samples))
    if args.stop == "":
        raise UserError(_("--stop is empty; give the text that should end a sample"))
    prompt = read_text(args.prompt_file) if args.prompt_file else unescape(args.prompt)
    if not prompt:
        raise UserError(_("--prompt is empty; give at least one character (the default is a newline)"))

    device = get_device(args.device)
    model, tokenizer = load_model(args.checkpoint, device)
    prompt_flag = "--prompt_file" if args.prompt_file else "--prompt"
    for flag, text in ((prompt_flag, prompt), ("--stop", args.stop and unescape(args.stop))):
        try:
            if text:
                tokenizer.encode(text)
        except ValueError as e:
            raise UserError(_("{flag}: {reason}").format(flag=flag, reason=e)) from None

    def write(text):
        sys.stdout.write(text)
        if args.stream:
            sys.stdout.flush()

    set_seed(args.seed)
    context = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)  # (1, T)
    for i in range(args.num_samples):
        if args.num_samples > 1:
            print(_("---------- sample {n} ----------").format(n=i + 1))
        write(prompt)
        start = time.perf_counter()
        count = sample_text(model, tokenizer, context, write, args.max_new_tokens, args.temperature, args.top_k,
                            args.top_p, stop=args.stop and unescape(args.stop), stream=args.stream,
                            use_cache=not args.no_cache)
        seconds = time.perf_counter() - start
        print()
        if args.stream:  # a speed line for the curious, on stderr so piped output stays clean
            speed = _("[{count} tokens in {seconds:.2f}s: {rate:.0f} tokens/s]").format(
                count=count, seconds=seconds, rate=count / max(seconds, 1e-9))
            print(speed + (_(" (no KV cache)") if args.no_cache else ""), file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
