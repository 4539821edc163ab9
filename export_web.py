"""Your model in one HTML file: it runs in any browser, offline, with no Python and no server.

    python3 export_web.py                                            # out/ckpt.pt -> mini-gpt.html
    python3 export_web.py --checkpoint out-chinese/ckpt.pt --out poems.html
    python3 export_web.py --dtype fp32                               # exact logits, twice the size

The file holds the page, the engine and the weights. The engine, web/engine.js, is model.py's forward pass in
plain JavaScript (read the two side by side); the page around it is web/page.html, with the playground's look.
Open the file by double-click, send it as a chat attachment, or put it on any static host (GitHub Pages): it
fetches nothing. In the browser's console, `miniGPT.logits(text)` and `miniGPT.generate(text, options)` call the
model directly.
"""

import argparse
import base64
import json
from pathlib import Path

import numpy as np

from bpe import BYTE_OF_ID, N_BYTES
from checkpoint import example_prompt, load_checkpoint, model_from_checkpoint, saved_model_args, training_command
from cli import HelpFormatter, UserError, run_main
from files import shown_path, write_atomically
from i18n import _
from qa_format import looks_like_qa
from utils import REPO_DIR

WEB = REPO_DIR / "web"
# Every model option a checkpoint can carry, and the values web/engine.js computes exactly as model.py does. The
# sizes (n_embd, num_heads, n_layer, block_size) are numbers it reads; dropout does nothing when generating.
ENGINE_SUPPORTS = {"position": ("learned", "rope"), "qk_norm": (False, True), "head_bias": (False, True)}
SIZES = ("n_embd", "num_heads", "n_layer", "block_size", "dropout")
DTYPES = {"fp16": np.float16, "fp32": np.float32}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Export a checkpoint as one HTML file that runs the model in any "
                                                 "browser, offline.", formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", default="out/ckpt.pt", help="a checkpoint written by train.py")
    parser.add_argument("--out", default="mini-gpt.html", help="the HTML file to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16",
                        help="how the weights are stored: fp16 (half the size) or fp32 (exactly the model's logits)")
    return parser.parse_args(argv)


def unsupported(args):
    """The options of this model that the engine does not compute (an empty list when it can be exported)."""
    return [f"{name} {value}" for name, value in args.items()
            if name not in SIZES and value not in ENGINE_SUPPORTS.get(name, ())]


def weights_blob(model, dtype):
    """Every weight the engine reads, as one little-endian byte string, and where each tensor sits in it. The output
    layer is tied to the token embedding (model.py), so it is stored once."""
    tensors, parts, offset = {}, [], 0
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        data = tensor.detach().float().cpu().numpy().astype(np.dtype(DTYPES[dtype]).newbyteorder("<"))
        raw = data.tobytes()
        raw += b"\0" * (-len(raw) % 4)  # each tensor starts on a 4-byte boundary
        tensors[name] = {"offset": offset, "shape": list(data.shape)}
        parts.append(raw)
        offset += len(raw)
    return b"".join(parts), tensors


def tokenizer_data(tokenizer):
    """What web/engine.js needs to encode and decode: the characters in id order, or BPE's merges and bytes."""
    if tokenizer.kind == "bpe":
        return {"kind": "bpe", "merges": [list(pair) for pair in tokenizer.merges],
                "byte_of_id": [BYTE_OF_ID[i] for i in range(N_BYTES)]}
    return {"kind": "char", "itos": [tokenizer.itos[i] for i in range(tokenizer.vocab_size)]}


def model_card(path, ckpt, model, tokenizer, qa):
    return {"name": Path(path).parent.name, "data": shown_path(ckpt.get("data", "?")), "steps": ckpt.get("step"),
            "full_val_loss": ckpt.get("full_val_loss"), "full_val_bpc": ckpt.get("full_val_bpc"),
            "parameters": model.num_params(), "vocab_size": tokenizer.vocab_size, "tokenizer": tokenizer.kind,
            "command": training_command(ckpt), "qa": qa, "example": example_prompt(ckpt, tokenizer, qa)}


def page(model, tokenizer, card, args_of_model, dtype):
    """The HTML: web/page.html with the playground's style, the model's data, the weights and the engine inlined."""
    blob, tensors = weights_blob(model, dtype)
    config = {**{k: v for k, v in args_of_model.items() if k != "dropout"}, "vocab_size": tokenizer.vocab_size}
    data = {"config": config, "tensors": tensors, "dtype": dtype, "tokenizer": tokenizer_data(tokenizer),
            "card": card}
    # In a <script> block, only "</" could end it early: JSON lets us write it as "<\/".
    model_json = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    html = (WEB / "page.html").read_text(encoding="utf-8")
    for key, value in (("__TITLE__", f"Mini-GPT · {card['name']}"),
                       ("__STYLE__", (REPO_DIR / "static" / "style.css").read_text(encoding="utf-8")),
                       ("__MODEL__", model_json), ("__WEIGHTS__", base64.b64encode(blob).decode("ascii")),
                       ("__ENGINE__", (WEB / "engine.js").read_text(encoding="utf-8"))):
        html = html.replace(key, value, 1)
    return html


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    if out.is_dir():
        raise UserError(_("--out {path} is a folder; give a file name such as my-model.html").format(path=out))
    ckpt = load_checkpoint(args.checkpoint, "cpu")
    model, tokenizer = model_from_checkpoint(ckpt, "cpu")
    args_of_model = saved_model_args(ckpt.get("config", {}), ckpt["model_state_dict"])
    missing = unsupported(args_of_model)
    if missing:
        raise UserError(_("{path} can't be exported: web/engine.js does not compute {what}; nothing was "
                          "written").format(path=args.checkpoint, what=", ".join(missing)))
    qa = looks_like_qa(tokenizer, ckpt.get("data"))
    html = page(model, tokenizer, model_card(args.checkpoint, ckpt, model, tokenizer, qa), args_of_model, args.dtype)
    write_atomically(out, lambda f: f.write(html.encode("utf-8")))  # whole or not at all
    print(_("wrote {path}: {size:.1f} MB ({dtype} weights, {params:.2f}M parameters). Open it in any browser, "
            "offline, or send it to a friend").format(path=out, size=out.stat().st_size / 1e6, dtype=args.dtype,
                                                      params=model.num_params() / 1e6))


if __name__ == "__main__":
    run_main(main)
