"""Share your model: export a checkpoint as a Hugging Face `transformers` folder.

    python3 -m pip install -r requirements-hf.txt
    python3 export_hf.py --checkpoint out/ckpt.pt --out hf/mini-gpt

The folder loads with nothing from this repo on the path:

    from transformers import pipeline
    generate = pipeline("text-generation", model="hf/mini-gpt")
    print(generate({json.dumps(prompt, ensure_ascii=False)}, max_new_tokens=100)[0]["generated_text"])

It holds config.json and model.safetensors, tokenizer.json (a character per token, the same ids as
CharTokenizer; or, for a model trained with --tokenizer bpe, the same byte-level BPE as bpe.py),
generation_config.json (generate.py's sampling defaults) and a model card README.md.
The weights go into the standard architecture that holds the model exactly: GPT2LMHeadModel for the
classic model (it is GPT-2's architecture), GPTNeoXForCausalLM for one trained with --position rope
(rotary positions, LayerNorm, GELU, with its residuals in sequence as here). Queries and keys
normalised by --qk_norm true, and an output layer with a bias (checkpoints from before head_bias
existed), have no counterpart in either: such a model is refused in one line.
"""

import argparse
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from bpe import library_tokenizer
from checkpoint import example_prompt, load_checkpoint, model_from_checkpoint, training_command
from cli import HelpFormatter, UserError, run_main
from files import readable_mode
from i18n import _
from qa_format import looks_like_qa, prompt as qa_prompt

MARKER = "mini_gpt_export"  # in config.json: this folder is an export, so a re-export may replace it
# What a model card says of the data each shipped text file comes from (data/README.md).
DATA_LICENCES = {
    "input.txt": "tiny Shakespeare: public-domain Shakespeare, as collected by the char-rnn project",
    "chinese.txt": "Tang poems from the chinese-poetry open-data collection (MIT licence); the poems themselves are "
                   "in the public domain",
    "qa.txt": "made by prepare_qa_data.py from arithmetic and the Tang poems of data/chinese.txt (MIT licence)",
    "code.txt": "the Python standard library's own sources (Python Software Foundation License)",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Export a checkpoint as a Hugging Face transformers folder.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", default="out/ckpt.pt", help="a checkpoint written by train.py")
    parser.add_argument("--out", default="hf/mini-gpt", help="the folder to write (an earlier export there is "
                                                             "replaced; any other folder is refused)")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# The model: GPTModel's weights under GPT2LMHeadModel's names


def architecture(model):
    """The transformers class that holds this model exactly: rotary positions are GPT-NeoX's, the rest GPT-2's."""
    return "GPTNeoXForCausalLM" if model.position_embedding is None else "GPT2LMHeadModel"


def no_counterpart(model):
    """What in this model neither architecture has a place for (an empty list when it can be exported)."""
    attn = model.blocks[0].attn
    missing = []
    if attn.qk_norm:
        missing.append(_("normalised queries and keys (--qk_norm true)"))
    if model.lm_head.bias is not None:
        missing.append(_("a bias in the output layer (a checkpoint from before head_bias existed)"))
    return missing


def gpt2_config(model, dropout):
    """config.json for GPT2LMHeadModel with this model's sizes."""
    n_embd = model.token_embedding.weight.shape[1]
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": model.token_embedding.weight.shape[0], "n_positions": model.block_size, "n_ctx": model.block_size,
        "n_embd": n_embd, "n_layer": len(model.blocks), "n_head": model.blocks[0].attn.num_heads,
        "n_inner": 4 * n_embd,
        "activation_function": "gelu",  # nn.GELU(): the exact erf form (GPT-2's own is the tanh approximation)
        "layer_norm_epsilon": 1e-5,  # nn.LayerNorm's default
        "resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout,
        "scale_attn_weights": True, "tie_word_embeddings": True, "use_cache": True, "initializer_range": 0.02,
        "bos_token_id": None, "eos_token_id": None, "torch_dtype": "float32", MARKER: True,
    }


def neox_config(model, dropout):
    """config.json for GPTNeoXForCausalLM: rotary positions on every query and key dimension, base 10000, and the
    attention and MLP residuals in sequence (use_parallel_residual false), as this model computes them."""
    n_embd = model.token_embedding.weight.shape[1]
    return {
        "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
        "vocab_size": model.token_embedding.weight.shape[0], "hidden_size": n_embd,
        "num_hidden_layers": len(model.blocks), "num_attention_heads": model.blocks[0].attn.num_heads,
        "intermediate_size": 4 * n_embd, "hidden_act": "gelu", "rotary_pct": 1.0, "rotary_emb_base": 10000,
        "max_position_embeddings": model.block_size, "layer_norm_eps": 1e-5, "use_parallel_residual": False,
        "attention_bias": True, "attention_dropout": dropout, "hidden_dropout": dropout,
        "tie_word_embeddings": False,  # both matrices are stored, so the weights are exact however it ties
        "use_cache": True, "initializer_range": 0.02, "bos_token_id": None, "eos_token_id": None,
        "torch_dtype": "float32", MARKER: True,
    }


def neox_state_dict(model):
    """GPTModel's weights under GPTNeoXForCausalLM's names. NeoX's fused projection holds, head by head, that
    head's query, key and value rows ([q_h; k_h; v_h] for each h); ours holds every query row, then every key
    row, then every value row: the same rows, reordered. Its projection has a bias, ours none: zeros."""
    weights = {"gpt_neox.embed_in.weight": model.token_embedding.weight}
    for i, block in enumerate(model.blocks):
        h = f"gpt_neox.layers.{i}."
        qkv = block.attn.qkv.weight  # (3C, C)
        heads, size = block.attn.num_heads, qkv.shape[1] // block.attn.num_heads
        per_head = qkv.view(3, heads, size, -1).transpose(0, 1).reshape(qkv.shape)  # (H, 3, hs, C) -> (3C, C)
        weights.update({
            h + "input_layernorm.weight": block.ln1.weight, h + "input_layernorm.bias": block.ln1.bias,
            h + "attention.query_key_value.weight": per_head, h + "attention.query_key_value.bias":
                torch.zeros(qkv.shape[0]),
            h + "attention.dense.weight": block.attn.proj.weight, h + "attention.dense.bias": block.attn.proj.bias,
            h + "post_attention_layernorm.weight": block.ln2.weight, h + "post_attention_layernorm.bias":
                block.ln2.bias,
            h + "mlp.dense_h_to_4h.weight": block.ffwd.net[0].weight, h + "mlp.dense_h_to_4h.bias":
                block.ffwd.net[0].bias,
            h + "mlp.dense_4h_to_h.weight": block.ffwd.net[2].weight, h + "mlp.dense_4h_to_h.bias":
                block.ffwd.net[2].bias,
        })
    weights.update({"gpt_neox.final_layer_norm.weight": model.ln_f.weight,
                    "gpt_neox.final_layer_norm.bias": model.ln_f.bias,
                    "embed_out.weight": model.lm_head.weight.clone()})  # tied to embed_in here: a copy of it
    return {name: tensor.detach().float().contiguous().cpu() for name, tensor in weights.items()}


def gpt2_state_dict(model):
    """GPTModel's weights under GPT2LMHeadModel's names. GPT-2 keeps its linear layers as Conv1D, whose weight is
    (in, out): ours transposed. Its q/k/v projection has a bias, ours none: zeros. The head is tied to wte, so it
    is not stored (transformers ties it again on loading)."""
    def t(tensor):
        return tensor.detach().t().contiguous()

    weights = {"transformer.wte.weight": model.token_embedding.weight, "transformer.wpe.weight":
               model.position_embedding.weight}
    for i, block in enumerate(model.blocks):
        h = f"transformer.h.{i}."
        qkv = block.attn.qkv.weight  # (3C, C): rows of q, then k, then v; each head's rows side by side, as GPT-2's
        weights.update({
            h + "ln_1.weight": block.ln1.weight, h + "ln_1.bias": block.ln1.bias,
            h + "attn.c_attn.weight": t(qkv), h + "attn.c_attn.bias": torch.zeros(qkv.shape[0]),
            h + "attn.c_proj.weight": t(block.attn.proj.weight), h + "attn.c_proj.bias": block.attn.proj.bias,
            h + "ln_2.weight": block.ln2.weight, h + "ln_2.bias": block.ln2.bias,
            h + "mlp.c_fc.weight": t(block.ffwd.net[0].weight), h + "mlp.c_fc.bias": block.ffwd.net[0].bias,
            h + "mlp.c_proj.weight": t(block.ffwd.net[2].weight), h + "mlp.c_proj.bias": block.ffwd.net[2].bias,
        })
    weights.update({"transformer.ln_f.weight": model.ln_f.weight, "transformer.ln_f.bias": model.ln_f.bias})
    return {name: tensor.detach().float().contiguous().cpu() for name, tensor in weights.items()}


# ----------------------------------------------------------------------------------------------
# The tokenizer: one character per token, CharTokenizer's ids


def char_tokenizer_json(tokenizer):
    """A `tokenizers` Tokenizer with CharTokenizer's vocabulary: a BPE model with no merges, so every character is
    its own token, no normaliser or pre-tokeniser (spaces and newlines are characters like any other) and a
    decoder that joins tokens without spaces. It has no unknown token, as CharTokenizer has none: a character
    outside the vocabulary is dropped when encoding (CharTokenizer refuses it)."""
    from tokenizers import Tokenizer, decoders, models

    hf = Tokenizer(models.BPE(vocab=dict(tokenizer.stoi), merges=[]))
    hf.decoder = decoders.Fuse()
    return hf


def tokenizer_json(tokenizer):
    """The tokenizer file for either tokenizer: a BPE model's is bpe.library_tokenizer, its ids and merges."""
    return library_tokenizer(tokenizer.merges) if tokenizer.kind == "bpe" else char_tokenizer_json(tokenizer)


# ----------------------------------------------------------------------------------------------
# The folder


def model_card(ckpt, model, tokenizer, kind, command):
    data = Path(str(ckpt.get("data", "?")))
    qa = looks_like_qa(tokenizer, ckpt.get("data"))
    # The example continues the model's own kind of text: "ROMEO:" means nothing to a poem model (it knows none of
    # those characters, so transformers would be handed no ids at all).
    prompt = example_prompt(ckpt, tokenizer, qa)
    prompt = qa_prompt(prompt) if qa else prompt or tokenizer.decode([0])
    licence = DATA_LICENCES.get(data.name, "your own text: its licence is yours to state")
    loss, bpc, bpe = ckpt.get("full_val_loss"), ckpt.get("full_val_bpc"), tokenizer.kind == "bpe"
    if not loss:
        loss_line = "not measured"
    elif bpe:
        loss_line = f"{loss:.4f} nats per token" + (f"; {bpc:.3f} bits per character" if bpc else "")
    else:
        loss_line = f"{loss:.4f} (nats per character; {loss / math.log(2):.3f} bits)"
    unit = "tokens" if bpe else "characters"
    token = (f"each token is a byte-level BPE piece of text ({tokenizer.vocab_size - 256} merges learned from its "
             "training text)"
             if bpe else "each token is one character")
    unknown = ("Any text encodes: a character BPE never merged is its UTF-8 bytes." if bpe
               else "A character the vocabulary lacks is dropped by the tokenizer.")
    layers, heads = len(model.blocks), model.blocks[0].attn.num_heads
    width, vocab, context = model.token_embedding.weight.shape[1], model.token_embedding.weight.shape[0], model.block_size
    if kind == "GPT2LMHeadModel":
        what = "GPT-2's architecture (`GPT2LMHeadModel`)"
        past = ("the model has learned no position beyond that, so a prompt plus new text must fit in it "
                "(`transformers` raises an error past it; Mini-GPT's own `generate.py` slides its window instead)")
    else:
        what = "GPT-NeoX's architecture (`GPTNeoXForCausalLM`: rotary positions, residuals in sequence)"
        past = ("it was trained on windows that long; rotary positions let `transformers` go on past it, where the "
                "text gets worse (Mini-GPT's own `generate.py` slides its window instead)")
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags:
- mini-gpt
- {"bpe" if bpe else "character-level"}
- {"gpt2" if kind == "GPT2LMHeadModel" else "gpt_neox"}
---

# {layers}-layer {"BPE" if bpe else "character-level"} GPT (Mini-GPT)

A small {"BPE" if bpe else "character-level"} GPT trained with the Mini-GPT tutorial's `train.py` and exported with
`export_hf.py`. It is {what}, so every tool built on `transformers` loads it; {token}.

| | |
| --- | --- |
| training data | `{data.name}`: {licence} |
| training steps | {ckpt.get('step', '?')} |
| validation loss on the whole held-out split | {loss_line} |
| size | {layers} layers, {heads} heads, width {width}, context {context} {unit}, {vocab} {unit} in the vocabulary, {model.num_params():,} parameters |
| made with | `{command}` |

## Use

```python
from transformers import pipeline
generate = pipeline("text-generation", model="path/to/this/folder")
print(generate({json.dumps(prompt, ensure_ascii=False)}, max_new_tokens=100)[0]["generated_text"])
```

The context is {context} {unit}: {past}. {unknown}
Sampling defaults (temperature 0.8, no top-k) are in `generation_config.json`.
"""


def check_out_folder(out):
    """A folder that isn't an earlier export is never overwritten."""
    if out.exists() and not out.is_dir():
        raise UserError(_("--out {path} is a file; give a folder name").format(path=out))
    if out.is_dir() and any(out.iterdir()):
        try:
            earlier = json.loads((out / "config.json").read_text(encoding="utf-8")).get(MARKER)
        except (OSError, ValueError):
            earlier = False
        if not earlier:
            raise UserError(_("{path} already holds files that are not an earlier export; choose another --out "
                              "(nothing was written)").format(path=out))


def write_folder(out, files):
    """Write files ({name: bytes}) into a fresh folder beside out, then put it in out's place: a failed export
    leaves no half-written folder, and an earlier export is replaced whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for name, write in files.items():
            write(fresh / name)
            os.chmod(fresh / name, readable_mode())  # safetensors writes its file private (0600)
        os.chmod(fresh, readable_mode() | (readable_mode() & 0o444) >> 2)  # mkdtemp's is private: an x per r, as mkdir
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            fresh.rename(out)
            shutil.rmtree(old)
        else:
            fresh.rename(out)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    check_out_folder(out)
    try:
        from safetensors.torch import save_file
        import tokenizers  # noqa: F401  (the tokenizer file is built with it)
    except ImportError:
        raise UserError(_("the export needs safetensors and tokenizers: python3 -m pip install -r "
                          "requirements-hf.txt")) from None
    ckpt = load_checkpoint(args.checkpoint, "cpu")
    model, tokenizer = model_from_checkpoint(ckpt, "cpu")
    missing = no_counterpart(model)
    kind = architecture(model)
    if missing:
        raise UserError(_("{path} can't be exported exactly: {kind} has no place for {what}").format(
            path=args.checkpoint, kind=kind, what=_(", ").join(missing)))
    dropout = float(ckpt.get("config", {}).get("dropout", 0.0))
    rotary = kind == "GPTNeoXForCausalLM"
    config = neox_config(model, dropout) if rotary else gpt2_config(model, dropout)
    weights = neox_state_dict(model) if rotary else gpt2_state_dict(model)
    command = training_command(ckpt)
    generation = {"do_sample": True, "temperature": 0.8, "top_k": 0, "top_p": 1.0, "max_new_tokens": 500}

    def text(content):
        return lambda path: path.write_text(content, encoding="utf-8")

    write_folder(out, {
        "config.json": text(json.dumps(config, indent=2) + "\n"),
        "model.safetensors": lambda path: save_file(weights, str(path), metadata={"format": "pt"}),
        "tokenizer.json": lambda path: tokenizer_json(tokenizer).save(str(path)),
        "tokenizer_config.json": text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model.block_size,
            "clean_up_tokenization_spaces": False}, indent=2) + "\n"),  # no "hello ," -> "hello," rewriting
        "generation_config.json": text(json.dumps(generation, indent=2) + "\n"),
        "README.md": text(model_card(ckpt, model, tokenizer, kind, command)),
    })
    vocabulary = (_("{n} BPE tokens") if tokenizer.kind == "bpe" else _("{n} characters")).format(n=tokenizer.vocab_size)
    print(_("wrote {path}: a {kind} ({params:.2f}M parameters, {vocabulary}). Load it with: "
            "pipeline(\"text-generation\", model=\"{path}\")").format(path=out, kind=kind,
                                                                      params=model.num_params() / 1e6,
                                                                      vocabulary=vocabulary))


if __name__ == "__main__":
    run_main(main)
