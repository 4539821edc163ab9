"""The playground's model behind its two APIs: the checkpoint picker, loading a model and its card, the Server that
holds it (one token computed at a time), and what both APIs' handlers share (sampling settings, prompts, errors,
the thread/async bridge and server-sent events). page_api.py and openai_api.py are the routes; server.py makes
the app.

Everything here is a thin layer over the functions the scripts use: load_checkpoint, model_from_checkpoint,
generate_steps and token_losses.
"""

import asyncio
import json
import math
import secrets
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from checkpoint import load_checkpoint, model_from_checkpoint
from i18n import _
from qa_format import END, looks_like_qa
from sampling import StopText, check_sampling_args
from utils import REPO_DIR, token_losses


MAX_TOKENS = 2000  # per request

MAX_PROMPT_CHARS = 4000

MAX_N = 8  # completions per request

TOP = 10  # next-character probabilities shown per step

SEED = dict(ge=-2**63, le=2**63 - 1)  # OpenAI's seed is a 64-bit integer (torch takes it, and seed + n, from there)

SCORE_BATCH = 16  # windows per forward pass when scoring a text (at most MAX_PROMPT_CHARS tokens)


# ----------------------------------------------------------------------------------------------
# The checkpoint picker and the loaded model


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
        raise ValueError(_("give a checkpoint path relative to the repo, as listed by /api/checkpoints"))
    path = (Path(root) / name).resolve()
    allowed = [folder.resolve() for folder in output_folders(root)]
    if path.name != "ckpt.pt" or not any(path.is_relative_to(folder) for folder in allowed):
        raise ValueError(_("only ckpt.pt files under the repo's output folders (out/, out-*/) can be loaded"))
    if not path.is_file():
        raise ValueError(_("no checkpoint at {name}").format(name=name))
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
    is_qa = qa if qa is not None else looks_like_qa(tokenizer, ckpt.get("data"))
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

    def stream(self, loaded, ids, max_new_tokens, temperature, top_k, top_p, seed, use_cache=True, cancelled=None,
               adjust=None):
        """Yield (text, token id, logits (V,)) one step at a time, for one prompt. text is what the token adds to
        the answer: its character, or for a BPE model its characters ("" while a character is unfinished).
        cancelled: a threading.Event; once set (the client has gone), no further token is computed.
        adjust: sampling.LogitAdjuster (logit_bias and the penalties), or None."""
        generator = torch.Generator(device="cpu")
        generator.manual_seed(seed if seed is not None else secrets.randbits(32))
        idx = torch.tensor([ids], device=self.device)
        steps = loaded.model.generate_steps(idx, max_new_tokens, temperature, top_k, top_p, use_cache=use_cache,
                                            generator=generator, adjust=adjust)
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

    def pieces(self, loaded, choice, max_tokens, sampling, stops=(), top=None, adjust=None, cancelled=None,
               answer=False):
        """Yield (text piece, its logprob entries, finish_reason or None) for one Choice: the text as it becomes
        safe to show (a stop string is never shown), with choice.generated counting every token made.

        top: also score each token (an entry: its text, log-probability, the `top` likeliest, its characters).
        answer: a Q&A answer, which ends at the blank line (END). That line is never shown, not even the half of it
        that a max_tokens cut can leave at the end.
        """
        temperature, top_k, top_p = sampling
        tokenizer = loaded.tokenizer
        text, pending = StopText([END, *stops] if answer else stops), []  # pending: entries whose text is held
        for ch, token_id, logits in self.stream(loaded, choice.ids, max_tokens, temperature, top_k, top_p,
                                                choice.seed, cancelled=cancelled, adjust=adjust):
            choice.generated += 1
            if top is not None:
                logp = torch.log_softmax(logits.float(), dim=-1)
                best = logp.topk(min(max(top, 1), logp.numel()))
                alternatives = {tokenizer.token_text(i): v for v, i in zip(best.values.tolist(),
                                                                           best.indices.tolist())}
                pending.append((tokenizer.token_text(token_id), logp[token_id].item(), alternatives, len(ch)))
            piece = text.add(ch)
            if piece or text.stopped:
                sent = entries_within(pending, len(piece))
                yield piece, pending[:sent], "stop" if text.stopped else None
                pending = pending[sent:]
            if text.stopped:
                return
        rest = text.rest()
        if answer:  # cut by max_tokens: a newline held back as the start of the blank line is not the answer's
            rest = rest[:len(rest) - max((k for k in range(len(END)) if rest.endswith(END[:k])), default=0)]
        yield rest, pending[:entries_within(pending, len(rest))], "length"


@dataclass
class Choice:
    """One answer to generate: its index in the response, its prompt (text and ids) and its seed."""
    index: int
    prompt: str
    ids: list
    seed: object = None  # an int, or None for a random one
    generated: int = 0  # tokens generated so far (a stop string's and the blank line's too): the usage's count


def entries_within(entries, n_chars):
    """How many of the first logprob entries the first n_chars characters of text hold whole."""
    count = 0
    for entry in entries:
        if entry[3] > n_chars:
            break
        n_chars -= entry[3]
        count += 1
    return count


def server_of(request: Request) -> Server:
    """The Server a request is for (a FastAPI dependency)."""
    return request.app.state.server


# ----------------------------------------------------------------------------------------------
# What both APIs' handlers share


def bad_request(message, param=None):
    return HTTPException(400, {"message": message, "type": "invalid_request_error", "param": param, "code": None})


def sampling_args(body):
    """A request's sampling fields as generate_stream's arguments (temperature, top_k, top_p), checked.
    top_p 1.0 means "no nucleus", so it becomes None; top_p 0 means greedy; a request without top_k has none."""
    top_k = getattr(body, "top_k", None)
    if body.top_p == 0:  # OpenAI allows it: the nucleus holds only the likeliest token, which is greedy decoding
        return 0.0, None, None
    top_p = None if body.top_p >= 1.0 else body.top_p
    try:
        check_sampling_args(body.temperature, top_k, top_p)
    except ValueError as e:
        raise bad_request(str(e)) from None
    return body.temperature, top_k, top_p


def check_length(text, param="prompt"):
    if len(text) > MAX_PROMPT_CHARS:
        raise bad_request(_("the {param} has {n:,} characters; at most {most:,} are allowed").format(
            param=param, n=len(text), most=MAX_PROMPT_CHARS), param)
    if not text:
        raise bad_request(_("the {param} is empty; give at least one character").format(param=param), param)


def encode_prompt(loaded, text, param="prompt", checked=False):
    """The ids of text, or a 400 naming what is wrong: too long, empty, or characters the model never saw.
    checked: the length was already checked (a question, before the template around it)."""
    if not checked:
        check_length(text, param)
    unknown = loaded.tokenizer.unknown(text)
    if unknown:
        shown = " ".join(map(repr, unknown[:20])) + (" ..." if len(unknown) > 20 else "")
        raise bad_request(_("the model has never seen these characters: {chars}").format(chars=shown), param)
    return loaded.tokenizer.encode(text)


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
            done, _pending = await asyncio.wait({job}, timeout=0.05)
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


def scored_tokens(model, ids, device, lock=None, top=1):
    """Yield (token id, its log-probability, [(log-probability, id)] of the `top` likeliest) for every token of ids
    but the first, as train.py's whole-split evaluation scores it (utils.token_losses)."""
    with lock or nullcontext():
        scores = token_losses(model, ids, model.block_size, SCORE_BATCH, device, top=max(top, 1))
    for k, target in enumerate(scores.targets.tolist()):
        yield target, -scores.losses[k].item(), list(zip(scores.top_logprobs[k].tolist(), scores.top_ids[k].tolist()))
