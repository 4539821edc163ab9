"""The OpenAI API as LangChain-style and hand-written clients use it: message parts, nulls, every parameter either
working or refused by name, the conversation, honest usage counts, HTTP details, the API key and browsers."""

import hmac
import http.client
import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi", reason="the playground's extras: pip install -r requirements-web.txt")

import server as playground_server  # noqa: E402
from checkpoint import load_model  # noqa: E402
from conftest import free_port  # noqa: E402
from qa_format import END, example, prompt as qa_prompt  # noqa: E402
from test_playground import LiveServer, headless_chromium, toy_qa_model  # noqa: E402

QUESTION = "12+34等于多少？"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clients")
    toy_qa_model(folder, steps=150)  # a model that ends its answers
    return folder


@pytest.fixture(scope="module")
def live(root):
    with LiveServer(root, hosts=playground_server.LOCAL_HOSTS) as server:  # as playground.py binds 127.0.0.1
        yield server


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def model(root):
    return load_model(root / "out-qa" / "ckpt.pt")


def request(live, method, path, body=None, headers=None, raw=None):
    """(status, headers, text) of any request, with the headers given exactly as given (no defaults added)."""
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=60)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    connection.request(method, path, body=data, headers={"Host": f"127.0.0.1:{live.port}", **(headers or {})})
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    return response.status, response.headers, text


def post(live, path, body, **kwargs):
    return request(live, "POST", path, body, headers={"Content-Type": "application/json", **kwargs})


def greedy_completion(client, text, max_tokens=40, **extra):
    return client.completions.create(model="m", prompt=text, max_tokens=max_tokens, temperature=0, stop=[END],
                                     **extra).choices[0].text


# ---------------------------------------------------------------- 1. content as a list of parts


def test_content_as_a_list_of_text_parts_is_joined(client):
    plain = client.chat.completions.create(model="m", messages=[{"role": "user", "content": QUESTION}],
                                           max_tokens=20, temperature=0)
    parts = client.chat.completions.create(model="m", max_tokens=20, temperature=0, messages=[
        {"role": "user", "content": [{"type": "text", "text": "12+34"}, {"type": "text", "text": "等于多少？"}]}])
    assert parts.choices[0].message.content == plain.choices[0].message.content
    assert parts.usage.prompt_tokens == plain.usage.prompt_tokens


def test_a_part_of_another_kind_is_a_400_that_names_it(live):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    status, _, text = post(live, "/v1/chat/completions", {"messages": [
        {"role": "user", "content": [{"type": "text", "text": QUESTION}, image]}]})
    error = json.loads(text)["error"]
    assert status == 400 and "image_url" in error["message"] and error["param"] == "messages", text


def test_an_assistant_turn_with_null_content_is_an_empty_answer(live):
    status, _, text = post(live, "/v1/chat/completions", {"max_tokens": 4, "messages": [
        {"role": "user", "content": "1+1等于多少？"}, {"role": "assistant", "content": None},
        {"role": "user", "content": QUESTION}]})
    assert status == 200, text


# ---------------------------------------------------------------- 2. null means "not given"


NULLABLE = ["max_tokens", "temperature", "top_p", "n", "stream", "echo", "stop", "seed", "logprobs", "user"]


def test_null_for_an_optional_field_means_it_was_not_given(live):
    given = {"prompt": "问：", "seed": 5}
    status, _, plain = post(live, "/v1/completions", given)
    assert status == 200, plain
    nulls = {name: None for name in NULLABLE if name != "seed"}
    status, _, text = post(live, "/v1/completions", {**given, **nulls})
    assert status == 200, text
    assert json.loads(text)["choices"][0]["text"] == json.loads(plain)["choices"][0]["text"]  # the defaults
    chat_nulls = {**{name: None for name in NULLABLE if name not in ("echo", "logprobs")}, "logprobs": None,
                  "top_logprobs": None, "max_completion_tokens": None, "stream_options": None}
    status, _, text = post(live, "/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}],
                                                          **chat_nulls})
    assert status == 200, text


# ---------------------------------------------------------------- 3. parameters work, or are refused by name


def test_logit_bias_moves_tokens_as_openai_does(client, model):
    _, tokenizer = model
    free = greedy_completion(client, qa_prompt(QUESTION), max_tokens=6)
    forced = tokenizer.encode("9")[0]
    assert greedy_completion(client, qa_prompt(QUESTION), max_tokens=6,
                             logit_bias={str(forced): 100}) == "9" * 6  # +100: that token every time
    first = tokenizer.encode(free[0])[0]
    banned = client.completions.create(model="m", prompt=qa_prompt(QUESTION), max_tokens=6, temperature=0,
                                       logit_bias={str(first): -100}).choices[0].text
    assert free[0] not in banned  # -100: never that token


def test_penalties_follow_openais_formula_on_the_tokens_generated_so_far(client, model):
    net, tokenizer = model
    presence, frequency, steps = 0.7, 1.3, 20
    ids = tokenizer.encode("问：")
    counts = torch.zeros(tokenizer.vocab_size)
    with torch.no_grad():
        for _ in range(steps):  # by hand: logit - count * frequency - (count > 0) * presence, then greedy
            logits = net(torch.tensor([ids]))[0][0, -1]
            token = int((logits - counts * frequency - (counts > 0).float() * presence).argmax())
            counts[token] += 1
            ids.append(token)
    expected = tokenizer.decode(ids[2:])
    result = client.completions.create(model="m", prompt="问：", max_tokens=steps, temperature=0,
                                       presence_penalty=presence, frequency_penalty=frequency)
    assert result.choices[0].text == expected
    assert client.completions.create(model="m", prompt="问：", max_tokens=steps,
                                     temperature=0).choices[0].text != expected  # the penalties changed something


def test_chat_logprobs_are_the_completions_logprobs_of_the_same_tokens(client):
    chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": QUESTION}],
                                          max_tokens=12, temperature=0, logprobs=True, top_logprobs=3)
    choice = chat.choices[0]
    entries = choice.logprobs.content
    assert "".join(e.token for e in entries) == choice.message.content
    assert all(len(e.top_logprobs) == 3 and e.top_logprobs[0].logprob >= e.logprob - 1e-6 for e in entries)
    same = client.completions.create(model="m", prompt=qa_prompt(QUESTION), max_tokens=len(entries),
                                     temperature=0, logprobs=3)
    assert [e.logprob for e in entries] == pytest.approx(same.choices[0].logprobs.token_logprobs, abs=1e-6)
    streamed = client.chat.completions.create(model="m", messages=[{"role": "user", "content": QUESTION}],
                                              max_tokens=12, temperature=0, logprobs=True, stream=True)
    tokens = [e.token for c in streamed if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert "".join(tokens) == choice.message.content


@pytest.mark.parametrize("path, extra, param, phrase", [
    ("/v1/chat/completions", {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "cannot call tools"),
    ("/v1/chat/completions", {"tool_choice": "auto"}, "tool_choice", "cannot call tools"),
    ("/v1/chat/completions", {"functions": [{"name": "f"}]}, "functions", "cannot call tools"),
    ("/v1/chat/completions", {"function_call": "auto"}, "function_call", "cannot call tools"),
    ("/v1/chat/completions", {"response_format": {"type": "json_object"}}, "response_format", "JSON"),
    ("/v1/chat/completions", {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format", "JSON schema"),
    ("/v1/completions", {"suffix": "!"}, "suffix", "suffix"),
    ("/v1/completions", {"best_of": 3}, "best_of", "best_of"),
    ("/v1/completions", {"logit_bias": {"99999": 5}}, "logit_bias", "token id"),
    ("/v1/completions", {"logit_bias": {"1": 101}}, "logit_bias", "-100"),
    ("/v1/completions", {"presence_penalty": 2.5}, "presence_penalty", "presence_penalty"),
    ("/v1/chat/completions", {"top_logprobs": 3}, "top_logprobs", "logprobs"),
])
def test_what_this_model_cannot_do_is_refused_by_name(live, path, extra, param, phrase):
    body = {"prompt": "问："} if path == "/v1/completions" else {"messages": [{"role": "user", "content": QUESTION}]}
    status, _, text = post(live, path, {**body, "max_tokens": 2, **extra})
    error = json.loads(text)["error"]
    assert status == 400 and error["param"] == param and phrase in error["message"], text


def test_what_changes_nothing_is_still_accepted(live):
    ok = {"response_format": {"type": "text"}, "tools": None, "tool_choice": None, "best_of": 1, "suffix": None,
          "some_future_field": {"a": 1}}
    status, _, text = post(live, "/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}],
                                                          "max_tokens": 2, **{k: v for k, v in ok.items()
                                                                              if k not in ("best_of", "suffix")}})
    assert status == 200, text
    status, _, text = post(live, "/v1/completions", {"prompt": "问：", "max_tokens": 2, "best_of": 1, "suffix": None,
                                                     "some_future_field": 1})
    assert status == 200, text


# ---------------------------------------------------------------- 4. the conversation


def test_earlier_turns_reach_the_model_in_the_qa_format(client):
    history = [{"role": "user", "content": "1+1等于多少？"}, {"role": "assistant", "content": "2"},
               {"role": "user", "content": QUESTION}]
    chat = client.chat.completions.create(model="m", messages=history, max_tokens=20, temperature=0)
    given = example("1+1等于多少？", "2") + qa_prompt(QUESTION)
    assert chat.choices[0].message.content == greedy_completion(client, given, max_tokens=20)
    alone = client.chat.completions.create(model="m", messages=history[-1:], max_tokens=20, temperature=0)
    assert chat.usage.prompt_tokens == alone.usage.prompt_tokens + len(example("1+1等于多少？", "2"))


def test_a_system_message_is_not_given_to_the_model_and_the_model_says_so(client):
    question = [{"role": "user", "content": QUESTION}]
    plain = client.chat.completions.create(model="m", messages=question, max_tokens=20, temperature=0)
    told = client.chat.completions.create(model="m", max_tokens=20, temperature=0,
                                          messages=[{"role": "system", "content": "Answer in English."}, *question])
    assert told.choices[0].message.content == plain.choices[0].message.content
    assert told.usage.prompt_tokens == plain.usage.prompt_tokens
    described = client.models.retrieve(plain.model).model_dump()
    assert "system" in described["chat"] and "ignored" in described["chat"]["system"]


def test_a_full_window_keeps_the_newest_turns(client, model):
    net, _ = model
    turns = [(f"{a}+{a}等于多少？", str(2 * a)) for a in range(1, 9)]  # far more than the toy's 32 positions
    messages = [m for q, a in turns for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    chat = client.chat.completions.create(model="m", messages=[*messages, {"role": "user", "content": QUESTION}],
                                          max_tokens=10, temperature=0)
    kept = qa_prompt(QUESTION)
    for q, a in reversed(turns):  # the newest whole turns that fit in front of the question
        if len(example(q, a) + kept) > net.block_size:
            break
        kept = example(q, a) + kept
    assert chat.usage.prompt_tokens == len(kept) <= net.block_size
    assert chat.choices[0].message.content == greedy_completion(client, kept, max_tokens=10)


# ---------------------------------------------------------------- 5. usage, 6. the end marker


def test_the_prompt_is_counted_once_and_generated_tokens_the_same_way_on_both_endpoints(client):
    result = client.completions.create(model="m", prompt="问：", max_tokens=3, n=3, temperature=1.0, seed=1)
    assert result.usage.prompt_tokens == 2 and result.usage.completion_tokens == 9
    two = client.completions.create(model="m", prompt=["问：", "问：1"], max_tokens=2)
    assert two.usage.prompt_tokens == 5
    chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": QUESTION}],
                                          max_tokens=20, temperature=0, n=2)
    answer = chat.choices[0].message.content
    assert chat.choices[0].finish_reason == "stop", "the toy model's answer should end with the blank line"
    assert chat.usage.prompt_tokens == len(qa_prompt(QUESTION))
    assert chat.usage.completion_tokens == 2 * len(answer + END)  # the blank line it generated counts too
    streamed = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": QUESTION}],
                                                   max_tokens=20, temperature=0, stream=True,
                                                   stream_options={"include_usage": True}))
    assert streamed[-1].usage.completion_tokens == len(answer + END)


def test_an_answer_cut_short_never_ends_in_half_of_the_blank_line(client):
    question = [{"role": "user", "content": QUESTION}]
    answer = client.chat.completions.create(model="m", messages=question, max_tokens=20,
                                            temperature=0).choices[0].message.content
    cut = client.chat.completions.create(model="m", messages=question, max_tokens=len(answer) + 1, temperature=0)
    assert cut.choices[0].message.content == answer and cut.choices[0].finish_reason == "length"
    streamed = client.chat.completions.create(model="m", messages=question, max_tokens=len(answer) + 1,
                                              temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == answer


# ---------------------------------------------------------------- 7. HTTP details


def test_head_and_every_405_say_what_is_allowed(live):
    for method, path in (("GET", "/v1/completions"), ("HEAD", "/v1/chat/completions"), ("POST", "/v1/models")):
        status, headers, _ = request(live, method, path)
        assert status == 405 and headers["Allow"], (method, path)
    assert "POST" in request(live, "GET", "/v1/completions")[1]["Allow"]


def test_a_model_can_be_retrieved_by_its_id(client, live):
    [listed] = client.models.list().data
    assert client.models.retrieve(listed.id).id == listed.id
    status, _, text = request(live, "GET", "/v1/models/gpt-4")
    error = json.loads(text)["error"]
    assert status == 404 and error["code"] == "model_not_found" and "gpt-4" in error["message"]


def test_top_p_0_is_greedy(client):
    greedy = client.completions.create(model="m", prompt="问：", max_tokens=8, temperature=0)
    zero = client.completions.create(model="m", prompt="问：", max_tokens=8, temperature=1.0, top_p=0, seed=3)
    assert zero.choices[0].text == greedy.choices[0].text


def test_a_json_body_without_a_content_type_is_read_as_json(live):
    status, _, text = request(live, "POST", "/v1/completions", {"prompt": "问：", "max_tokens": 2})
    assert status == 200 and len(json.loads(text)["choices"][0]["text"]) == 2, text


# ---------------------------------------------------------------- 8. the API key


def test_the_key_is_checked_as_rfc_7235_says_in_constant_time_and_guards_the_schema(root, monkeypatch):
    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(playground_server.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    with LiveServer(root, api_key="s3cret") as live:
        body = {"prompt": "问", "max_tokens": 1}
        status, headers, _ = post(live, "/v1/completions", body)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        for scheme in ("Bearer", "bearer", "BEARER"):
            assert post(live, "/v1/completions", body, Authorization=f"{scheme} s3cret")[0] == 200, scheme
        assert post(live, "/v1/completions", body, Authorization="Bearer s3cre")[0] == 401
        assert compared, "keys are compared with hmac.compare_digest"
        for path in ("/openapi.json", "/docs"):
            assert request(live, "GET", path)[0] == 401, path
        assert request(live, "GET", "/openapi.json", headers={"Authorization": "Bearer s3cret"})[0] == 200


# ---------------------------------------------------------------- 9. browsers


def test_a_page_on_a_foreign_host_name_is_refused(live):
    # DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 sends Host: evil.example.
    status, _, text = request(live, "POST", "/v1/completions", {"prompt": "问", "max_tokens": 1},
                              headers={"Host": "evil.example:8000", "Content-Type": "application/json"})
    assert status == 403 and "Host" in json.loads(text)["error"]["message"]
    for host in ("localhost", f"localhost:{live.port}", "127.0.0.1", "[::1]:8000"):
        assert request(live, "GET", "/v1/models", headers={"Host": host})[0] == 200, host


PAGE = """<!doctype html><meta charset="utf-8"><title>elsewhere</title><script>
fetch("API/v1/completions", {method: "POST", headers: {"Content-Type": "application/json"},
                             body: JSON.stringify({prompt: "问：", max_tokens: 2})})
  .then(r => r.json()).then(j => { document.title = "ok:" + j.choices[0].text; })
  .catch(e => { document.title = "refused"; });
</script>"""


def test_another_origin_reaches_the_api_only_when_cors_allows_it(root, tmp_path):
    (tmp_path / "index.html").write_text(PAGE, encoding="utf-8")
    page_port = free_port()
    origin = f"http://127.0.0.1:{page_port}"
    pages = ThreadingHTTPServer(("127.0.0.1", page_port), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=pages.serve_forever, daemon=True).start()
    driver, wait = headless_chromium()
    try:
        for cors, expected in ((None, "refused"), (origin, "ok:")):
            with LiveServer(root, cors=cors) as live:
                (tmp_path / "index.html").write_text(PAGE.replace("API", live.url), encoding="utf-8")
                driver.get(f"{origin}/index.html?api={live.port}")  # a new address: not the cached page
                wait.until(lambda d: d.title in ("refused",) or d.title.startswith("ok:"))
                assert driver.title.startswith(expected), (cors, driver.title)
    finally:
        driver.quit()
        pages.shutdown()
