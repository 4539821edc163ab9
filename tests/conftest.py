import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):  # one of several workers (pytest.ini): one compute thread each
    os.environ["OMP_NUM_THREADS"] = "1"  # ... and for the scripts the tests start as subprocesses
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cli
import utils  # noqa: E402  (needs the path above)

# A little Shakespeare for the end-to-end tests: enough text for a train/val split, quick to train on.
TINY_TEXT = (REPO / "data" / "input.txt").read_text(encoding="utf-8")[:20000]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _english(monkeypatch):
    """Messages in English whatever this machine's locale (tests of Chinese set MINIGPT_LANG=zh)."""
    monkeypatch.setenv("MINIGPT_LANG", "en")


@pytest.fixture
def tiny_text_file(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


def run(module, *args):
    """Run a script's main() as its __main__ block does; returns the exit status."""
    argv = list(map(str, args))
    try:
        cli.run_main(lambda: module.main(argv))
    except SystemExit as e:
        return e.code
    return 0


def assert_clean_error(status, err, *phrases):
    """Bad input: non-zero exit, one clear line on stderr, no traceback.

    (A progress bar may have been drawn on stderr before the problem showed up.)
    """
    assert status != 0
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), err
    assert err.rstrip().endswith(errors[0])
    for phrase in phrases:
        assert phrase in errors[0]


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args, cwd, nproc=2, timeout=300):
    """Run `torchrun --nproc_per_node=nproc <args>` on this machine's loopback, as CPU processes.

    Robust on a busy 2-core machine: a free port on 127.0.0.1 (no name lookups, no clash with another
    run), gloo on the loopback interface, a generous but bounded time, and on timeout the whole process
    group is killed, so no worker is left behind to slow down the rest of the suite.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish within {timeout} s; killed it and its workers.\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def shown_commands(markdown):
    """Every python3 (or torchrun) command a page shows: the lines of bash blocks, and inline `code` spans.
    A line joining commands with && gives each of them."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S):
        found += [line.split("  #")[0].strip() for line in block.splitlines()]
    found += re.findall(r"`((?:python3|torchrun) [^`]+)`", markdown)
    pieces = [piece.strip() for line in found for piece in line.split("&&")]
    return list(dict.fromkeys(p for p in pieces if p.startswith(("python3 ", "torchrun "))))  # each once, in order


def check_command_parses(command):
    """The command names a script in the repo whose argparse accepts its flags (argparse exits otherwise)."""
    import importlib

    argv = shlex.split(command)
    if argv[0] == "torchrun":  # torchrun's own flags, then the script and its flags
        argv = ["python3", *argv[next(i for i, a in enumerate(argv) if a.endswith(".py")):]]
    argv = argv[1:]
    if argv[:2] == ["-m", "pytest"]:
        assert argv[2:] == ["-q"], command  # the README's test command, as .ci/run runs it
        return
    if argv[0] == "-m":  # python3 -m pip install -r requirements...txt (or torch from PyTorch's CPU index)
        assert argv[1:3] == ["pip", "install"], command
        if argv[3] == "-r":
            assert (REPO / argv[4]).is_file(), command
        else:
            assert argv[3:] == ["torch", "--index-url", "https://download.pytorch.org/whl/cpu"], command
        return
    script = REPO / argv[0]
    assert script.is_file(), f"{command}: no {argv[0]} in the repo"
    module = importlib.import_module(script.stem)
    if hasattr(module, "parse_args"):
        module.parse_args(argv[1:])
    else:  # day 1-3 take no flags
        assert argv[1:] == [], command


needs_muon = pytest.mark.skipif(not hasattr(torch.optim, "Muon"),
                                reason=f"torch.optim.Muon arrived in torch 2.9; this is torch {torch.__version__}")
