"""Measure the playground's API: time to first token, streamed tokens/s against calling generate
directly, and requests/s for concurrent short completions. Medians over interleaved repeats.

    python3 bench_api.py                                  # out/ckpt.pt
    python3 bench_api.py --preset default                 # an untrained model of the default preset's size
    python3 bench_api.py --checkpoint out-chinese/ckpt.pt --json api.json

The server runs in its own process on 127.0.0.1 (a free port), started exactly as `python3 playground.py`.
"""

import argparse
import http.client
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from checkpoint import load_model, make_checkpoint, save_checkpoint
from cli import HelpFormatter, UserError, run_main
from config import PRESETS, Config, apply_overrides
from device import cpu_name, get_device
from model import GPTModel
from utils import REPO_DIR, CharTokenizer, read_text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", default="out/ckpt.pt", help="the model to serve")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="serve an untrained model of this preset's size instead (speed doesn't need training)")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per streamed completion")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats; the table shows medians")
    parser.add_argument("--concurrent", type=int, default=20, help="simultaneous short completions")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results to this JSON file")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return parser.parse_args(argv)


def untrained_checkpoint(preset, folder):
    """A checkpoint of the preset's size over tiny Shakespeare's characters, with initial weights."""
    cfg = apply_overrides(Config(), PRESETS[preset])
    tokenizer = CharTokenizer(read_text(REPO_DIR / "data" / "input.txt"))
    torch.manual_seed(0)
    model = GPTModel.from_config(cfg, tokenizer.vocab_size)
    path = Path(folder) / "ckpt.pt"
    save_checkpoint(make_checkpoint(model, tokenizer, cfg), path)
    return path


def stream_completion(port, body):
    """POST a streamed completion; returns (seconds to the first token, seconds in all, characters)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    connection.request("POST", "/v1/completions", json.dumps({**body, "stream": True}),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:
        raise UserError(f"the server answered {response.status}: {response.read().decode()[:200]}")
    first, chars = None, 0
    for line in response:
        if line.startswith(b"data: {"):
            text = json.loads(line[6:])["choices"][0]["text"]
            if text and first is None:
                first = time.perf_counter() - start
            chars += len(text)
    connection.close()
    return first, time.perf_counter() - start, chars


def main(argv=None):
    args = parse_args(argv)
    if min(args.tokens, args.repeats, args.concurrent) < 1:
        raise UserError("--tokens, --repeats and --concurrent must be >= 1")
    device = get_device(args.device)
    folder = tempfile.mkdtemp()
    path = untrained_checkpoint(args.preset, folder) if args.preset else args.checkpoint
    model, tokenizer = load_model(path, device)  # the same model, for calling generate() directly
    prompt_char = "\n" if "\n" in tokenizer.stoi else tokenizer.itos[0]
    with socket.socket() as probe:  # a free port on this computer only
        probe.bind(("127.0.0.1", 0))
        port_number = probe.getsockname()[1]
    # The server in its own process, started exactly as a user starts it, so that this client's own
    # work doesn't share its interpreter.
    server = subprocess.Popen([sys.executable, str(REPO_DIR / "playground.py"), "--checkpoint", str(path),
                               "--port", str(port_number), "--device", device],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(port_number, server)
        results = measure(args, model, tokenizer, path, device, prompt_char, port_number)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
    report(args, results)


def wait_for(port, server, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise UserError(f"the playground did not start: {server.stderr.read().strip()[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise UserError(f"the playground did not answer on port {port} within {seconds} s")


def measure(args, model, tokenizer, path, device, prompt_char, port_number):
    body = {"prompt": prompt_char, "max_tokens": args.tokens, "temperature": 1.0, "seed": 0}
    idx = torch.tensor([tokenizer.encode(prompt_char)], device=device)
    # The same request with OpenAI's penalties and a bias: the logits are adjusted before every draw.
    adjusted = {**body, "presence_penalty": 0.5, "frequency_penalty": 0.5, "logit_bias": {"0": 1.0}}
    direct, api, first, penalized = [], [], [], []
    stream_completion(port_number, {**body, "max_tokens": 8})  # warm up both paths
    model.generate(idx, 8)
    for _ in range(args.repeats):  # interleaved, so a noisy neighbour slows all alike
        start = time.perf_counter()
        model.generate(idx, args.tokens, temperature=1.0, generator=torch.Generator().manual_seed(0))
        direct.append(args.tokens / (time.perf_counter() - start))
        ttft, seconds, chars = stream_completion(port_number, body)
        api.append(chars / seconds)
        first.append(ttft)
        _, seconds, chars = stream_completion(port_number, adjusted)
        penalized.append(chars / seconds)

    def short(i):
        return stream_completion(port_number, {"prompt": prompt_char, "max_tokens": 8, "seed": i})

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrent) as pool:
        done = list(pool.map(short, range(args.concurrent)))
    burst = time.perf_counter() - start
    return {
        "model": str(path) if not args.preset else f"untrained {args.preset} preset",
        "parameters": model.num_params(), "device": device, "hardware": cpu_name(),
        "threads": torch.get_num_threads(), "tokens": args.tokens,
        "direct_tokens_per_s": direct, "api_tokens_per_s": api, "first_token_s": first,
        "penalized_tokens_per_s": penalized, "penalized_median": statistics.median(penalized),
        "direct_median": statistics.median(direct), "api_median": statistics.median(api),
        "first_token_median_s": statistics.median(first),
        "overhead": 1 - statistics.median(api) / statistics.median(direct),
        "concurrent": args.concurrent, "concurrent_seconds": burst, "requests_per_s": args.concurrent / burst,
        "concurrent_all_complete": all(chars == 8 for _, _, chars in done),
    }


def report(args, results):
    burst = results["concurrent_seconds"]
    device = results["device"]
    print(f"model: {results['model']} ({results['parameters'] / 1e6:.2f}M parameters) on {device} "
          f"({results['hardware']}, {results['threads']} threads)")
    print(f"streamed through the API   {results['api_median']:8.0f} tokens/s (median of {args.repeats} x "
          f"{args.tokens} tokens), first token after {1000 * results['first_token_median_s']:.0f} ms")
    print(f"... with penalties and a bias {results['penalized_median']:6.0f} tokens/s "
          f"({100 * results['penalized_median'] / results['api_median']:.0f}% of the plain stream)")
    print(f"generate() called directly {results['direct_median']:8.0f} tokens/s")
    print(f"API overhead               {100 * results['overhead']:8.1f} %")
    print(f"{args.concurrent} concurrent 8-token completions: {burst:.2f} s, {results['requests_per_s']:.1f} requests/s, "
          f"all complete: {results['concurrent_all_complete']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    run_main(main)
