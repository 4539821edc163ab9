"""Advanced project 1: see where each attention head looks.

    python3 visualize_attention.py --prompt "ROMEO:\nI will"              # every layer and head
    python3 visualize_attention.py --prompt "ROMEO:" --layer 0 --head 2   # one head, bigger
    python3 visualize_attention.py --checkpoint out-chinese/ckpt.pt --prompt "床前明月光"

Row t of a heatmap is what the character at position t looks at when predicting the next one:
each row sums to 1, and everything above the diagonal is 0 because no position sees the future.
"""

import argparse
import warnings

import torch

from checkpoint import load_model
from cli import HelpFormatter, UserError, run_main, unescape
from device import get_device
from i18n import _, language
from plots import is_cjk, pyplot, unplottable
from utils import read_text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Draw a trained model's attention weights over a prompt as heatmaps.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", default="out/ckpt.pt", help="checkpoint written by train.py")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default="ROMEO:\\nI will", help=r"text to look at; \n means a newline")
    prompt.add_argument("--prompt_file", default=None, help="read the text from this UTF-8 file")
    parser.add_argument("--layer", type=int, default=None, help="draw only this layer (counting from 0)")
    parser.add_argument("--head", type=int, default=None, help="draw only this head (counting from 0)")
    parser.add_argument("--out", default="attention.png", help="where to save the PNG")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return parser.parse_args(argv)


def label(token):
    """A token (a character, or a BPE piece of text) as an axis label: whitespace made visible."""
    return "".join({"\n": "\\n", " ": "␣", "\t": "\\t"}.get(ch, ch) for ch in token)


def draw(maps, tokens, panels, path):
    """maps: list over layers of (H, T, T); tokens: the T tokens' texts (the labels); panels: [(layer, head)] to
    draw, in a grid of layers x heads."""
    plt = pyplot(chinese=language() == "zh" or any(map(is_cjk, "".join(tokens))))
    layers = sorted({layer for layer, _ in panels})
    heads = sorted({head for _, head in panels})
    size = max(2.6, 0.22 * len(tokens))  # inches per panel: room for every token's label
    fig, axes = plt.subplots(len(layers), len(heads), figsize=(size * len(heads) + 1, size * len(layers) + 0.6),
                             squeeze=False, layout="constrained")
    ticks = [label(token) for token in tokens]
    for row, layer in enumerate(layers):
        for col, head in enumerate(heads):
            ax = axes[row][col]
            image = ax.imshow(maps[layer][head].cpu().numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(_("layer {layer}, head {head}").format(layer=layer, head=head), fontsize=9)
            ax.set_xticks(range(len(tokens)), ticks, fontsize=7)
            ax.set_yticks(range(len(tokens)), ticks, fontsize=7)
            if row == len(layers) - 1:
                ax.set_xlabel(_("looks at (key)"), fontsize=8)
            if col == 0:
                ax.set_ylabel(_("position (query)"), fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label=_("attention weight"))
    fig.suptitle(_("Attention weights: each row sums to 1"), fontsize=11)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    device = get_device(args.device)
    model, tokenizer = load_model(args.checkpoint, device)
    prompt = read_text(args.prompt_file) if args.prompt_file else unescape(args.prompt)
    if not prompt:
        raise UserError(_("--prompt is empty; give the text whose attention you want to see"))
    try:
        ids = tokenizer.encode(prompt)
    except ValueError as e:
        raise UserError(_("{flag}: {reason}").format(flag="--prompt_file" if args.prompt_file else "--prompt",
                                                      reason=e)) from None
    if len(ids) > model.block_size:
        print(_("note: the prompt is longer than the model's block_size; showing its last {n} tokens").format(
            n=model.block_size))
        ids = ids[-model.block_size:]

    n_layer, n_head = len(model.blocks), model.blocks[0].attn.num_heads
    for flag, value, count in (("--layer", args.layer, n_layer), ("--head", args.head, n_head)):
        if value is not None and not 0 <= value < count:
            raise UserError(_("{flag} {value} does not exist: this model has {count}, numbered 0 to {last}").format(
                flag=flag, value=value, count=count, last=count - 1))
    layers = [args.layer] if args.layer is not None else range(n_layer)
    heads = [args.head] if args.head is not None else range(n_head)

    tokens = [tokenizer.token_text(i) for i in ids]  # the labels: one per token (a character, or a BPE piece)
    missing = unplottable("".join(tokens))
    if missing:
        print(_("note: the repo's font has no glyph for {chars} and this machine has no Chinese font, so those "
                "labels show as boxes; install one (for example Noto Sans CJK) to read them").format(chars=missing))
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
    maps = [m[0] for m in model.attention_maps(torch.tensor([ids], device=device))]  # n_layer x (H, T, T)
    draw(maps, tokens, [(layer, head) for layer in layers for head in heads], args.out)
    print(_("saved {path}: {layers} layer(s) x {heads} head(s) over {n} tokens").format(
        path=args.out, layers=len(layers), heads=len(heads), n=len(ids)))
    if len(ids) > 60:
        print(_("tip: labels get crowded past ~60 characters; a shorter --prompt reads better"))


if __name__ == "__main__":
    run_main(main)
