"""Every script runs on a terminal that can't print every character: a Chinese Windows learner's Git Bash, IDE pane
or redirected output writes in GBK, which has no ✓ and no emoji (cli.printable decides what to do)."""

import io
import subprocess
import sys

import pytest

import cli
import day1_bpe
import day1_tokenizer
import day2_embedding
import day3_attention
import day4_train_small
import generate
import train
from conftest import REPO, run

# Poem lines, plus characters GBK lacks: an emoji, a tick and a character from CJK extension B.
POEMS_AND_MORE = "床前明月光，疑是地上霜。举头望明月，低头思故乡。🌙✓𠮷\n" * 60


class Pipe(io.TextIOWrapper):
    """A stream like Windows gives a script whose output goes to a pipe or a file: not a terminal."""

    def __init__(self, encoding, tty=False):
        super().__init__(io.BytesIO(), encoding=encoding)
        self.tty = tty

    def isatty(self):
        return self.tty

    def text(self):
        self.flush()
        return self.buffer.getvalue().decode(self.encoding)


@pytest.mark.parametrize("encoding", ["gbk", "cp1252"])
def test_a_pipe_gets_utf8_and_a_terminal_or_a_chosen_encoding_gets_question_marks(encoding):
    pipe = Pipe(encoding)
    cli.printable(pipe, environ={})
    assert pipe.encoding == "utf-8"  # Git Bash and editors read UTF-8; nothing is lost
    print("✓ 床前明月光 🌙", file=pipe)
    assert pipe.text() == "✓ 床前明月光 🌙\n"

    for stream, environ in ((Pipe(encoding, tty=True), {}), (Pipe(encoding), {"PYTHONIOENCODING": encoding})):
        cli.printable(stream, environ)
        assert stream.encoding == encoding and stream.errors == "replace"
        print("ok ✓ 🌙", file=stream)
        assert stream.text() == "ok ? ?\n"

    utf8 = Pipe("utf-8")
    cli.printable(utf8, environ={})
    assert utf8.errors == "strict"  # nothing to change


@pytest.fixture(scope="module")
def poem_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("poems")
    (folder / "poems.txt").write_text(POEMS_AND_MORE, encoding="utf-8")
    flags = ["--n_embd", "16", "--num_heads", "2", "--n_layer", "1", "--block_size", "16", "--batch_size", "8",
             "--max_iters", "20", "--eval_interval", "20", "--eval_iters", "1", "--sample_tokens", "0",
             "--device", "cpu"]
    assert run(train, "--data", folder / "poems.txt", "--out_dir", folder / "out", *flags) == 0
    return folder / "out" / "ckpt.pt"


def day1_bpe_small(monkeypatch):
    monkeypatch.setattr(day1_bpe, "ENGLISH_SLICE", 5_000)
    monkeypatch.setattr(day1_bpe, "CHINESE_SLICE", 2_000)
    monkeypatch.setattr(day1_bpe, "SIZES", (300,))
    read_text = day1_bpe.read_text
    monkeypatch.setattr(day1_bpe, "read_text", lambda path: read_text(path)[:50_000])


def run_day(module):
    """A day script as its __main__ block runs it (days 1-3 take no flags)."""
    try:
        cli.run_main(module.main)
    except SystemExit as e:
        return e.code
    return 0


SCRIPTS = {
    "day1_tokenizer": lambda mp, model: run_day(day1_tokenizer),
    "day1_bpe": lambda mp, model: (day1_bpe_small(mp), run_day(day1_bpe))[1],
    "day2_embedding": lambda mp, model: run_day(day2_embedding),
    "day3_attention": lambda mp, model: run_day(day3_attention),
    "day4_train_small": lambda mp, model: run(day4_train_small, "--max_iters", "10", "--device", "cpu"),
    "generate": lambda mp, model: run(generate, "--checkpoint", model, "--prompt", "床前🌙✓𠮷", "--max_new_tokens",
                                      "30", "--stream"),
}


@pytest.mark.parametrize("name,encoding", [*((name, "gbk") for name in SCRIPTS), ("day1_tokenizer", "cp1252"),
                                           ("generate", "cp1252")])
def test_every_day_script_and_generate_run_on_a_terminal_without_those_characters(
        name, encoding, tmp_path, monkeypatch, poem_model):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONIOENCODING", encoding)  # as the learner's Windows would have it
    out = Pipe(encoding)
    monkeypatch.setattr(sys, "stdout", out)
    assert SCRIPTS[name](monkeypatch, poem_model) == 0
    text = out.text()
    assert "?" in text  # what the terminal can't show, shown as ?: a ✓, an emoji or a poem character
    if name == "generate":
        assert text.startswith("床前???" if encoding == "gbk" else "?????")


def test_day1_in_a_real_process_writing_gbk(tmp_path):
    # The reproduction: PYTHONIOENCODING=gbk python3 day1_tokenizer.py stopped with UnicodeEncodeError at its ✓.
    done = subprocess.run([sys.executable, str(REPO / "day1_tokenizer.py")], cwd=tmp_path, capture_output=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONIOENCODING": "gbk", "MINIGPT_LANG": "zh"}, timeout=120)
    assert done.returncode == 0, done.stderr.decode("gbk", "replace")
    assert "验证：解码结果和原文一致 ?" in done.stdout.decode("gbk")
