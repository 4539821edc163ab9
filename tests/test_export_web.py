"""export_web.py: one HTML file whose JavaScript engine (web/engine.js) computes what GPTModel computes, for a
character, a BPE and a rotary model, read by a real headless Chromium from file://, offline."""

import pytest
import torch

pytest.importorskip("selenium", reason="the browser tests: pip install -r requirements-dev.txt")

import export_web  # noqa: E402
import generate  # noqa: E402
import train  # noqa: E402
from checkpoint import load_model  # noqa: E402
from conftest import TINY_TEXT, assert_clean_error, run  # noqa: E402
from test_playground import headless_chromium, toy_qa_model  # noqa: E402

POEM = "静夜思\n李白\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n"
PROMPTS = ["ROMEO:\nI will go", "床前明月光，"]  # English and Chinese, both in the toy models' vocabulary
TOY = ["--n_embd", "32", "--num_heads", "2", "--n_layer", "2", "--block_size", "32", "--batch_size", "8",
       "--max_iters", "100", "--eval_interval", "100", "--eval_iters", "1", "--time_budget", "0",
       "--sample_tokens", "0", "--device", "cpu"]
MODELS = {"char": [], "bpe": ["--tokenizer", "bpe", "--vocab_size", "300"], "rope": ["--position", "rope"]}
FP16_LOGIT_ERROR = 0.02  # the largest logit difference fp16 weights may make on these models (measured: ~0.005)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Three toy models trained on Shakespeare and a poem, and each exported in fp32: {kind: (ckpt, html)}."""
    folder = tmp_path_factory.mktemp("web")
    data = folder / "mixed.txt"
    data.write_text(TINY_TEXT + POEM * 20, encoding="utf-8")
    made = {}
    for kind, options in MODELS.items():
        ckpt = folder / f"out-{kind}" / "ckpt.pt"
        assert run(train, "--data", data, "--out_dir", ckpt.parent, *TOY, *options) == 0
        html = folder / f"{kind}.html"
        assert run(export_web, "--checkpoint", ckpt, "--out", html, "--dtype", "fp32") == 0
        made[kind] = (ckpt, html)
    return made


@pytest.fixture(scope="module")
def browser():
    driver, wait = headless_chromium()
    yield driver
    driver.quit()


def open_page(browser, html):
    browser.get(html.as_uri())
    assert browser.execute_script("return typeof miniGPT") == "object"


def js_generate(browser, prompt, **options):
    result = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "miniGPT.generate(arguments[0], arguments[1]).then(done, e => done('ERROR ' + e.message));", prompt, options)
    assert not result.startswith("ERROR"), result
    return result


@pytest.mark.parametrize("kind", MODELS)
def test_the_page_computes_the_models_logits_and_greedy_text(kind, models, browser, capsys):
    ckpt, html = models[kind]
    model, tokenizer = load_model(ckpt)
    open_page(browser, html)
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)[-model.block_size:]
        with torch.no_grad():
            expected = model(torch.tensor([ids]))[0][0, -1]
        page = torch.tensor(browser.execute_script("return miniGPT.logits(arguments[0])", prompt))
        assert page.shape == expected.shape
        torch.testing.assert_close(page, expected, atol=1e-4, rtol=0)
        # 200 greedy tokens, far past the 32-token window: generate.py slides it, and so does the page.
        capsys.readouterr()
        assert run(generate, "--checkpoint", ckpt, "--prompt", prompt, "--temperature", "0",
                   "--max_new_tokens", "200", "--device", "cpu") == 0
        printed = capsys.readouterr().out[:-1]  # generate.py ends its sample with one print()
        assert prompt + js_generate(browser, prompt, max_new_tokens=200, temperature=0) == printed


def test_a_seed_gives_the_same_sample_twice(models, browser):
    open_page(browser, models["char"][1])
    options = dict(max_new_tokens=60, temperature=1.0, top_k=20, top_p=0.9)
    first = js_generate(browser, "ROMEO:", seed=7, **options)
    assert first == js_generate(browser, "ROMEO:", seed=7, **options)
    assert first != js_generate(browser, "ROMEO:", seed=8, **options)


def test_fp16_weights_keep_the_logits_within_the_stated_error(models, browser, tmp_path):
    ckpt, _ = models["char"]
    model, tokenizer = load_model(ckpt)
    half = tmp_path / "half.html"
    assert run(export_web, "--checkpoint", ckpt, "--out", half) == 0  # fp16: the default
    assert half.stat().st_size < 0.6 * models["char"][1].stat().st_size
    open_page(browser, half)
    for prompt in PROMPTS:
        with torch.no_grad():
            expected = model(torch.tensor([tokenizer.encode(prompt)]))[0][0, -1]
        page = torch.tensor(browser.execute_script("return miniGPT.logits(arguments[0])", prompt))
        assert (page - expected).abs().max() < FP16_LOGIT_ERROR


def test_the_file_is_whole_it_asks_the_network_for_nothing_and_logs_no_error(models, browser):
    browser.get_log("browser")  # what earlier pages logged
    browser.set_network_conditions(offline=True, latency=0, throughput=0)
    try:
        open_page(browser, models["bpe"][1])
        assert js_generate(browser, "ROMEO:", max_new_tokens=20, temperature=0)
        assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
    finally:
        browser.delete_network_conditions()


def test_the_page_streams_text_speaks_both_languages_and_chats_with_a_qa_model(models, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, models["char"][1])
    browser.find_element(By.ID, "max_tokens").clear()
    browser.find_element(By.ID, "max_tokens").send_keys("40")
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, 60).until(lambda d: "tokens/s" in d.find_element(By.ID, "stats").text)
    assert browser.find_element(By.ID, "output").text.startswith(browser.find_element(By.ID, "prompt")
                                                                 .get_attribute("value"))
    assert "mixed.txt" in browser.find_element(By.ID, "card_table").text
    browser.find_element(By.ID, "lang").click()
    assert browser.find_element(By.ID, "go").text == "生成" and "训练数据" in browser.find_element(By.ID, "card").text
    assert browser.find_element(By.ID, "lang").text == "English"

    toy_qa_model(tmp_path)
    qa = tmp_path / "qa.html"
    assert run(export_web, "--checkpoint", tmp_path / "out-qa" / "ckpt.pt", "--out", qa) == 0
    open_page(browser, qa)
    assert browser.find_element(By.ID, "prompt").get_attribute("value") == "12+34等于多少？"
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "go").is_enabled()
                                     and d.find_elements(By.CSS_SELECTOR, "#chatlog .a"))
    log = browser.find_element(By.ID, "chatlog").text
    assert log.startswith("Q：12+34等于多少？") and "A：" in log  # the chat form, as chat.py asks


def test_an_option_the_engine_lacks_is_one_line_and_writes_nothing(models, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(export_web.ENGINE_SUPPORTS, "position", ("learned",))  # as if the engine had no RoPE
    out = tmp_path / "rope.html"
    status = run(export_web, "--checkpoint", models["rope"][0], "--out", out)
    assert_clean_error(status, capsys.readouterr().err, "position rope", "nothing was written")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert_clean_error(run(export_web, "--checkpoint", models["char"][0], "--out", tmp_path),
                       capsys.readouterr().err, "is a folder")
