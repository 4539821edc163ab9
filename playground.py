"""Playground: watch your own model think in the browser, and serve it over the OpenAI API.

    python3 -m pip install -r requirements-web.txt
    python3 playground.py                                   # out/ckpt.pt at http://127.0.0.1:8000
    python3 playground.py --checkpoint out-chinese/ckpt.pt --port 8001
    python3 playground.py --checkpoint out-qa/ckpt.pt       # a Q&A model: the Chat tab and /v1/chat/completions

The page (static/, plain HTML/CSS/JS, nothing from the internet) shows the text as it is generated,
the top-10 next-character probabilities behind every character, the attention of any layer and
head, and a model card. The same server answers POST /v1/completions, POST /v1/chat/completions
(Q&A models) and GET /v1/models in OpenAI's JSON shapes, so the official `openai` client works:

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.completions.create(model="mini-gpt", prompt="ROMEO:", max_tokens=100)

It binds 127.0.0.1 unless --host says otherwise; the API has no authentication unless --api_key is given.
The server itself, a thin layer over the functions the scripts use, is server.py (with serving.py, page_api.py and
openai_api.py).
"""

import argparse
import sys

import torch

from cli import HelpFormatter, UserError, run_main
from device import get_device
from i18n import _

try:
    import uvicorn

    from server import LOCAL_HOSTS, create_app
    from serving import Server, load
except ImportError:  # the page's extra dependencies; the core tutorial doesn't need them
    print("error: " + _("the playground needs FastAPI and uvicorn: python3 -m pip install -r requirements-web.txt"),
          file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="A local web page and an OpenAI-compatible API for a checkpoint.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", default="out/ckpt.pt", help="the checkpoint to load first")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this computer only)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--api_key", default=None, help="require this key (Authorization: Bearer KEY) on the API")
    parser.add_argument("--cors", default=None, metavar="ORIGIN",
                        help="let pages from this origin (e.g. https://example.org) call the API from a browser; by "
                             "default only the page served here can")
    parser.add_argument("--qa", action="store_true", help="treat the checkpoint as a Q&A model (chat), whatever it "
                                                          "looks like")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not 0 < args.port < 65536:
        raise UserError(_("--port must be between 1 and 65535, got {port}").format(port=args.port))
    device = get_device(args.device)
    if device == "cpu":
        # Generating one token is small matrix-vector work. Measured here, one intra-op thread decodes as
        # fast as two, and in a worker thread (where a server generates) two threads run at half speed.
        torch.set_num_threads(1)
    server = Server(load(args.checkpoint, device, qa=True if args.qa else None), device, args.api_key)
    if args.host not in LOCAL_HOSTS and not args.api_key:
        print(_("warning: binding {host} makes the page and the API reachable from other computers, and the API "
                "has no authentication; add --api_key KEY to require one").format(host=args.host), file=sys.stderr)
    page = f"http://{'localhost' if args.host == '127.0.0.1' else args.host}:{args.port}"
    print(_("Mini-GPT playground: {url}  ({params:.2f}M parameters, {path}); Ctrl-C to stop").format(
        url=page, params=server.loaded.card["parameters"] / 1e6, path=args.checkpoint))
    print(_("OpenAI-compatible API: {url}/v1  (model id {model})").format(url=f"http://{args.host}:{args.port}",
                                                                          model=server.loaded.model_id))
    # Bound to this computer only: answer only requests addressed to it, so a page whose name was made to point here
    # (DNS rebinding) gets nothing.
    hosts = LOCAL_HOSTS if args.host in LOCAL_HOSTS else None
    uvicorn.run(create_app(server, cors=args.cors, hosts=hosts), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    run_main(main)
