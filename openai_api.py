"""OpenAI's shapes (/v1), so OpenAI's clients can talk to a learner's model: GET /v1/models, POST /v1/completions
and POST /v1/chat/completions (Q&A models), plain or streamed, with their request schemas."""

import secrets
import time
from dataclasses import dataclass
from typing import List, Optional, Union

import torch
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from qa_format import prompt as qa_prompt
from sampling import StopText
from serving import (
    MAX_N, MAX_TOKENS, SEED, TOP, Server, bad_request, check_length, encode_prompt, event_stream, sampling_args,
    scored_tokens, server_of, sse, unless_gone,
)


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
