"""Measure the exported web page (export_web.py): tokens/s in a headless Chromium against PyTorch's generate() with
the KV cache on this CPU, interleaved; the file sizes; and what fp16 weights cost in logit error.

    python3 bench_web.py                            # out/ckpt.pt
    python3 bench_web.py --checkpoint out-chinese/ckpt.pt --tokens 300

Needs Chromium, chromedriver and selenium (requirements-dev.txt; apt-get install chromium chromium-driver).
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from checkpoint import load_model
from cli import HelpFormatter, UserError, run_main
from device import cpu_name
from utils import REPO_DIR

PROMPTS = ["ROMEO:\nI will go", "First Citizen:\nBefore we proceed any further, hear me speak.", "床前明月光，"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", default="out/ckpt.pt", help="the model to export and time")
    parser.add_argument("--tokens", type=int, default=500, help="tokens per timed generation")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the table shows medians")
    return parser.parse_args(argv)


def browser():
    """Headless Chromium through selenium, as the tests drive it."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise UserError("bench_web.py drives Chromium with selenium: python3 -m pip install -r requirements-dev.txt")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        raise UserError("bench_web.py needs Chromium and chromedriver: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_script_timeout(600)
    return driver


def export(checkpoint, folder, dtype):
    """python3 export_web.py, as a learner runs it."""
    path = Path(folder) / f"{dtype}.html"
    done = subprocess.run([sys.executable, str(REPO_DIR / "export_web.py"), "--checkpoint", str(checkpoint),
                           "--out", str(path), "--dtype", dtype], capture_output=True, text=True)
    if done.returncode:
        raise UserError(done.stderr.strip().splitlines()[-1])
    return path


def logit_error(driver, page, model, tokenizer):
    """The largest difference between the page's logits and GPTModel's, over the prompts the model can encode."""
    driver.get(page.as_uri())
    worst = 0.0
    for prompt in (p for p in PROMPTS if not tokenizer.unknown(p)):
        ids = tokenizer.encode(prompt)[-model.block_size:]
        with torch.no_grad():
            expected = model(torch.tensor([ids]))[0][0, -1]
        got = torch.tensor(driver.execute_script("return miniGPT.logits(arguments[0])", prompt))
        worst = max(worst, (got - expected).abs().max().item())
    return worst


def main(argv=None):
    args = parse_args(argv)
    model, tokenizer = load_model(args.checkpoint)
    folder = tempfile.mkdtemp()
    driver = browser()
    try:
        pages = {dtype: export(args.checkpoint, folder, dtype) for dtype in ("fp16", "fp32")}
        errors = {dtype: logit_error(driver, page, model, tokenizer) for dtype, page in pages.items()}
        start = tokenizer.encode("\n" if not tokenizer.unknown("\n") else tokenizer.decode([0]))
        driver.get(pages["fp16"].as_uri())
        model.generate(torch.tensor([start]), 20)  # warm up
        page_rates, torch_rates = [], []
        for seed in range(args.repeats):  # interleaved, so a noisy neighbour slows both alike
            seconds = driver.execute_async_script(
                "const done = arguments[arguments.length - 1], t = performance.now();"
                "miniGPT.generate(arguments[0], {max_new_tokens: arguments[1], temperature: 1.0, seed: arguments[2]})"
                ".then(() => done((performance.now() - t) / 1000));", tokenizer.decode(start), args.tokens, seed)
            page_rates.append(args.tokens / seconds)
            started = time.perf_counter()
            model.generate(torch.tensor([start]), args.tokens, temperature=1.0)
            torch_rates.append(args.tokens / (time.perf_counter() - started))
        sizes = {dtype: page.stat().st_size / 1e6 for dtype, page in pages.items()}
        browser_version = driver.capabilities.get("browserVersion", "?")
    finally:
        driver.quit()
        shutil.rmtree(folder, ignore_errors=True)
    page_median, torch_median = statistics.median(page_rates), statistics.median(torch_rates)
    print(f"model: {args.checkpoint} ({model.num_params() / 1e6:.2f}M parameters), {cpu_name()}, "
          f"{torch.get_num_threads()} threads, Chromium {browser_version}")
    for name, median, rates in (("the page (fp16), headless Chromium", page_median, page_rates),
                                ("PyTorch generate(), KV cache", torch_median, torch_rates)):
        print(f"{name:34s}{median:6.0f} tokens/s  ({', '.join(f'{r:.0f}' for r in rates)})")
    print(f"PyTorch / page                    {torch_median / page_median:6.2f}x")
    for dtype in ("fp16", "fp32"):
        print(f"{dtype}: {sizes[dtype]:.1f} MB, largest logit difference from GPTModel {errors[dtype]:.6f}")


if __name__ == "__main__":
    run_main(main)
