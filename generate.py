"""Sample text from a trained Mini-GPT checkpoint.

    python3 generate.py                                   # continue from a new line, out/ckpt.pt
    python3 generate.py --prompt "ROMEO:" --temperature 0.8 --top_k 40
    python3 generate.py --temperature 0                   # greedy: always the most likely character
"""

import argparse

import torch

from model import check_sampling_args
from utils import UserError, get_device, load_checkpoint, model_from_checkpoint, run_main, set_seed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Sample text from a trained Mini-GPT checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", default="out/ckpt.pt", help="checkpoint written by train.py")
    parser.add_argument("--prompt", default="\n", help="text to continue (only characters seen in training)")
    parser.add_argument("--max_new_tokens", type=int, default=500, help="characters to generate per sample")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="randomness: 0 = greedy, <1 safer, >1 wilder")
    parser.add_argument("--top_k", type=int, default=None, help="sample only from the k most likely characters")
    parser.add_argument("--num_samples", type=int, default=1, help="how many samples to print")
    parser.add_argument("--seed", type=int, default=1337, help="random seed (same seed, same text)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        check_sampling_args(args.temperature, args.top_k)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.max_new_tokens < 0:
        raise UserError(f"--max_new_tokens must be >= 0, got {args.max_new_tokens}")
    if args.num_samples < 1:
        raise UserError(f"--num_samples must be >= 1, got {args.num_samples}")
    if not args.prompt:
        raise UserError("--prompt is empty; give at least one character (the default is a newline)")

    device = get_device(args.device)
    model, tokenizer = model_from_checkpoint(load_checkpoint(args.checkpoint, device), device)
    try:
        prompt_ids = tokenizer.encode(args.prompt)
    except ValueError as e:
        raise UserError(f"--prompt: {e}") from None

    set_seed(args.seed)
    context = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T)
    for i in range(args.num_samples):
        out = model.generate(context, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k)
        if args.num_samples > 1:
            print(f"---------- sample {i + 1} ----------")
        print(tokenizer.decode(out[0].tolist()))


if __name__ == "__main__":
    run_main(main)
