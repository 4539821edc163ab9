"""The playground's surprise view: every character's −log2 p under the model, through the API and in a real
headless Chromium, for a character model and a BPE one; and a BPE model through the OpenAI-compatible API."""

import json
import math
import os
import re
import urllib.request

import pytest
import torch

pytest.importorskip("fastapi", reason="the playground's extras: pip install -r requirements-web.txt")
openai = pytest.importorskip("openai")

import page_api  # noqa: E402
import train  # noqa: E402
from checkpoint import load_model  # noqa: E402
from conftest import REPO, run  # noqa: E402
from test_playground import TOY, LiveServer, headless_chromium, toy_qa_model  # noqa: E402
from utils import full_split_loss, full_split_scores  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A toy Q&A model in out-qa/, as test_playground.py's, built here so the two files run side by side."""
    folder = tmp_path_factory.mktemp("surprise")
    toy_qa_model(folder)
    return folder


@pytest.fixture(scope="module")
def bpe_checkpoint(root, tmp_path_factory):
    """A toy BPE model on the same Q&A text."""
    out = tmp_path_factory.mktemp("bpe") / "out-bpe"
    assert run(train, "--data", root / "qa.txt", "--out_dir", out, "--tokenizer", "bpe", "--vocab_size", "300",
               "--max_iters", "40", "--eval_interval", "40", *TOY) == 0
    return out / "ckpt.pt"


def expected_bits(checkpoint, text):
    """What train.py's whole-split evaluation gives for text: (bits per character, total bits)."""
    model, tokenizer = load_model(checkpoint)
    ids = torch.tensor(tokenizer.encode(text))
    loss, bpc = full_split_scores(model, ids, model.block_size, 8, "cpu", tokenizer.chars_per_token)
    return bpc, loss * (len(ids) - 1) / math.log(2)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_the_surprise_view_scores_a_text_as_the_whole_split_evaluation_does(root, bpe_checkpoint, kind):
    checkpoint = root / "out-qa" / "ckpt.pt" if kind == "char" else bpe_checkpoint
    with LiveServer(root, checkpoint=checkpoint) as server:
        with urllib.request.urlopen(server.url + "/api/validation_start") as response:
            start = json.load(response)["text"]
        status, text = server.post("/api/surprise", {"text": start})
    result = json.loads(text)
    qa = (root / "qa.txt").read_text(encoding="utf-8")
    assert status == 200 and start == qa[int(0.9 * len(qa)):][:page_api.VALIDATION_START_CHARS]
    assert len(start) > 2 * 32  # more than two windows of the toy's block_size
    bpc, total = expected_bits(checkpoint, start)
    assert result["kind"] == kind and result["mean_bits"] == pytest.approx(bpc, abs=1e-5)
    assert result["total_bits"] == pytest.approx(total, rel=1e-5)
    assert "".join(result["chars"]) == start  # every character shown once, in order
    assert sum(b for b in result["char_bits"] if b is not None) == pytest.approx(total, rel=1e-5)  # bits kept whole
    assert result["char_bits"][0] is None and result["tokens"][0]["bits"] is None  # the first token: only context
    assert all(len(t["top"]) == page_api.SURPRISE_TOP for t in result["tokens"][1:])
    if kind == "bpe":
        assert len(result["tokens"]) < len(start) and max(result["char_token"]) == len(result["tokens"]) - 1


def test_a_bpe_model_through_the_api(root, bpe_checkpoint):
    model, tokenizer = load_model(bpe_checkpoint)
    passage = (root / "qa.txt").read_text(encoding="utf-8")[-300:]
    ids = tokenizer.encode(passage)
    with LiveServer(root, checkpoint=bpe_checkpoint) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        scored = client.completions.create(model="m", prompt=passage, max_tokens=0, echo=True, logprobs=2)
        whole = client.completions.create(model="m", prompt="问：", max_tokens=30, temperature=0, logprobs=1)
        streamed = list(client.completions.create(model="m", prompt="问：", max_tokens=30, temperature=0, stream=True))
        answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "37+58等于多少？"}])
    lp = scored.choices[0].logprobs
    assert len(lp.tokens) == len(ids) and lp.token_logprobs[0] is None  # one entry per token, not per character
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset) and lp.text_offset[-1] < len(passage)
    assert -sum(lp.token_logprobs[1:]) / (len(ids) - 1) == pytest.approx(
        full_split_loss(model, torch.tensor(ids), model.block_size, 8, "cpu"), abs=1e-5)
    text = whole.choices[0].text
    assert "".join(c.choices[0].text for c in streamed) == text
    assert whole.usage.completion_tokens == 30  # tokens generated, not characters
    assert len(whole.choices[0].logprobs.tokens) <= 30
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_the_surprise_view_refuses_what_it_cannot_score(root):
    with LiveServer(root) as live:
        status, text = live.post("/api/surprise", {"text": "问"})
        assert status == 400 and "at least two tokens" in json.loads(text)["error"]["message"]
        status, text = live.post("/api/surprise", {"text": "问问 ☃"})
        assert status == 400 and "never seen" in json.loads(text)["error"]["message"]


def test_the_surprise_view_in_headless_chromium(root, bpe_checkpoint):
    # The char model, then a BPE one (PLAYGROUND_SURPRISE_CHECKPOINT: the docs' screenshot, of a real model).
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    shots = os.environ.get("PLAYGROUND_SCREENSHOTS")
    bpe = os.environ.get("PLAYGROUND_SURPRISE_CHECKPOINT") or bpe_checkpoint
    driver, wait = headless_chromium()
    try:
        for checkpoint, kind in ((root / "out-qa" / "ckpt.pt", "char"), (bpe, "bpe")):
            # The docs' screenshot serves the repo's own output folders, so the picker shows out-.../ckpt.pt.
            folder = REPO if os.environ.get("PLAYGROUND_SURPRISE_CHECKPOINT") and kind == "bpe" else root
            with LiveServer(folder, checkpoint=checkpoint) as server:
                driver.get(server.url)
                wait.until(lambda d: d.find_element(By.ID, "checkpoint").get_attribute("value"))
                driver.find_element(By.CSS_SELECTOR, '.tab[data-tab="surprise"]').click()
                driver.find_element(By.ID, "val_start").click()  # the validation split's start, scored at once
                mean = wait.until(lambda d: d.find_element(By.ID, "surprise_mean").text)
                text = driver.find_element(By.ID, "surprise_text").get_attribute("value")
                bpc, _ = expected_bits(checkpoint, text)
                assert f"{bpc:.4f} bits per character" in mean
                # Every span's character and bits in one call (one WebDriver round trip per span is slow).
                shown, bits = driver.execute_script(
                    "const s = [...document.querySelectorAll('#surprise_out span')];"
                    "return [s.map((e) => e.textContent), s.map((e) => e.dataset.bits)];")
                assert "".join(shown) == text
                shaded = [float(b) for b in bits[1:] if b]
                assert len(shaded) >= len(bits) - 3 and max(shaded) > 2 * min(shaded)  # easy and hard characters
                note = driver.find_element(By.ID, "surprise_note").text
                assert ("spread evenly over its characters" in note) == (kind == "bpe")
                hardest = max(range(1, min(len(bits), 120)), key=lambda i: float(bits[i] or 0))  # on the first screen
                spans = driver.find_elements(By.CSS_SELECTOR, "#surprise_out span")
                ActionChains(driver).move_to_element(spans[hardest]).perform()
                bars = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#surprise_bars .bar"))
                assert len(bars) == page_api.SURPRISE_TOP
                assert " bits" in driver.find_element(By.ID, "surprise_pick").text
                if shots and kind == "bpe":
                    driver.save_screenshot(os.path.join(shots, "playground_surprise.png"))
                    driver.find_element(By.ID, "lang").click()
                    assert "比特" in driver.find_element(By.ID, "surprise_mean").text
                    spans = driver.find_elements(By.CSS_SELECTOR, "#surprise_out span")  # drawn again, in Chinese
                    ActionChains(driver).move_to_element(spans[hardest]).perform()
                    driver.save_screenshot(os.path.join(shots, "playground_surprise_zh.png"))
                    driver.find_element(By.ID, "lang").click()
    finally:
        driver.quit()


def test_another_checkpoint_clears_the_last_ones_surprise_and_the_page_has_its_own_cjk_font(root, bpe_checkpoint,
                                                                                            tmp_path):
    import shutil

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    for name, checkpoint in (("out-a", root / "out-qa" / "ckpt.pt"), ("out-b", bpe_checkpoint)):
        (tmp_path / name).mkdir()
        shutil.copy(checkpoint, tmp_path / name / "ckpt.pt")
    driver, wait = headless_chromium()
    try:
        with LiveServer(tmp_path, checkpoint=tmp_path / "out-a" / "ckpt.pt") as server:
            driver.get(server.url)
            wait.until(lambda d: len(Select(d.find_element(By.ID, "checkpoint")).options) == 2)
            driver.find_element(By.CSS_SELECTOR, '.tab[data-tab="surprise"]').click()
            driver.find_element(By.ID, "surprise_text").send_keys("问：1+1等于多少？\n答：2\n")
            driver.find_element(By.ID, "score").click()
            wait.until(lambda d: d.find_element(By.ID, "surprise_mean").text)
            Select(driver.find_element(By.ID, "checkpoint")).select_by_value("out-b/ckpt.pt")
            wait.until(lambda d: not d.find_element(By.ID, "surprise_mean").text)  # was left showing the old model's
            assert driver.find_elements(By.CSS_SELECTOR, "#surprise_out span") == []
            # The bundled font (fonts/MiniGPT-CJK.otf), so Chinese is not boxes where no CJK font is installed.
            faces = driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "document.fonts.load(\"16px 'MiniGPT CJK'\", '中').then(f => done(f.length), () => done(-1));")
            assert faces == 1
    finally:
        driver.quit()


def test_the_chinese_page_gets_its_errors_in_chinese(root):
    from selenium.webdriver.common.by import By

    driver, wait = headless_chromium()
    try:
        with LiveServer(root) as server:
            driver.get(server.url)
            wait.until(lambda d: d.find_element(By.ID, "checkpoint").get_attribute("value"))
            if driver.find_element(By.ID, "lang").text == "中文":
                driver.find_element(By.ID, "lang").click()  # to Chinese
            prompt = driver.find_element(By.ID, "prompt")
            prompt.clear()
            prompt.send_keys("Zebra")  # characters the Q&A model never saw
            driver.find_element(By.ID, "go").click()
            error = wait.until(lambda d: d.find_element(By.ID, "error").text)
            assert error.startswith("模型从没见过这些字符：") and "'Z'" in error
            status, text = server.post("/api/surprise", {"text": "Zebra"})  # a client that asks for nothing: English
            assert status == 400 and "never seen" in text
    finally:
        driver.quit()


def test_a_character_split_between_tokens_names_them_all_and_a_partial_token_shows_its_bytes(bpe_checkpoint):
    # The hover panel named one token where a character's bits came from two, and showed a partial token as �.
    model, tokenizer = load_model(bpe_checkpoint)
    ids = tokenizer.encode("问：「床前明月光」的下一句是什么？\n答：疑是地上霜。\n\n")
    result = page_api.surprise(model, tokenizer, ids, "cpu")
    split = [i for i, tokens in enumerate(result["char_tokens"]) if len(tokens) > 1]
    assert split, "no character of the text is split between tokens: pick another text"
    for i in split:
        assert result["char_token"][i] == result["char_tokens"][i][0]
        labels = [result["tokens"][k]["text"] for k in result["char_tokens"][i]]
        assert all(re.fullmatch(r"<[0-9a-f]{2}( [0-9a-f]{2})*>", label) or "\ufffd" not in label for label in labels)
        assert any(label.startswith("<") for label in labels)
    assert all("\ufffd" not in token["text"] for token in result["tokens"])
