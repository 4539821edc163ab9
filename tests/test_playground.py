"""The playground: its OpenAI-compatible API (through the official `openai` client), its safety
limits, and the page in a real headless Chromium."""

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

fastapi = pytest.importorskip("fastapi", reason="the playground's extras: pip install -r requirements-web.txt")
openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

import playground  # noqa: E402
import prepare_qa_data  # noqa: E402
import server as playground_server  # noqa: E402
import serving  # noqa: E402
import train  # noqa: E402
from checkpoint import load_model  # noqa: E402
from conftest import REPO, free_port, run  # noqa: E402
from qa_format import example, prompt as qa_prompt  # noqa: E402
from utils import full_split_loss  # noqa: E402

TOY = ["--n_embd", "32", "--num_heads", "2", "--n_layer", "2", "--block_size", "32", "--batch_size", "16",
       "--eval_iters", "2", "--learning_rate", "3e-3", "--time_budget", "0", "--sample_tokens", "0", "--device", "cpu"]


def toy_qa_model(folder, steps=40):
    """folder/qa.txt and its held-out questions, from a few poems, and a toy model trained on it in folder/out-qa
    (by 150 steps it ends its answers with the blank line)."""
    poems = folder / "poems.txt"
    poems.write_text((REPO / "data" / "chinese.txt").read_text(encoding="utf-8")[:3000], encoding="utf-8")
    # The mix of the tests' toy model stays as it was when they were written (the recipe's own defaults may move)
    assert run(prepare_qa_data, "--poems", poems, "--num_poems", "10", "--three_digit", "100", "--poem_repeats", "4",
               "--rewrites", "0", "--add2_repeats", "3", "--sub2_repeats", "1",
               "--out", folder / "qa.txt", "--heldout", folder / "heldout.tsv") == 0
    assert run(train, "--data", folder / "qa.txt", "--out_dir", folder / "out-qa", "--max_iters", str(steps),
               "--eval_interval", str(steps), *TOY) == 0


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A folder like the repo: out-qa/ckpt.pt, a toy Q&A model, and a file outside the output folders."""
    folder = tmp_path_factory.mktemp("playground")
    toy_qa_model(folder)
    (folder / "secret").mkdir()
    shutil.copy(folder / "out-qa" / "ckpt.pt", folder / "secret" / "ckpt.pt")
    return folder


class LiveServer:
    """The app on 127.0.0.1 in a background thread, stopped when the test ends."""

    def __init__(self, root, api_key=None, checkpoint=None, **app_options):
        loaded = serving.load(checkpoint or root / "out-qa" / "ckpt.pt", "cpu")
        self.state = serving.Server(loaded, "cpu", api_key=api_key, root=root)
        self.port = free_port()
        app = playground_server.create_app(self.state, **app_options)  # app_options: as playground.py sets them
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("the playground did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def post(self, path, body, raw=None, headers=None):
        """(status, parsed JSON) of a POST; raw sends bytes as they are."""
        data = raw if raw is not None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method="POST",
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()


@pytest.fixture(scope="module")
def live(root):
    with LiveServer(root) as server:
        yield server


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=60)


# ---------------------------------------------------------------- the API, with the official client


def test_models_and_a_completion(client, live):
    [model] = client.models.list().data
    assert model.id == "mini-gpt-out-qa"
    result = client.completions.create(model=model.id, prompt="问：", max_tokens=12, temperature=0.8, seed=3)
    assert len(result.choices) == 1 and len(result.choices[0].text) == 12
    assert result.choices[0].finish_reason == "length" and result.usage.completion_tokens == 12


def test_the_python_client_raises_openais_error_for_a_bad_value(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="m", prompt="问", temperature=-1)
    assert caught.value.status_code == 400 and caught.value.body["param"] == "temperature"
    assert "temperature" in caught.value.body["message"] and caught.value.body["type"] == "invalid_request_error"


def test_streamed_chunks_join_to_the_same_text_under_the_same_seed(client):
    whole = client.completions.create(model="m", prompt="问：1", max_tokens=30, temperature=1.0, seed=7)
    chunks = client.completions.create(model="m", prompt="问：1", max_tokens=30, temperature=1.0, seed=7, stream=True)
    assert "".join(chunk.choices[0].text for chunk in chunks) == whole.choices[0].text


def test_stop_n_and_logprobs(client):
    free = client.completions.create(model="m", prompt="问：", max_tokens=40, temperature=0, seed=1)
    stop = free.choices[0].text[5:7]  # two characters the greedy text is sure to contain
    cut = client.completions.create(model="m", prompt="问：", max_tokens=40, temperature=0, stop=[stop])
    assert cut.choices[0].text == free.choices[0].text[: free.choices[0].text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"

    two = client.completions.create(model="m", prompt="答：", max_tokens=10, temperature=1.0, n=2, seed=5)
    assert [c.index for c in two.choices] == [0, 1] and all(len(c.text) == 10 for c in two.choices)

    with_logprobs = client.completions.create(model="m", prompt="问：", max_tokens=6, temperature=0, logprobs=3)
    lp = with_logprobs.choices[0].logprobs
    assert lp.tokens == list(with_logprobs.choices[0].text) and len(lp.token_logprobs) == 6
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 3 and logprob <= 0
        assert max(top.values()) == pytest.approx(logprob, abs=1e-4)  # greedy picks the most likely
        assert token in top


def test_chat_completion(client):
    answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "12+34等于多少？"}],
                                            max_tokens=10)
    message = answer.choices[0].message
    assert message.role == "assistant" and "\n\n" not in message.content
    streamed = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "12+34等于多少？"}],
                                              max_tokens=10, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == message.content


def test_echo_with_logprobs_scores_a_text_as_the_model_does(client, root):
    # How evaluation harnesses use a completions endpoint: echo a text with max_tokens 0 and read its logprobs.
    model, tokenizer = load_model(root / "out-qa" / "ckpt.pt")
    text = (root / "qa.txt").read_text(encoding="utf-8")
    passage = text[-(2 * model.block_size + 1):]  # two whole windows: the whole-split evaluation scores the same
    result = client.completions.create(model="m", prompt=passage, max_tokens=0, echo=True, logprobs=2)
    choice = result.choices[0]
    lp = choice.logprobs
    assert choice.text == passage and "".join(lp.tokens) == passage and lp.text_offset == list(range(len(passage)))
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing comes before the first token
    mean_nll = -sum(lp.token_logprobs[1:]) / (len(passage) - 1)
    ids = torch.tensor(tokenizer.encode(passage))
    assert mean_nll == pytest.approx(full_split_loss(model, ids, model.block_size, 8, "cpu"), abs=1e-5)
    with_more = client.completions.create(model="m", prompt="问：", max_tokens=3, echo=True, logprobs=1,
                                          temperature=0)
    lp = with_more.choices[0].logprobs
    assert "".join(lp.tokens) == with_more.choices[0].text and len(lp.tokens) == 2 + 3
    streamed = list(client.completions.create(model="m", prompt="问：", max_tokens=3, echo=True, logprobs=1,
                                              temperature=0, stream=True))
    assert streamed[0].choices[0].logprobs.tokens == ["问", "："]


NODE_CLIENT = REPO / "tests" / "node"


@pytest.mark.skipif(shutil.which("node") is None or not (NODE_CLIENT / "node_modules" / "openai").is_dir(),
                    reason="the Node SDK test needs node and `npm ci` in tests/node (.ci/run does both)")
def test_the_official_node_sdk_drives_the_api(live, client, root):
    # A client this code doesn't control: completions, a stream with its usage, chat with max_completion_tokens and
    # stop, scoring a text with echo + logprobs, and an error, each as a JavaScript user would call it.
    model, tokenizer = load_model(root / "out-qa" / "ckpt.pt")
    passage = (root / "qa.txt").read_text(encoding="utf-8")[-(model.block_size + 1):]
    result = subprocess.run(["node", str(NODE_CLIENT / "client.mjs"), live.url + "/v1", passage],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    same = client.completions.create(model="m", prompt="问：", max_tokens=8, temperature=0)  # the Python client's
    assert out["completion"]["text"] == same.choices[0].text and out["completion"]["usage"]["completion_tokens"] == 8
    assert out["stream"]["text"] == same.choices[0].text and out["stream"]["usage"]["completion_tokens"] == 8
    answer = out["chat"]["answer"]
    generated = answer + ("\n\n" if out["chat"]["free_finish"] == "stop" else "")
    assert out["chat"]["capped"] == generated[:2].split("\n\n")[0].removesuffix("\n")
    assert answer, "the toy model's greedy answer is empty: nothing to stop at"
    assert out["chat"]["stopped"] == answer[: answer.index(answer[-1])] and out["chat"]["stop_finish"] == "stop"
    score = out["score"]
    assert "".join(score["tokens"]) == passage and score["token_logprobs"][0] is None
    ids = torch.tensor(tokenizer.encode(passage))
    assert -sum(score["token_logprobs"][1:]) / (len(passage) - 1) == pytest.approx(
        full_split_loss(model, ids, model.block_size, 8, "cpu"), abs=1e-5)
    assert out["parts"] == answer  # the question as two text parts: the same question
    earlier = example("1+1等于多少？", "2") + qa_prompt("12+34等于多少？")  # the system message is not given
    same_turns = client.completions.create(model="m", prompt=earlier, max_tokens=40, temperature=0, stop=["\n\n"])
    assert out["turns"] == {"answer": same_turns.choices[0].text, "prompt_tokens": len(earlier)}
    assert out["error"]["status"] == 400 and out["error"]["param"] == "temperature"
    assert out["error"]["type"] == "invalid_request_error"


def test_chat_takes_max_completion_tokens_and_stop(client):
    # max_completion_tokens is the field today's SDKs document for chat (LangChain's ChatOpenAI sends it).
    question = [{"role": "user", "content": "12+34等于多少？"}]
    free = client.chat.completions.create(model="m", messages=question, max_tokens=40, temperature=0, seed=1)
    text = free.choices[0].message.content
    generated = text + ("\n\n" if free.choices[0].finish_reason == "stop" else "")  # the blank line ends an answer
    capped = client.chat.completions.create(model="m", messages=question, max_completion_tokens=2, temperature=0)
    # The first two characters the model writes, up to the blank line if it comes that soon (cut by length, a
    # newline held back as a possible start of that blank line is not part of the answer).
    assert capped.choices[0].message.content == generated[:2].split("\n\n")[0].removesuffix("\n")
    assert capped.usage.completion_tokens == min(2, len(generated))  # every token generated counts
    if len(text) > 2:
        assert capped.choices[0].finish_reason == "length"
    assert text, "the toy model's greedy answer is empty: nothing to stop at"
    stop = text[-1]  # a character the greedy answer is sure to contain, however short it is
    cut = client.chat.completions.create(model="m", messages=question, max_tokens=40, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_a_stream_ends_with_usage_when_asked(client):
    chunks = list(client.completions.create(model="m", prompt="问：", max_tokens=5, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.prompt_tokens == 2 and all(c.usage is None for c in chunks[:-1])
    chat = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "1+1等于多少？"}],
                                               max_tokens=4, stream=True, stream_options={"include_usage": True}))
    answer = "".join(c.choices[0].delta.content or "" for c in chat[:-1])
    stopped = chat[-2].choices[0].finish_reason == "stop"  # then the blank line that ended it was generated too
    assert chat[-1].choices == [] and chat[-1].usage.completion_tokens == len(answer) + (2 if stopped else 0)


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": "问", "max_tokens": 2, "seed": 2**64}),
    ("/v1/completions", {"prompt": "问", "max_tokens": 2, "seed": 2**64, "stream": True}),
    ("/v1/completions", {"prompt": "问", "max_tokens": 2, "seed": 2**63 - 1, "n": 2}),  # seed + 1 overflows int64
    ("/v1/completions", {"prompt": "问", "max_tokens": 2, "seed": -2**63}),
    ("/api/generate", {"prompt": "问", "max_tokens": 2, "seed": 18446744073709551616}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "1+1等于多少？"}], "max_tokens": 2,
                              "seed": 2**64}),
])
def test_any_seed_is_an_answer_or_a_400_never_a_500(live, path, body):
    status, text = live.post(path, body)
    if abs(body["seed"]) >= 2**63 and body["seed"] != -2**63:
        assert status == 400, text
        assert json.loads(text)["error"]["param"] == "seed"
    else:
        assert status == 200, text
        assert len(json.loads(text)["choices"]) == body.get("n", 1)


def test_fields_the_sdks_send_are_accepted(live):
    # What the SDKs send besides the prompt is never a reason to refuse: a user id and options of other APIs are
    # ignored, as OpenAI's own server ignores them; the penalties and the bias take effect (test_openai_clients.py).
    extras = {"user": "u1", "frequency_penalty": 0.5, "presence_penalty": 0.5, "logit_bias": {"5": -100},
              "suffix": None, "best_of": 1, "metadata": {"a": "b"}, "service_tier": "auto", "store": False}
    status, text = live.post("/v1/completions", {"prompt": "问", "max_tokens": 2, **extras})
    assert status == 200, text
    status, text = live.post("/v1/chat/completions", {"messages": [{"role": "system", "content": "be brief"},
                                                                   {"role": "user", "content": "1+1等于多少？"}],
                                                      "max_tokens": 2, "response_format": {"type": "text"},
                                                      "parallel_tool_calls": False, **extras})
    assert status == 200, text


def test_every_error_has_openais_shape_and_status(live):
    def error_of(status_text):
        status, text = status_text
        return status, json.loads(text)["error"]

    request = urllib.request.Request(live.url + "/v1/nowhere")
    try:
        urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as e:
        status, error = e.code, json.loads(e.read().decode())["error"]
    assert status == 404 and set(error) == {"message", "type", "param", "code"}
    try:
        urllib.request.urlopen(live.url + "/v1/completions", timeout=30)  # a GET where only POST is served
    except urllib.error.HTTPError as e:
        status, error = e.code, json.loads(e.read().decode())["error"]
    assert status == 405 and set(error) == {"message", "type", "param", "code"}
    for raw in (b'{"prompt": "abc", ', b'{"prompt": "\xff\xfe"}', b"[" * 1000 + b"]" * 1000, b"\xff\xfe{}"):
        status, error = error_of(live.post("/v1/completions", None, raw=raw))
        assert status == 400 and set(error) == {"message", "type", "param", "code"}, raw[:20]
        assert error["param"] is None or not str(error["param"]).isdigit()  # never a byte offset


# ---------------------------------------------------------------- safety


@pytest.mark.parametrize("body, phrase", [
    ({"prompt": "问", "max_tokens": 5000}, "max_tokens"),
    ({"prompt": "问" * 5000, "max_tokens": 1}, "at most 4,000"),
    ({"prompt": "Zebra", "max_tokens": 1}, "'Z'"),
    ({"prompt": "问", "temperature": -1}, "temperature"),
    ({"prompt": "问", "top_p": 1.5}, "top_p"),  # 0 is allowed: greedy
    ({"prompt": "问", "top_k": 0}, "top_k"),
    ({"prompt": "问", "stop": ["", "x"]}, "stop"),
])
def test_bad_requests_get_a_clear_400(live, body, phrase):
    status, text = live.post("/v1/completions", body)
    assert status == 400, text
    error = json.loads(text)["error"]
    assert phrase in error["message"] and error["type"] == "invalid_request_error"


def test_malformed_json_is_a_4xx_without_a_traceback(live):
    status, text = live.post("/v1/completions", None, raw=b'{"prompt": "abc", ')
    assert status in (400, 422) and "Traceback" not in text and "error" in json.loads(text)
    status, text = live.post("/v1/chat/completions", {"messages": "hello"})
    assert status in (400, 422)


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "secret/ckpt.pt", "out-qa/../secret/ckpt.pt",
                                  "out-qa/log.csv", "out-qa/missing/ckpt.pt"])
def test_the_picker_loads_only_ckpt_files_under_the_output_folders(live, path):
    status, text = live.post("/api/load", {"path": path})
    assert status == 400, text
    assert live.post("/api/load", {"path": "out-qa/ckpt.pt"})[0] == 200
    with urllib.request.urlopen(live.url + "/api/checkpoints") as response:
        assert json.load(response)["checkpoints"] == ["out-qa/ckpt.pt"]


def test_a_body_larger_than_any_valid_request_is_a_413(live):
    padding = "x" * (2 << 20)  # 2 MB in a field the API ignores
    status, text = live.post("/v1/completions", {"prompt": "问", "max_tokens": 1, "ignored": padding})
    assert status == 413 and json.loads(text)["error"]["type"] == "invalid_request_error"
    chunked = urllib.request.Request(live.url + "/v1/completions", method="POST",  # no Content-Length to trust
                                     data=iter([b'{"prompt": "', b"x" * (2 << 20), b'"}']),
                                     headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    try:
        urllib.request.urlopen(chunked, timeout=60)
        status = 200
    except urllib.error.HTTPError as e:
        status = e.code
    assert status == 413
    # The largest valid request still fits: 8 prompts of 4,000 characters, each a 4-byte emoji escaped as \\uXXXX pairs.
    status, text = live.post("/v1/completions", {"prompt": ["🙂" * 4000] * 8, "max_tokens": 1})
    assert status == 400 and "never seen" in json.loads(text)["error"]["message"]  # read and answered, not refused


@pytest.mark.parametrize("body, phrase, param", [
    ({"prompt": "问", "temperature": float("nan")}, "finite", "temperature"),
    ({"prompt": "问", "stop": "问" * 3000}, "stop", "stop"),  # longer than any answer (a 1M one is over the body limit)
])
def test_nonsense_values_are_named_for_what_they_are(live, body, phrase, param):
    status, text = live.post("/v1/completions", None, raw=json.dumps(body).encode())  # json.dumps writes NaN
    error = json.loads(text)["error"]
    assert status == 400 and phrase in error["message"] and error["param"] == param, text


def test_chat_counts_the_question_not_its_template_and_has_the_nullable_fields(live, client):
    question = "1" * 4000  # the longest question allowed: the 问：/答： around it doesn't count
    status, text = live.post("/v1/chat/completions", {"messages": [{"role": "user", "content": question}],
                                                      "max_tokens": 1})
    assert status == 200, text
    choice = json.loads(text)["choices"][0]
    assert choice["logprobs"] is None and choice["message"]["refusal"] is None  # the SDKs' types have both
    status, text = live.post("/v1/chat/completions", {"messages": [{"role": "user", "content": question + "1"}]})
    assert status == 400 and "4,000" in json.loads(text)["error"]["message"]


def test_only_json_bodies_are_read(live):
    status, text = live.post("/v1/completions", {"prompt": "问", "max_tokens": 1},
                             headers={"Content-Type": "application/vnd.x+json"})
    assert status == 415 and "application/json" in json.loads(text)["error"]["message"]
    status, _ = live.post("/v1/completions", {"prompt": "问", "max_tokens": 1},
                          headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 200


def test_the_picker_lists_only_what_it_loads_and_never_shows_a_full_path(live, root, tmp_path):
    outside = tmp_path / "ckpt.pt"
    outside.write_bytes(b"not a checkpoint")
    (root / "out-link").mkdir(exist_ok=True)
    link = root / "out-link" / "ckpt.pt"
    link.unlink(missing_ok=True)
    link.symlink_to(outside)  # a ckpt.pt inside an output folder that leads outside it
    (root / "out-junk").mkdir(exist_ok=True)
    (root / "out-junk" / "ckpt.pt").write_bytes(b"junk")
    try:
        with urllib.request.urlopen(live.url + "/api/checkpoints") as response:
            listed = json.load(response)["checkpoints"]
        assert "out-link/ckpt.pt" not in listed and "out-junk/ckpt.pt" in listed
        status, text = live.post("/api/load", {"path": "out-junk/ckpt.pt"})
        message = json.loads(text)["error"]["message"]
        assert status == 400 and "out-junk/ckpt.pt" in message and str(root) not in message
    finally:
        link.unlink()
        (root / "out-junk" / "ckpt.pt").unlink()
        (root / "out-link").rmdir()
        (root / "out-junk").rmdir()


def test_twenty_concurrent_requests_all_complete(client):
    def ask(i):
        return client.completions.create(model="m", prompt="问：", max_tokens=8, temperature=1.0, seed=i)

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(ask, range(20)))
    assert all(len(r.choices) == 1 and len(r.choices[0].text) == 8 for r in results)
    again = ask(7).choices[0].text
    assert results[7].choices[0].text == again  # concurrency did not disturb a seeded request


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_goes_away_stops_the_generation(live, stream):
    # Streamed or not: a client that has gone must not leave a core generating 8 x 2,000 tokens for nobody.
    import socket

    state = live.state
    started = state.tokens_generated
    body = json.dumps({"prompt": "问：", "max_tokens": 2000, "n": 8, "stream": stream, "temperature": 1.0}).encode()
    client = socket.create_connection(("127.0.0.1", live.port), timeout=30)
    client.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    with state.changed:  # generation is under way (an event, not a guess at how long it takes to start)
        assert state.changed.wait_for(lambda: state.tokens_generated > started + 10, timeout=60)
    client.close()
    with state.changed:  # ... and then every generation has ended
        assert state.changed.wait_for(lambda: state.active == 0, timeout=60)
    assert state.tokens_generated - started < 2000  # stopped within its first choice, far short of 16,000


def test_api_key_is_required_when_set(root):
    with LiveServer(root, api_key="s3cret") as server:
        status, text = server.post("/v1/completions", {"prompt": "问", "max_tokens": 1})
        assert status == 401 and "API key" in text
        status, _ = server.post("/v1/completions", {"prompt": "问", "max_tokens": 1},
                                headers={"Authorization": "Bearer s3cret"})
        assert status == 200


def test_binding_beyond_this_computer_warns_without_a_key(root, monkeypatch, capsys):
    monkeypatch.setattr(playground.uvicorn, "run", lambda app, **kwargs: None)
    ckpt = root / "out-qa" / "ckpt.pt"
    assert run(playground, "--checkpoint", ckpt, "--host", "0.0.0.0", "--device", "cpu") == 0
    assert "no authentication" in capsys.readouterr().err
    assert run(playground, "--checkpoint", ckpt, "--device", "cpu") == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "http://localhost:8000" in captured.out


# ---------------------------------------------------------------- the page in a real browser


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture
def page_server(live, root):
    """The server the browser test uses: the toy model, or PLAYGROUND_CHECKPOINT (for the README's screenshots)."""
    if not os.environ.get("PLAYGROUND_CHECKPOINT"):
        yield live
        return
    with LiveServer(root, checkpoint=os.environ["PLAYGROUND_CHECKPOINT"]) as server:
        yield server


def headless_chromium():
    """A headless Chromium driven by selenium, and a wait of up to 60 s (skipped, or in CI failed, without one)."""
    if not (chromium() and shutil.which("chromedriver")):
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: .ci/run installs chromium and chromium-driver")
        pytest.skip("no chromium + chromedriver here (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                 "--lang=en-US"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for tests that read it
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    return driver, WebDriverWait(driver, 60)


def test_the_page_in_headless_chromium(page_server, tmp_path):
    live = page_server
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    shots = os.environ.get("PLAYGROUND_SCREENSHOTS")
    driver, wait = headless_chromium()
    try:
        driver.get(live.url)
        wait.until(lambda d: d.find_element(By.ID, "checkpoint").get_attribute("value"))
        prompt = driver.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys(os.environ.get("PLAYGROUND_PROMPT", "问："))
        max_tokens = driver.find_element(By.ID, "max_tokens")
        max_tokens.clear()
        max_tokens.send_keys("40")
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: d.find_element(By.ID, "speed").text)  # the stream has ended
        tokens = driver.find_elements(By.CSS_SELECTOR, "#output .tok")
        assert len(tokens) == 40

        ActionChains(driver).move_to_element(tokens[5]).perform()
        bars = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#bars .bar"))
        probs = [float(b.get_attribute("data-prob")) for b in bars]
        assert 1 <= len(probs) <= 11 and sum(probs) <= 1 + 1e-6  # the top 10, and the chosen one if not
        chosen = driver.find_elements(By.CSS_SELECTOR, "#bars .bar.chosen")
        assert len(chosen) == 1 and chosen[0].get_attribute("data-char") == driver.execute_script("return steps[5].char")
        if shots:
            driver.save_screenshot(os.path.join(shots, "playground_en.png"))

        driver.find_element(By.CSS_SELECTOR, '.tab[data-tab="attention"]').click()
        cells = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap rect.cell"))
        T = len(driver.find_elements(By.CSS_SELECTOR, "#strip span"))
        assert T == min(len(prompt.get_attribute("value")) + 40, live.state.loaded.model.block_size)
        assert len(cells) == T * T

        driver.find_element(By.CSS_SELECTOR, '.tab[data-tab="card"]').click()  # the model card: how to share it
        facts = wait.until(lambda d: d.find_element(By.ID, "facts").text)
        assert "python3 export_hf.py --checkpoint " in facts and " --out hf/" in facts

        driver.find_element(By.ID, "lang").click()
        assert driver.find_element(By.CSS_SELECTOR, '.tab[data-tab="generate"]').text == "生成"
        assert driver.find_element(By.ID, "lang").text == "English"
        if shots:
            driver.save_screenshot(os.path.join(shots, "playground_zh_attention.png"))
            driver.find_element(By.CSS_SELECTOR, '.tab[data-tab="generate"]').click()
            ActionChains(driver).move_to_element(driver.find_elements(By.CSS_SELECTOR, "#output .tok")[5]).perform()
            driver.save_screenshot(os.path.join(shots, "playground_zh.png"))
    finally:
        driver.quit()
