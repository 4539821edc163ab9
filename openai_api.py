"""OpenAI's shapes (/v1), so OpenAI's clients can talk to a learner's model: GET /v1/models (and /v1/models/{id}),
POST /v1/completions and POST /v1/chat/completions (Q&A models), plain or streamed, with their request schemas.

What the clients send is read as OpenAI reads it: null means "not given", unknown fields are ignored, and a
parameter this model can't honour (tools, a JSON schema, a suffix) is a 400 that names it, never a 200 that
silently did nothing.
"""

import secrets
import time
from typing import Any, Dict, List, Optional, Union

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field, model_validator

from qa_format import example, prompt as qa_prompt
from sampling import LogitAdjuster
from serving import (
    MAX_N, MAX_TOKENS, SEED, TOP, Choice, Server, bad_request, check_length, encode_prompt, event_stream,
    sampling_args, scored_tokens, server_of, sse, unless_gone,
)

# What the chat endpoint does with a conversation: /v1/models says it, and README.
CHAT_FORMAT = {
    "format": "问：<question>\\n答：<answer>\\n\\n (the Q&A text the model was trained on)",
    "history": "earlier user and assistant turns are given to the model in that format, newest first kept when "
               "the context window is full",
    "system": "ignored: a Q&A model has learned no instructions to follow, so system and developer messages are "
              "not given to it",
}


# ----------------------------------------------------------------------------------------------
# The requests


class OpenAIRequest(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def null_means_not_given(cls, data):
        """OpenAI reads `"max_tokens": null` as "not given", and hand-written clients send it: so do we."""
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class StreamOptions(OpenAIRequest):
    include_usage: bool = False  # end the stream with a chunk that holds the usage, and no choices


class Sampled(OpenAIRequest):
    """The fields both endpoints share: how much to generate and how to choose each token."""
    model: Optional[str] = None
    max_tokens: int = Field(16, ge=0, le=MAX_TOKENS)
    temperature: float = Field(1.0, ge=0.0, le=100.0, allow_inf_nan=False)
    top_p: float = Field(1.0, ge=0.0, le=1.0, allow_inf_nan=False)  # 0: greedy
    n: int = Field(1, ge=1, le=MAX_N)
    stop: Union[str, List[str], None] = None
    seed: Optional[int] = Field(None, **SEED)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    logit_bias: Optional[Dict[str, float]] = None  # token id -> a bias from -100 to 100, added to its logit
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0, allow_inf_nan=False)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0, allow_inf_nan=False)


class CompletionRequest(Sampled):
    prompt: Union[str, List[str]] = "\n"
    top_k: Optional[int] = Field(None, ge=1)
    logprobs: Optional[int] = Field(None, ge=0, le=TOP)
    echo: bool = False
    suffix: Optional[str] = None  # refused: this model only continues a prompt
    best_of: Optional[int] = Field(None, ge=1)  # refused above n: there is no "best" to choose here


class TextPart(BaseModel):
    type: str
    text: Optional[str] = None


class Message(BaseModel):
    role: str
    content: Union[str, List[TextPart], None] = None  # an assistant turn that called a tool has null


class ChatRequest(Sampled):
    messages: List[Message]
    max_tokens: int = Field(60, ge=0, le=MAX_TOKENS)
    max_completion_tokens: Optional[int] = Field(None, ge=0, le=MAX_TOKENS)  # today's name for max_tokens
    temperature: float = Field(0.0, ge=0.0, le=100.0, allow_inf_nan=False)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=TOP)
    tools: Optional[List[Any]] = None  # the four below are refused: this model cannot call tools
    tool_choice: Optional[Any] = None
    functions: Optional[List[Any]] = None
    function_call: Optional[Any] = None
    response_format: Optional[Dict[str, Any]] = None  # only {"type": "text"}


def refused(param, reason):
    return bad_request(f"{param}: {reason}", param)


def check_abilities(body):
    """A 400 naming the first parameter this model can't honour; silence would let a client believe it did."""
    if isinstance(body, CompletionRequest):
        if body.suffix:
            raise refused("suffix", "this model cannot insert text before a suffix; it only continues the prompt")
        if body.best_of is not None and body.best_of > body.n:
            raise refused("best_of", f"best_of {body.best_of} asks the server to pick the best of more completions "
                                     f"than it returns, which it cannot rank; leave best_of out or give at most n")
        return
    for name in ("tools", "functions", "function_call"):
        if getattr(body, name):
            raise refused(name, "this model cannot call tools; it only answers questions in its Q&A format")
    if body.tool_choice not in (None, "none"):
        raise refused("tool_choice", "this model cannot call tools; it only answers questions in its Q&A format")
    kind = (body.response_format or {}).get("type", "text")
    if kind == "json_schema":
        raise refused("response_format", "this model cannot follow a JSON schema; it writes what it learned")
    if kind != "text":
        raise refused("response_format", f"this model cannot promise {kind} (JSON) output; use type text")
    if body.top_logprobs is not None and not body.logprobs:
        raise refused("top_logprobs", "top_logprobs needs logprobs: true")


def adjuster(loaded, body):
    """The LogitAdjuster for a request's logit_bias and penalties, or None when it has none (the fast path)."""
    if not body.logit_bias and body.presence_penalty == 0 and body.frequency_penalty == 0:
        return None
    vocab = loaded.tokenizer.vocab_size
    bias = {}
    for key, value in (body.logit_bias or {}).items():
        if not key.strip().isdigit() or int(key) >= vocab:
            raise refused("logit_bias", f"{key!r} is not a token id of this model (0 to {vocab - 1})")
        if not -100 <= value <= 100:
            raise refused("logit_bias", f"the bias of token {key} is {value}; biases go from -100 to 100")
        bias[int(key)] = value
    return LogitAdjuster(vocab, bias, body.presence_penalty, body.frequency_penalty)


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


def usage(prompt_tokens, completion_tokens):
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


openai_api = APIRouter(prefix="/v1")


# ----------------------------------------------------------------------------------------------
# /v1/models


def model_object(loaded):
    card = {"id": loaded.model_id, "object": "model", "created": 0, "owned_by": "mini-gpt"}
    return {**card, "chat": CHAT_FORMAT} if loaded.is_qa else card


@openai_api.get("/models")
def models(server: Server = Depends(server_of)):
    return {"object": "list", "data": [model_object(server.loaded)]}


@openai_api.get("/models/{model_id}")
def model(model_id: str, server: Server = Depends(server_of)):
    if model_id != server.loaded.model_id:
        raise HTTPException(404, {"message": f"the model {model_id!r} does not exist here; this server has "
                                             f"{server.loaded.model_id!r}", "type": "invalid_request_error",
                                  "param": "model", "code": "model_not_found"})
    return model_object(server.loaded)


# ----------------------------------------------------------------------------------------------
# /v1/completions


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
    check_abilities(body)
    sampling, adjust = sampling_args(body), adjuster(loaded, body)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts or len(prompts) * body.n > MAX_N:
        raise bad_request(f"give 1 to {MAX_N} prompts x n", "prompt")
    encoded = [encode_prompt(loaded, p) for p in prompts]
    stops = stop_strings(body)
    head = {"id": "cmpl-" + secrets.token_hex(12), "object": "text_completion", "created": int(time.time()),
            "model": loaded.model_id}
    choices = [Choice(i * body.n + j, p, ids, None if body.seed is None else body.seed + j)
               for i, (p, ids) in enumerate(zip(prompts, encoded)) for j in range(body.n)]
    prompt_tokens = sum(map(len, encoded))  # each prompt once, however many completions it gets (as OpenAI)

    def pieces(choice, cancelled=None):
        return server.pieces(loaded, choice, body.max_tokens, sampling, stops, body.logprobs, adjust, cancelled)

    if body.stream:
        return event_stream(stream_completion(server, loaded, body, choices, pieces, head, prompt_tokens))

    def work(cancelled):
        out = []
        for choice in choices:
            parts, entries, finish = [], [], None
            for piece, more, finish in pieces(choice, cancelled):
                parts.append(piece)
                entries += more
            offset = len(choice.prompt)
            if body.echo and body.logprobs is not None:  # the prompt's tokens too: a text scored through the API
                entries, offset = prompt_entries(server, loaded, choice.ids, body.logprobs) + entries, 0
            out.append({"text": (choice.prompt if body.echo else "") + "".join(parts), "index": choice.index,
                        "logprobs": logprob_block(body, entries, offset), "finish_reason": finish})
        return {**head, "choices": out, "usage": usage(prompt_tokens, sum(c.generated for c in choices))}

    return await unless_gone(request, work)


def stream_completion(server, loaded, body, choices, pieces, head, prompt_tokens):
    """The server-sent events of a streamed completion: each choice's pieces in turn, the usage if asked, [DONE]."""
    for choice in choices:
        offset = len(choice.prompt)
        if body.echo:
            scored = prompt_entries(server, loaded, choice.ids, body.logprobs) if body.logprobs is not None else []
            yield sse({**head, "choices": [{"text": choice.prompt, "index": choice.index,
                                            "logprobs": logprob_block(body, scored, 0), "finish_reason": None}]})
        for piece, entries, finish in pieces(choice):
            if piece or finish:
                yield sse({**head, "choices": [{"text": piece, "index": choice.index,
                                                "logprobs": logprob_block(body, entries, offset),
                                                "finish_reason": finish}]})
            offset += len(piece)
    if include_usage(body):
        yield sse({**head, "choices": [], "usage": usage(prompt_tokens, sum(c.generated for c in choices))})
    yield "data: [DONE]\n\n"


# ----------------------------------------------------------------------------------------------
# /v1/chat/completions


def message_text(message, index):
    """A message's content as text: a string, or its text parts joined; any other part is a 400 naming it."""
    if message.content is None or isinstance(message.content, str):
        return (message.content or "").strip()
    for part in message.content:
        if part.type != "text":
            raise bad_request(f"messages[{index}] holds a {part.type} part; this model reads text only",
                              "messages")
    return "".join(part.text or "" for part in message.content).strip()


def conversation(loaded, messages):
    """The text and ids the model is given for a conversation: the earlier (question, answer) turns in the Q&A
    format, as many of the newest as fit in its block_size window in front of the last question, then that
    question. System and developer messages are not given to it (CHAT_FORMAT says why)."""
    turns, question = [], None
    for index, message in enumerate(messages):
        if message.role in ("tool", "function"):
            raise refused("messages", "this model cannot call tools; it only answers questions in its Q&A format")
        if message.role not in ("user", "assistant"):
            continue
        text = message_text(message, index)
        if message.role == "user":
            question = (question or "") + text  # two user messages in a row: one question
        elif question is not None:
            turns.append((question, text))
            question = None
    if not question:
        raise bad_request("give at least one non-empty user message, and end with one", "messages")
    check_length(question, "messages")  # the question's length, not the template's around it
    given = qa_prompt(question)
    for earlier in reversed(turns):
        longer = example(*earlier) + given
        tokens = len(longer) if loaded.tokenizer.kind == "char" else len(loaded.tokenizer.encode(longer))
        if tokens > loaded.model.block_size:
            break
        given = longer
    return given, encode_prompt(loaded, given, "messages", checked=True)


def chat_logprobs(entries, top):
    """OpenAI's chat `logprobs` for these entries: each token with its log-probability and the `top` likeliest."""
    def token(text, logprob):
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {"content": [{**token(text, logp), "top_logprobs": [token(t, v) for t, v in list(best.items())[:top]]}
                        for text, logp, best, _ in entries], "refusal": None}


@openai_api.post("/chat/completions")
async def chat_completions(body: ChatRequest, request: Request, server: Server = Depends(server_of)):
    loaded = server.loaded
    if not loaded.is_qa:
        raise bad_request("this checkpoint is not a Q&A model, so it has no chat format; use /v1/completions, "
                          "or load a model trained on data/qa.txt", "model")
    check_abilities(body)
    sampling, adjust, stops = sampling_args(body), adjuster(loaded, body), stop_strings(body)
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    given, ids = conversation(loaded, body.messages)
    top = (body.top_logprobs or 0) if body.logprobs else None
    head = {"id": "chatcmpl-" + secrets.token_hex(12), "created": int(time.time()), "model": loaded.model_id}
    choices = [Choice(j, given, ids, None if body.seed is None else body.seed + j) for j in range(body.n)]

    def answer(choice, cancelled=None):
        return server.pieces(loaded, choice, max_tokens, sampling, stops, top, adjust, cancelled, answer=True)

    def logprobs(entries):
        return chat_logprobs(entries, top) if top is not None else None

    if body.stream:
        def chunk(choice, delta, finish=None, entries=()):
            return sse({**head, "object": "chat.completion.chunk", "choices": [
                {"index": choice.index, "delta": delta, "logprobs": logprobs(entries) if entries else None,
                 "finish_reason": finish}]})

        def events():
            for choice in choices:
                yield chunk(choice, {"role": "assistant"})
                for piece, entries, finish in answer(choice):
                    if piece:
                        yield chunk(choice, {"content": piece}, entries=entries)
                yield chunk(choice, {}, finish)
            if include_usage(body):
                yield sse({**head, "object": "chat.completion.chunk", "choices": [],
                           "usage": usage(len(ids), sum(c.generated for c in choices))})
            yield "data: [DONE]\n\n"

        return event_stream(events())

    def work(cancelled):
        out = []
        for choice in choices:
            pieces = list(answer(choice, cancelled))
            out.append({"index": choice.index, "finish_reason": pieces[-1][2],
                        "message": {"role": "assistant", "content": "".join(p for p, _, _ in pieces), "refusal": None},
                        "logprobs": logprobs([e for _, entries, _ in pieces for e in entries])})
        return {**head, "object": "chat.completion", "choices": out,
                "usage": usage(len(ids), sum(c.generated for c in choices))}

    return await unless_gone(request, work)
