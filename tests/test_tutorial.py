"""TUTORIAL.md can't rot: every `python3 ...` command in it names a script that exists and flags that
its argparse accepts, and the cheap ones run (in a quick form) and do what the text says."""

import importlib
import re
import shlex

import pytest

import config
import utils
from conftest import REPO, assert_clean_error, check_command_parses, run, shown_commands

TUTORIAL = (REPO / "TUTORIAL.md").read_text(encoding="utf-8")
# Flags that make a train.py command take a second: they come last, so they win.
QUICK_TRAIN = ["--time_budget", "0", "--max_iters", "2", "--eval_interval", "1", "--eval_iters", "1", "--n_layer", "1",
               "--n_embd", "16", "--num_heads", "2", "--block_size", "16", "--batch_size", "2", "--sample_tokens", "0",
               "--device", "cpu"]


COMMANDS = shown_commands(TUTORIAL)


def test_every_picture_the_docs_show_is_in_the_repository():
    # TUTORIAL.md's day 2-4 pictures were once left out of every commit by a .gitignore line meant for the copies
    # the day scripts write at the top level; this runs in CI on a fresh clone, where such a picture is missing.
    pages = [REPO / "TUTORIAL.md", REPO / "README.md", REPO / "README_en.md", *sorted((REPO / "docs").glob("**/*.md"))]
    missing = [f"{page.relative_to(REPO)}: {target}" for page in pages
               for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text(encoding="utf-8"))
               if not target.startswith("http") and not (page.parent / target).is_file()]
    assert not missing


def test_the_tutorial_has_every_days_commands():
    scripts = {shlex.split(c)[1] for c in COMMANDS}
    assert {"day1_tokenizer.py", "day2_embedding.py", "day3_attention.py", "day4_train_small.py", "train.py",
            "generate.py", "day5_experiments.py", "visualize_attention.py", "prepare_qa_data.py", "eval_qa.py",
            "chat.py", "prepare_code_data.py", "eval_code.py", "bench.py", "playground.py"} <= scripts
    assert len(COMMANDS) >= 30
    assert "⟦" not in TUTORIAL  # no placeholder left unfilled


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_names_a_script_that_accepts_its_flags(command):
    check_command_parses(command)


@pytest.fixture
def learner(tmp_path, monkeypatch):
    """A folder laid out like the repo's root, with the shipped data (linked, not copied)."""
    (tmp_path / "data").mkdir()
    for name in ("input.txt", "chinese.txt"):
        (tmp_path / "data" / name).symlink_to(REPO / "data" / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_command(command, *extra):
    argv = shlex.split(command)
    module = importlib.import_module(argv[1].removesuffix(".py"))
    return run(module, *argv[2:], *extra)


def test_the_days_and_the_training_commands_run(learner, capsys):
    ran = 0
    for command in COMMANDS:
        script = shlex.split(command)[1]
        if script == "day1_tokenizer.py":
            importlib.import_module("day1_tokenizer").main()
        elif script == "day4_train_small.py":
            assert run_command(command, "--max_iters", "20", "--device", "cpu") == 0
        elif script == "train.py" and not any(skip in command for skip in ("my_text", "qa.txt", "qa_poems.txt", "code.txt",
                                                                                 "--resume")):
            assert run_command(command, *QUICK_TRAIN) == 0, command
        else:
            continue
        ran += 1
    assert ran >= 8
    assert (learner / "out" / "ckpt.pt").is_file() and (learner / "out-chinese" / "ckpt.pt").is_file()

    # ... and then the commands that need those checkpoints
    capsys.readouterr()
    for command in COMMANDS:
        script = shlex.split(command)[1]
        if script == "generate.py":
            status = run_command(command, "--max_new_tokens", "5", "--device", "cpu")
            if "你好" in command:  # the documented error for characters the model never saw
                assert_clean_error(status, capsys.readouterr().err, "'你', '好'")
            else:
                assert status == 0, command
            ran += 1
        elif script == "visualize_attention.py" and "out-chinese" in command:
            assert run_command(command, "--device", "cpu") == 0
            assert (learner / "attention_zh.png").is_file()
            ran += 1
    assert ran >= 16


def test_experiment_4_writes_a_new_file_and_gets_the_documented_error(learner, capsys):
    heredoc = re.search(r"cat > (data/\S+) << 'END'\n(.*?)\nEND\n", TUTORIAL, flags=re.S)
    path, text = heredoc.group(1), heredoc.group(2) + "\n"
    assert path != "data/chinese.txt" and not (REPO / path).exists()  # never overwrites shipped data
    (learner / path).write_text(text, encoding="utf-8")
    [command] = [c for c in COMMANDS if path in c and c.startswith("python3 train.py")]
    status = run_command(command, "--device", "cpu")
    err = capsys.readouterr().err
    block_size = config.Config().block_size
    assert_clean_error(status, err, f"{path} has {len(text)} characters, too few for block_size {block_size}")
    documented = re.search(rf"错误：{re.escape(path)} 只有 (\d+) 个字符，对 block_size (\d+) 来说太少", TUTORIAL)
    assert int(documented.group(1)) == len(text)  # the Chinese text quotes the real count
    assert int(documented.group(2)) == block_size  # ... and config.py's block size


def test_the_vocabulary_sizes_quoted_are_the_real_ones():
    english, chinese = (set(utils.read_text(REPO / "data" / name)) for name in ("input.txt", "chinese.txt"))
    assert f"莎士比亚（英文）：{len(english)} 种字符" in TUTORIAL
    assert f"唐诗（中文）：{len(chinese):,} 种字符" in TUTORIAL
    assert f"两份合在一起：{len(english | chinese):,} 种字符（两边共有的只有 {len(english & chinese)} 种）" in TUTORIAL
