"""The page's own API (/api), under static/: generate with the top-10 choices behind every token, attention maps,
the Surprise view, chat, the model card and the checkpoint picker."""

import math
import time
from pathlib import Path
from typing import Optional

import torch
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from cli import UserError
from i18n import _
from qa_format import prompt as qa_prompt
from sampling import sampling_probs
from serving import (
    MAX_TOKENS, SEED, TOP, Choice, Server, bad_request, encode_prompt, event_stream, list_checkpoints, load,
    resolve_checkpoint, sampling_args, scored_tokens, server_of, sse,
)
from utils import REPO_DIR, read_text, train_val_split


class GenerateRequest(BaseModel):  # the page's own request: also top_k, and the KV-cache switch
    prompt: str = "\n"
    max_tokens: int = Field(200, ge=1, le=MAX_TOKENS)
    temperature: float = Field(0.8, ge=0.0, le=100.0, allow_inf_nan=False)
    top_k: Optional[int] = Field(None, ge=1)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    seed: Optional[int] = Field(None, **SEED)
    use_cache: bool = True


class TextRequest(BaseModel):
    text: str


class LoadRequest(BaseModel):
    path: str


def top_choices(probs, tokenizer, k=TOP):
    values, ids = probs.topk(min(k, probs.numel()))
    return [[tokenizer.token_text(i), round(v, 5)] for v, i in zip(values.tolist(), ids.tolist()) if v > 0]


page_api = APIRouter(prefix="/api")


@page_api.get("/info")
def info(server: Server = Depends(server_of)):
    loaded = server.loaded
    checkpoint, root = Path(loaded.card["checkpoint"]).resolve(), server.root.resolve()
    # As the picker lists it (relative to the repo), never this machine's folders, when it is one of them.
    if checkpoint.is_relative_to(root):
        checkpoint = checkpoint.relative_to(root).as_posix()
    else:
        checkpoint = loaded.card["checkpoint"]
    export = f"python3 export_hf.py --checkpoint {checkpoint} --out hf/{Path(checkpoint).parent.name}"
    return {**loaded.card, "checkpoint": checkpoint, "model_id": loaded.model_id,
            "checkpoints": list_checkpoints(server.root), "max_tokens": MAX_TOKENS, "export_command": export}


@page_api.get("/checkpoints")
def checkpoints(server: Server = Depends(server_of)):
    return {"checkpoints": list_checkpoints(server.root)}


@page_api.post("/load")
def load_checkpoint_route(body: LoadRequest, server: Server = Depends(server_of)):
    try:
        path = resolve_checkpoint(body.path, server.root)
        with server.load_lock:
            server.loaded = load(path, server.device)
            server.loaded.card["checkpoint"] = body.path
    except ValueError as e:
        raise bad_request(str(e), "path") from None
    except UserError as e:  # it names the file by its full path: show the name the page gave instead
        raise bad_request(str(e).replace(str(path), body.path), "path") from None
    return info(server)


@page_api.post("/generate")
def generate(body: GenerateRequest, server: Server = Depends(server_of)):
    loaded = server.loaded
    temperature, top_k, top_p = sampling_args(body)
    ids = encode_prompt(loaded, body.prompt)

    def events():
        start, count, first = time.perf_counter(), 0, None
        for ch, token_id, logits in server.stream(loaded, ids, body.max_tokens, temperature, top_k, top_p, body.seed,
                                                  body.use_cache):
            count += 1
            first = first or time.perf_counter() - start
            used = sampling_probs(logits[None], temperature, top_k, top_p)[0]
            top, token = top_choices(used, loaded.tokenizer), loaded.tokenizer.token_text(token_id)
            if token not in (c for c, _ in top):  # a lucky draw from the tail: show it too, after the ten
                top.append([token, round(used[token_id].item(), 5)])
            yield sse({"char": ch, "token": token, "chosen_prob": round(used[token_id].item(), 5), "top": top})
        seconds = time.perf_counter() - start
        yield sse({"done": True, "tokens": count, "seconds": round(seconds, 3),
                   "tokens_per_s": round(count / max(seconds, 1e-9), 1), "first_token_s": round(first or 0, 3),
                   "use_cache": body.use_cache})

    return event_stream(events())


@page_api.post("/attention")
def attention(body: TextRequest, server: Server = Depends(server_of)):
    loaded = server.loaded
    ids = encode_prompt(loaded, body.text, "text")[-loaded.model.block_size:]
    chars = [loaded.tokenizer.token_text(i) for i in ids]  # the labels: one per token
    with server.step_lock:
        maps = loaded.model.attention_maps(torch.tensor([ids], device=server.device))
    return {"chars": chars, "maps": [[[[round(v, 4) for v in row] for row in head] for head in layer[0].tolist()]
                                     for layer in maps]}


SURPRISE_TOP = 5  # alternatives shown when hovering over a character


def surprise(model, tokenizer, ids, device, lock=None, top=SURPRISE_TOP):
    """How surprised the model is by each token of ids, and by each character of their text.

    The tokens are scored as train.py's whole-split evaluation scores them (utils.token_losses): windows of
    block_size one after the other, each token predicted from the tokens before it in its window, so the
    passage's mean bits per character is that evaluation's number for this text. A BPE token's bits are spread
    evenly over its bytes, and a character gets the bits of its bytes: a character's surprise is its share of
    the token's. The first token has nothing before it and is not scored.
    """
    label = tokenizer.token_label if tokenizer.kind == "bpe" else tokenizer.token_text  # part of a character: <e6 b7>
    tokens = [{"text": label(ids[0]), "bits": None, "top": None}]
    for target, logp, best in scored_tokens(model, ids, device, lock, top):
        tokens.append({"text": label(target), "bits": -logp / math.log(2),
                       "top": [[label(i), round(math.exp(v), 5)] for v, i in best]})
    # Spread each token's bits over its bytes, then add up each character's bytes.
    chars = []  # [bytes so far, bits (None until a scored byte comes), the tokens its bytes come from]
    for k, token in enumerate(tokens):
        piece = tokenizer.token_bytes[ids[k]] if tokenizer.kind == "bpe" else token["text"].encode("utf-8")
        for b in piece:
            if (b & 0xC0) != 0x80 or not chars:  # not a UTF-8 continuation byte: a new character starts
                chars.append([b"", None, []])
            chars[-1][0] += bytes([b])
            if k not in chars[-1][2]:
                chars[-1][2].append(k)
            if token["bits"] is not None:
                chars[-1][1] = (chars[-1][1] or 0.0) + token["bits"] / len(piece)
    total = sum(t["bits"] for t in tokens[1:])
    scored_chars = int(torch.as_tensor(tokenizer.chars_per_token)[torch.tensor(ids[1:], dtype=torch.long)].sum())
    return {"kind": tokenizer.kind, "tokens": tokens, "chars": [c.decode("utf-8", errors="replace") for c, _, _ in chars],
            "char_bits": [bits for _, bits, _ in chars], "char_token": [k[0] for _, _, k in chars],
            "char_tokens": [k for _, _, k in chars],  # a character split between tokens: all of them
            "total_bits": total, "scored_chars": scored_chars,
            "mean_bits": total / scored_chars if scored_chars else None}


@page_api.post("/surprise")
def surprise_route(body: TextRequest, server: Server = Depends(server_of)):
    loaded = server.loaded
    ids = encode_prompt(loaded, body.text, "text")
    if len(ids) < 2:
        raise bad_request(_("give at least two tokens of text: the first one is only context"), "text")
    return surprise(loaded.model, loaded.tokenizer, ids, server.device, server.step_lock)


VALIDATION_START_CHARS = 1000


@page_api.get("/validation_start")
def validation_start(server: Server = Depends(server_of)):
    """The first characters of the loaded model's validation split: text it never trained on."""
    data = server.loaded.card.get("data")
    path = Path(str(data)) if data else None
    if path is not None and not path.is_absolute() and not path.is_file():
        path = REPO_DIR / path
    if path is None or not path.is_file():
        raise bad_request(_("the text this model was trained on ({data}) is not on this computer; paste a text instead")
                          .format(data=data))
    validation = train_val_split(read_text(path))[1]  # train.py's split: the last tenth of the characters
    return {"text": validation[:VALIDATION_START_CHARS], "path": str(data)}


@page_api.post("/chat")
def chat(body: TextRequest, server: Server = Depends(server_of)):
    loaded = server.loaded
    if not loaded.is_qa:
        raise bad_request(_("this checkpoint is not a Q&A model; load one trained on data/qa.txt"))
    ids = encode_prompt(loaded, qa_prompt(body.text.strip()), "text")

    def events():
        for piece, _entries, _finish in server.pieces(loaded, Choice(0, "", ids, seed=0), 100, (0.0, None, None), answer=True):
            if piece:
                yield sse({"text": piece})
        yield sse({"done": True})

    return event_stream(events())
