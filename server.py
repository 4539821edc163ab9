"""The playground's server: a loaded model behind the page's own API and an OpenAI-compatible one.

    create_app(Server(load("out/ckpt.pt", "cpu"), "cpu"))    # what playground.py serves

Two routers of module-level handlers over one Server:
  /api   the page (static/): generate with the top-10 choices behind every character, attention,
         chat, the model card and the checkpoint picker
  /v1    OpenAI's shapes: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (Q&A models)

Everything here is a thin layer over the functions the scripts use: load_checkpoint,
model_from_checkpoint, generate_steps, sampling_probs and attention_maps.
"""

import asyncio
import json
import math
import secrets
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import torch
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from checkpoint import load_checkpoint, model_from_checkpoint
from cli import UserError
from qa_format import END, prompt as qa_prompt
from sampling import StopText, check_sampling_args, sampling_probs
from utils import REPO_DIR, read_text, token_losses, train_val_split

STATIC = REPO_DIR / "static"
MAX_TOKENS = 2000  # per request
MAX_PROMPT_CHARS = 4000
MAX_N = 8  # completions per request
# The largest valid request is 8 prompts of 4,000 characters; escaped as JSON (a 4-byte character as a \\uXXXX pair,
# 12 bytes) that is 384 KB. 1 MiB leaves room for the rest and refuses a 100 MB body before reading it.
MAX_BODY_BYTES = 1 << 20
TOP = 10  # next-character probabilities shown per step
SEED = dict(ge=-2**63, le=2**63 - 1)  # OpenAI's seed is a 64-bit integer (torch takes it, and seed + n, from there)


# ----------------------------------------------------------------------------------------------
# The loaded model


def output_folders(root):
    """Where the checkpoint picker looks: the output folders (out/, out-*/) in root, nothing else."""
    return sorted(p for p in Path(root).glob("out*") if p.is_dir() and not p.is_symlink())


def list_checkpoints(root):
    """Every ckpt.pt under the output folders that the picker may load, as paths relative to root."""
    found = []
    for folder in output_folders(root):
        found += [p.relative_to(root).as_posix() for p in folder.rglob("ckpt.pt") if p.is_file()]
    return sorted(name for name in found if loadable(name, root))


def loadable(name, root):
    try:
        resolve_checkpoint(name, root)
        return True
    except ValueError:
        return False


def resolve_checkpoint(name, root):
    """The file the picker may load for name, or ValueError: a listed ckpt.pt, given relative to root."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or "\\" in name:
        raise ValueError("give a checkpoint path relative to the repo, as listed by /api/checkpoints")
    path = (Path(root) / name).resolve()
    allowed = [folder.resolve() for folder in output_folders(root)]
    if path.name != "ckpt.pt" or not any(path.is_relative_to(folder) for folder in allowed):
        raise ValueError("only ckpt.pt files under the repo's output folders (out/, out-*/) can be loaded")
    if not path.is_file():
        raise ValueError(f"no checkpoint at {name}")
    return path


@dataclass
class Loaded:
    """One model in memory, with what the page and the API say about it."""
    model: torch.nn.Module
    tokenizer: object
    path: str
    card: dict
    is_qa: bool

    @property
    def model_id(self):
        return "mini-gpt-" + Path(self.path).parent.name


def load(path, device, qa=None):
    """Read a checkpoint once: its model (in eval mode on device) and its model card."""
    ckpt = load_checkpoint(path, "cpu")
    model, tokenizer = model_from_checkpoint(ckpt, device)
    model.eval()
    # JSON has no NaN: an unmeasured number (e.g. full_val_loss on all but the best row) becomes null.
    history = [[v if not (isinstance(v, float) and math.isnan(v)) else None for v in row]
               for row in ckpt.get("history", [])]
    is_qa = qa if qa is not None else (not tokenizer.unknown("问答") and "qa" in str(ckpt.get("data", "")).lower())
    card = {
        "checkpoint": str(path), "vocab_size": tokenizer.vocab_size, "parameters": model.num_params(),
        "config": ckpt.get("config", {}), "data": ckpt.get("data"), "steps": ckpt.get("step"),
        "init_from": ckpt.get("init_from") or None, "best_val_loss": ckpt.get("best_val_loss"), "full_val_loss": ckpt.get("full_val_loss"),
        "full_val_bpc": ckpt.get("full_val_bpc"), "tokenizer": tokenizer.kind,
        "history": history, "block_size": model.block_size, "layers": len(model.blocks),
        "heads": model.blocks[0].attn.num_heads, "qa": is_qa,
    }
    return Loaded(model, tokenizer, str(path), card, is_qa)


class Server:
    """The state behind the app: the loaded model and a lock that lets one token be computed at a time.

    Requests interleave token by token instead of waiting for each other's whole answer, and since the
    lock is taken per token, a client that goes away never leaves it held.
    """

    def __init__(self, loaded, device, api_key=None, root=REPO_DIR):
        self.loaded, self.device, self.api_key, self.root = loaded, device, api_key, Path(root)
        self.step_lock = threading.Lock()
        self.load_lock = threading.Lock()
        # For tests and curiosity: tokens made so far and generations under way, and a condition notified when
        # either changes, so a test can wait for an event instead of sleeping.
        self.tokens_generated, self.active = 0, 0
        self.changed = threading.Condition()

    def count(self, tokens=0, active=0):
        with self.changed:
            self.tokens_generated += tokens
            self.active += active
            self.changed.notify_all()

    def stream(self, loaded, ids, max_new_tokens, temperature, top_k, top_p, seed, use_cache=True, cancelled=None):
        """Yield (text, token id, logits (V,)) one step at a time, for one prompt. text is what the token adds to
        the answer: its character, or for a BPE model its characters ("" while a character is unfinished).
        cancelled: a threading.Event; once set (the client has gone), no further token is computed."""
        generator = torch.Generator(device="cpu")
        generator.manual_seed(seed if seed is not None else secrets.randbits(32))
        idx = torch.tensor([ids], device=self.device)
        steps = loaded.model.generate_steps(idx, max_new_tokens, temperature, top_k, top_p, use_cache=use_cache,
                                             generator=generator)
        decoder = loaded.tokenizer.decoder()
        self.count(active=1)
        try:
            while cancelled is None or not cancelled.is_set():
                with self.step_lock:
                    try:
                        token, logits = next(steps)
                    except StopIteration:
                        return
                self.count(tokens=1)
                token_id = token[0, 0].item()
                yield decoder.decode([token_id]), token_id, logits[0]
        finally:
            steps.close()
            self.count(active=-1)

    def answer_pieces(self, loaded, ids, max_tokens, temperature, top_p, seed, stops=(), cancelled=None):
        """Yield (piece of the answer, finish reason or None): text up to the blank line that ends an answer, or up
        to any of the stop strings."""
        text = StopText([END, *stops])
        for ch, _, _ in self.stream(loaded, ids, max_tokens, temperature, None, top_p, seed, cancelled=cancelled):
            piece = text.add(ch)
            if text.stopped:
                yield piece, "stop"
                return
            if piece:
                yield piece, None
        yield text.rest(), "length"


def server_of(request: Request) -> Server:
    """The Server a request is for (a FastAPI dependency)."""
    return request.app.state.server


# ----------------------------------------------------------------------------------------------
# Request shapes (OpenAI's, where they exist)


class CompletionRequest(BaseModel):
    model: Optional[str] = None
    prompt: Union[str, List[str]] = "\n"
    max_tokens: int = Field(16, ge=0, le=MAX_TOKENS)
    temperature: float = Field(1.0, ge=0.0, le=100.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: Optional[int] = Field(None, ge=1)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: Union[str, List[str], None] = None
    seed: Optional[int] = Field(None, **SEED)
    stream: bool = False
    stream_options: Optional["StreamOptions"] = None
    logprobs: Optional[int] = Field(None, ge=0, le=TOP)
    echo: bool = False


class StreamOptions(BaseModel):
    include_usage: bool = False  # end the stream with a chunk that holds the usage, and no choices


CompletionRequest.model_rebuild()


class Message(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    model: Optional[str] = None
    messages: List[Message]
    max_tokens: int = Field(60, ge=0, le=MAX_TOKENS)
    max_completion_tokens: Optional[int] = Field(None, ge=0, le=MAX_TOKENS)  # today's name for max_tokens
    temperature: float = Field(0.0, ge=0.0, le=100.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: Union[str, List[str], None] = None
    seed: Optional[int] = Field(None, **SEED)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None


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


# ----------------------------------------------------------------------------------------------
# Helpers the handlers share


def bad_request(message, param=None):
    return HTTPException(400, {"message": message, "type": "invalid_request_error", "param": param, "code": None})


def sampling_args(body):
    """A request's sampling fields as generate_stream's arguments (temperature, top_k, top_p), checked.
    top_p 1.0 means "no nucleus", so it becomes None; a request without top_k has none."""
    top_k = getattr(body, "top_k", None)
    top_p = None if body.top_p >= 1.0 else body.top_p
    try:
        check_sampling_args(body.temperature, top_k, top_p)
    except ValueError as e:
        raise bad_request(str(e)) from None
    return body.temperature, top_k, top_p


def stop_strings(body):
    """A request's `stop` (a string, a list or nothing) as a list, checked."""
    stops = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
    if len(stops) > 4 or any(not s for s in stops):
        raise bad_request("stop takes up to 4 non-empty strings", "stop")
    if any(len(s) > MAX_TOKENS for s in stops):  # longer than any answer: it could never match
        raise bad_request(f"a stop string has at most {MAX_TOKENS:,} characters", "stop")
    return stops


def include_usage(body):
    return body.stream_options is not None and body.stream_options.include_usage


def check_length(text, param="prompt"):
    if len(text) > MAX_PROMPT_CHARS:
        raise bad_request(f"the {param} has {len(text):,} characters; at most {MAX_PROMPT_CHARS:,} are allowed", param)
    if not text:
        raise bad_request(f"the {param} is empty; give at least one character", param)


def encode_prompt(loaded, text, param="prompt", checked=False):
    """The ids of text, or a 400 naming what is wrong: too long, empty, or characters the model never saw.
    checked: the length was already checked (a question, before the template around it)."""
    if not checked:
        check_length(text, param)
    unknown = loaded.tokenizer.unknown(text)
    if unknown:
        raise bad_request(f"the model has never seen these characters: {' '.join(map(repr, unknown[:20]))}"
                          f"{' ...' if len(unknown) > 20 else ''}", param)
    return loaded.tokenizer.encode(text)


def top_choices(probs, tokenizer, k=TOP):
    values, ids = probs.topk(min(k, probs.numel()))
    return [[tokenizer.token_text(i), round(v, 5)] for v, i in zip(values.tolist(), ids.tolist()) if v > 0]


async def threaded(events):
    """Run a blocking generator (the model's token loop) in one worker thread and yield its items here.

    Starlette would otherwise hand each next() to its thread pool, a hop per token that measurably slows
    streaming; here the worker runs freely and posts items to the event loop. When the client goes
    away, Starlette cancels this generator, and the worker stops before its next token.
    """
    loop = asyncio.get_running_loop()
    queue, stop, finished = asyncio.Queue(), threading.Event(), object()

    def post(item):
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the server is shutting down and its loop is closed
            stop.set()

    def work():
        try:
            for item in events:
                if stop.is_set():
                    break
                post(item)
        except Exception as e:  # noqa: BLE001 (re-raised in the event loop, where the response is)
            post(e)
        finally:
            events.close()
            post(finished)

    threading.Thread(target=work, daemon=True).start()
    try:
        while True:
            items = [await queue.get()]
            while not queue.empty():  # tokens that came while the last write went out: send them together
                items.append(queue.get_nowait())
            for item in items:
                if isinstance(item, Exception):
                    raise item
            text = "".join(item for item in items if isinstance(item, str))
            if text:
                yield text
            if items[-1] is finished:
                return
    finally:
        stop.set()


async def unless_gone(request, work):
    """Run the blocking work(cancelled) in a worker thread and return what it returns; if the client goes away
    first, set `cancelled`, so the generation stops before its next token, and answer nothing."""
    cancelled = threading.Event()
    job = asyncio.get_running_loop().run_in_executor(None, work, cancelled)
    try:
        while True:
            done, _ = await asyncio.wait({job}, timeout=0.05)
            if done:
                return job.result()
            if await request.is_disconnected():
                cancelled.set()
                return JSONResponse({}, status_code=499)  # nobody reads it: the client has gone
    finally:
        cancelled.set()  # whatever ended this (a cancelled request too), the worker stops


def sse(payload):
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def event_stream(events):
    return StreamingResponse(threaded(events), media_type="text/event-stream")


def usage(prompt_tokens, completion_tokens):
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


# ----------------------------------------------------------------------------------------------
# The page's API: /api


page_api = APIRouter(prefix="/api")


@page_api.get("/info")
def info(server: Server = Depends(server_of)):
    loaded = server.loaded
    checkpoint = loaded.card["checkpoint"]
    export = f"python3 export_hf.py --checkpoint {checkpoint} --out hf/{Path(checkpoint).parent.name}"
    return {**loaded.card, "model_id": loaded.model_id, "checkpoints": list_checkpoints(server.root),
            "max_tokens": MAX_TOKENS, "export_command": export}


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
SCORE_BATCH = 16  # windows per forward pass when scoring a text (at most MAX_PROMPT_CHARS tokens)


def scored_tokens(model, ids, device, lock=None, top=1):
    """Yield (token id, its log-probability, [(log-probability, id)] of the `top` likeliest) for every token of ids
    but the first, as train.py's whole-split evaluation scores it (utils.token_losses)."""
    with lock or nullcontext():
        scores = token_losses(model, ids, model.block_size, SCORE_BATCH, device, top=max(top, 1))
    for k, target in enumerate(scores.targets.tolist()):
        yield target, -scores.losses[k].item(), list(zip(scores.top_logprobs[k].tolist(), scores.top_ids[k].tolist()))


def surprise(model, tokenizer, ids, device, lock=None, top=SURPRISE_TOP):
    """How surprised the model is by each token of ids, and by each character of their text.

    The tokens are scored as train.py's whole-split evaluation scores them (utils.token_losses): windows of
    block_size one after the other, each token predicted from the tokens before it in its window, so the
    passage's mean bits per character is that evaluation's number for this text. A BPE token's bits are spread
    evenly over its bytes, and a character gets the bits of its bytes: a character's surprise is its share of
    the token's. The first token has nothing before it and is not scored.
    """
    tokens = [{"text": tokenizer.token_text(ids[0]), "bits": None, "top": None}]
    for target, logp, best in scored_tokens(model, ids, device, lock, top):
        tokens.append({"text": tokenizer.token_text(target), "bits": -logp / math.log(2),
                       "top": [[tokenizer.token_text(i), round(math.exp(v), 5)] for v, i in best]})
    # Spread each token's bits over its bytes, then add up each character's bytes.
    chars = []  # [bytes so far, bits (None until a scored byte comes), the token holding its first byte]
    for k, token in enumerate(tokens):
        piece = tokenizer.token_bytes[ids[k]] if tokenizer.kind == "bpe" else token["text"].encode("utf-8")
        for b in piece:
            if (b & 0xC0) != 0x80 or not chars:  # not a UTF-8 continuation byte: a new character starts
                chars.append([b"", None, k])
            chars[-1][0] += bytes([b])
            if token["bits"] is not None:
                chars[-1][1] = (chars[-1][1] or 0.0) + token["bits"] / len(piece)
    total = sum(t["bits"] for t in tokens[1:])
    scored_chars = int(torch.as_tensor(tokenizer.chars_per_token)[torch.tensor(ids[1:], dtype=torch.long)].sum())
    return {"kind": tokenizer.kind, "tokens": tokens, "chars": [c.decode("utf-8", errors="replace") for c, _, _ in chars],
            "char_bits": [bits for _, bits, _ in chars], "char_token": [k for _, _, k in chars],
            "total_bits": total, "scored_chars": scored_chars,
            "mean_bits": total / scored_chars if scored_chars else None}


@page_api.post("/surprise")
def surprise_route(body: TextRequest, server: Server = Depends(server_of)):
    loaded = server.loaded
    ids = encode_prompt(loaded, body.text, "text")
    if len(ids) < 2:
        raise bad_request("give at least two tokens of text: the first one is only context", "text")
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
        raise bad_request(f"the text this model was trained on ({data}) is not on this computer; paste a text instead")
    validation = train_val_split(read_text(path))[1]  # train.py's split: the last tenth of the characters
    return {"text": validation[:VALIDATION_START_CHARS], "path": str(data)}


@page_api.post("/chat")
def chat(body: TextRequest, server: Server = Depends(server_of)):
    loaded = server.loaded
    if not loaded.is_qa:
        raise bad_request("this checkpoint is not a Q&A model; load one trained on data/qa.txt")
    ids = encode_prompt(loaded, qa_prompt(body.text.strip()), "text")

    def events():
        for piece, _ in server.answer_pieces(loaded, ids, 100, 0.0, None, 0):
            if piece:
                yield sse({"text": piece})
        yield sse({"done": True})

    return event_stream(events())


# ----------------------------------------------------------------------------------------------
# The OpenAI-compatible API: /v1


openai_api = APIRouter(prefix="/v1")


@openai_api.get("/models")
def models(server: Server = Depends(server_of)):
    return {"object": "list", "data": [{"id": server.loaded.model_id, "object": "model", "created": 0,
                                        "owned_by": "mini-gpt"}]}


@dataclass
class Choice:
    """One completion to generate: its index in the response, its prompt (text and ids) and its seed."""
    index: int
    prompt: str
    ids: list
    seed: Optional[int]
    generated: int = 0  # tokens generated so far (a stop string's too): the usage's completion_tokens


def completion_pieces(server, loaded, body, choice, stops, sampling, cancelled=None):
    """Yield (text piece, its logprob entries, finish_reason or None) for one choice of a completion."""
    temperature, top_k, top_p = sampling
    tokenizer = loaded.tokenizer
    text, pending = StopText(stops), []  # pending: a logprob entry per token whose text is not yet sent
    for ch, token_id, logits in server.stream(loaded, choice.ids, body.max_tokens, temperature, top_k, top_p,
                                              choice.seed, cancelled=cancelled):
        choice.generated += 1
        if body.logprobs is not None:
            logp = torch.log_softmax(logits.float(), dim=-1)
            top = logp.topk(min(max(body.logprobs, 1), logp.numel()))
            pending.append((tokenizer.token_text(token_id), logp[token_id].item(),
                            {tokenizer.token_text(i): v for v, i in zip(top.values.tolist(), top.indices.tolist())},
                            len(ch)))
        piece = text.add(ch)
        if piece or text.stopped:
            sent = entries_within(pending, len(piece))
            yield piece, pending[:sent], "stop" if text.stopped else None
            pending = pending[sent:]
        if text.stopped:
            return
    yield text.rest(), pending, "length"


def token_count(loaded, text):
    """How many tokens text is: its characters, for a character model; for BPE, what its tokenizer makes of it."""
    return len(text) if loaded.tokenizer.kind == "char" else len(loaded.tokenizer.encode(text))


def entries_within(entries, n_chars):
    """How many of the first logprob entries the first n_chars characters of text hold whole."""
    count = 0
    for entry in entries:
        if entry[3] > n_chars:
            break
        n_chars -= entry[3]
        count += 1
    return count


def prompt_entries(server, loaded, ids, top):
    """One logprob entry per prompt token, as echo + logprobs returns them: the first token has nothing before it
    (None, as OpenAI gives); every other is scored from the tokens before it in its window of block_size, the
    windows train.py's whole-split evaluation uses, so a text's mean -logprob is the model's loss on it."""
    tokenizer = loaded.tokenizer
    decoder = tokenizer.decoder()  # how many characters each token adds to the text
    entries = [(tokenizer.token_text(ids[0]), None, None, len(decoder.decode(ids[:1])))]
    for target, logp, best in scored_tokens(loaded.model, ids, server.device, server.step_lock, top):
        entries.append((tokenizer.token_text(target), logp, {tokenizer.token_text(i): v for v, i in best},
                        len(decoder.decode([target]))))
    return entries


def logprob_block(body, entries, offset):
    """OpenAI's `logprobs` of a completion choice for these entries, whose text starts at `offset`."""
    if body.logprobs is None:
        return None
    offsets = []
    for entry in entries:  # each token starts where the text of the ones before it ends
        offsets.append(offset)
        offset += entry[3]
    return {"tokens": [e[0] for e in entries], "token_logprobs": [e[1] for e in entries],
            "top_logprobs": [e[2] for e in entries], "text_offset": offsets}


@openai_api.post("/completions")
async def completions(body: CompletionRequest, request: Request, server: Server = Depends(server_of)):
    loaded = server.loaded
    sampling = sampling_args(body)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts or len(prompts) * body.n > MAX_N:
        raise bad_request(f"give 1 to {MAX_N} prompts x n", "prompt")
    encoded = [encode_prompt(loaded, p) for p in prompts]
    stops = stop_strings(body)
    head = {"id": "cmpl-" + secrets.token_hex(12), "object": "text_completion", "created": int(time.time()),
            "model": loaded.model_id}
    choices = [Choice(i * body.n + j, p, ids, None if body.seed is None else body.seed + j)
               for i, (p, ids) in enumerate(zip(prompts, encoded)) for j in range(body.n)]
    if body.stream:
        prompt_tokens = sum(map(len, encoded)) * body.n
        return event_stream(stream_completion(server, loaded, body, choices, stops, sampling, head, prompt_tokens))

    def work(cancelled):
        out, completion_tokens = [], 0
        for choice in choices:
            pieces, entries, finish = [], [], None
            for piece, more, finish in completion_pieces(server, loaded, body, choice, stops, sampling, cancelled):
                pieces.append(piece)
                entries += more
            text = "".join(pieces)
            completion_tokens += choice.generated
            offset = len(choice.prompt)
            if body.echo and body.logprobs is not None:  # the prompt's tokens too: a text scored through the API
                entries, offset = prompt_entries(server, loaded, choice.ids, body.logprobs) + entries, 0
            out.append({"text": (choice.prompt if body.echo else "") + text, "index": choice.index,
                        "logprobs": logprob_block(body, entries, offset), "finish_reason": finish})
        return {**head, "choices": out, "usage": usage(sum(map(len, encoded)) * body.n, completion_tokens)}

    return await unless_gone(request, work)


def stream_completion(server, loaded, body, choices, stops, sampling, head, prompt_tokens):
    """The server-sent events of a streamed completion: each choice's pieces in turn, the usage if asked, [DONE]."""
    completion_tokens = 0
    for choice in choices:
        offset = len(choice.prompt)
        if body.echo:
            scored = prompt_entries(server, loaded, choice.ids, body.logprobs) if body.logprobs is not None else []
            yield sse({**head, "choices": [{"text": choice.prompt, "index": choice.index,
                                            "logprobs": logprob_block(body, scored, 0), "finish_reason": None}]})
        for piece, entries, finish in completion_pieces(server, loaded, body, choice, stops, sampling):
            if piece or finish:
                yield sse({**head, "choices": [{"text": piece, "index": choice.index,
                                                "logprobs": logprob_block(body, entries, offset),
                                                "finish_reason": finish}]})
            offset += len(piece)
        completion_tokens += choice.generated
    if include_usage(body):
        yield sse({**head, "choices": [], "usage": usage(prompt_tokens, completion_tokens)})
    yield "data: [DONE]\n\n"


@openai_api.post("/chat/completions")
async def chat_completions(body: ChatRequest, request: Request, server: Server = Depends(server_of)):
    loaded = server.loaded
    if not loaded.is_qa:
        raise bad_request("this checkpoint is not a Q&A model, so it has no chat format; use /v1/completions, "
                          "or load a model trained on data/qa.txt", "model")
    temperature, _, top_p = sampling_args(body)
    stops = stop_strings(body)
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    questions = [m.content for m in body.messages if m.role == "user"]
    if not questions or not questions[-1].strip():
        raise bad_request("give at least one non-empty user message", "messages")
    check_length(questions[-1].strip(), "messages")  # the question's length, not the template's around it
    ids = encode_prompt(loaded, qa_prompt(questions[-1].strip()), "messages", checked=True)
    head = {"id": "chatcmpl-" + secrets.token_hex(12), "created": int(time.time()), "model": loaded.model_id}
    seeds = [None if body.seed is None else body.seed + j for j in range(body.n)]

    def answer(j, cancelled=None):
        return server.answer_pieces(loaded, ids, max_tokens, temperature, top_p, seeds[j], stops, cancelled)

    if body.stream:
        def chunk(index, delta, finish=None):
            return sse({**head, "object": "chat.completion.chunk",
                        "choices": [{"index": index, "delta": delta, "finish_reason": finish}]})

        def events():
            completion_tokens = 0
            for j in range(body.n):
                yield chunk(j, {"role": "assistant"})
                for piece, finish in answer(j):
                    if piece:
                        completion_tokens += token_count(loaded, piece)
                        yield chunk(j, {"content": piece})
                yield chunk(j, {}, finish)
            if include_usage(body):
                yield sse({**head, "object": "chat.completion.chunk", "choices": [],
                           "usage": usage(len(ids) * body.n, completion_tokens)})
            yield "data: [DONE]\n\n"

        return event_stream(events())

    def work(cancelled):
        choices, completion_tokens = [], 0
        for j in range(body.n):
            pieces = list(answer(j, cancelled))
            text = "".join(piece for piece, _ in pieces)
            completion_tokens += token_count(loaded, text)
            choices.append({"index": j, "message": {"role": "assistant", "content": text, "refusal": None},
                            "logprobs": None, "finish_reason": pieces[-1][1]})
        return {**head, "object": "chat.completion", "choices": choices,
                "usage": usage(len(ids) * body.n, completion_tokens)}

    return await unless_gone(request, work)


# ----------------------------------------------------------------------------------------------
# The app


def error_response(status, message, param=None, kind="invalid_request_error", code=None):
    """OpenAI's error shape, whatever raised it: {"error": {"message", "type", "param", "code"}}."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status)


async def invalid_request(request, exc):
    """Malformed JSON or a field out of range: OpenAI's error shape, no traceback."""
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":  # its location is a byte offset, not a field
        return error_response(400, f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}")
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    message = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
    return error_response(400, message, where)


async def http_error(request, exc):
    """Our own 400s (already in OpenAI's shape), and Starlette's 404, 405 and body-parsing errors."""
    if isinstance(exc.detail, dict):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error_response(exc.status_code, str(exc.detail), kind=kind)


def create_app(server):
    app = FastAPI(title="Mini-GPT playground", docs_url=None, redoc_url=None)
    app.state.server = server
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)  # FastAPI's HTTPException is one too

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(page_api)
    app.include_router(openai_api)
    return Gate(app, server.api_key)


async def drain(receive, seen=0):
    """Read the rest of a refused body, keeping none of it, up to 16 times the limit (a client sending more than
    that is cut off)."""
    while seen < 16 * MAX_BODY_BYTES:
        message = await receive()
        seen += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            return


class Gate:
    """What every request passes before the app sees it (plain ASGI: Starlette's middleware classes would hide a
    client's disconnect from the handlers):
      - the API key, when the server has one (401);
      - a POST body is JSON (415): application/json, or no type at all, as curl -d without -H sends;
      - a body over MAX_BODY_BYTES is a 413, before it is read (Content-Length) or as soon as it passes the limit
        (a chunked body), so a huge body costs neither time nor memory."""

    def __init__(self, app, api_key=None):
        self.app, self.api_key = app, api_key
        self.state = app.state  # tests and tools reach the Server through app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        if self.api_key and scope["path"].startswith(("/v1/", "/api/")):
            if headers.get(b"authorization", b"").decode("latin-1") != f"Bearer {self.api_key}":
                refused = error_response(401, "a valid API key is required: Authorization: Bearer <key>",
                                         kind="authentication_error", code="invalid_api_key")
                return await refused(scope, receive, send)
        kind = headers.get(b"content-type", b"application/json").decode("latin-1").split(";")[0].strip().lower()
        if scope["method"] == "POST" and kind != "application/json":
            refused = error_response(415, f"the body is {kind}; send JSON with Content-Type: application/json")
            return await refused(scope, receive, send)
        length = headers.get(b"content-length", b"0")
        too_large = error_response(413, f"the request body is over {MAX_BODY_BYTES:,} bytes, more than any valid "
                                        "request needs")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            await drain(receive)  # so the client can finish sending and read the answer, not a broken pipe
            return await too_large(scope, receive, send)
        seen, over = 0, False

        async def counted():  # the body as the app reads it: cut off once it passes the limit
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request" and not over:
                seen += len(message.get("body", b""))
                if seen > MAX_BODY_BYTES:
                    over = True
                    if message.get("more_body"):
                        await drain(receive, seen)
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def answered(message):  # the app's answer, or the 413 in its place
            if not over:
                return await send(message)
            if message["type"] == "http.response.start":
                await too_large(scope, receive, send)

        await self.app(scope, counted, answered)
