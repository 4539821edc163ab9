"""Every message a learner meets points to the next right step, and a failed run leaves nothing behind."""

import itertools
import re

import chat
import day3_attention
import day4_train_small
import eval_qa
import generate
import model as model_module
import prepare_qa_data
import train
from conftest import REPO, assert_clean_error, run

SMALL = ["--n_embd", "32", "--num_heads", "2", "--n_layer", "2", "--block_size", "16", "--batch_size", "8",
         "--eval_interval", "10", "--eval_iters", "2", "--time_budget", "0", "--sample_tokens", "0", "--device", "cpu"]
QA_TRAIN = "python3 prepare_qa_data.py && python3 train.py --data data/qa.txt --out_dir out-qa --loss_on answers"


def test_a_missing_checkpoint_names_the_command_that_makes_it_without_markdown(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert_clean_error(run(generate), capsys.readouterr().err, "no checkpoint at out/ckpt.pt", "python3 train.py")
    assert_clean_error(run(chat, "37+58等于多少？"), err := capsys.readouterr().err, "no checkpoint at out-qa/ckpt.pt",
                       QA_TRAIN)
    assert "`" not in err  # a terminal shows backticks literally
    assert_clean_error(run(eval_qa), err := capsys.readouterr().err, QA_TRAIN)
    assert "`" not in err


def test_eval_qa_before_prepare_qa_data_says_to_run_it(tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    assert run(train, "--data", tiny_text_file, "--max_iters", "10", "--out_dir", "out-qa", *SMALL) == 0
    capsys.readouterr()
    assert_clean_error(run(eval_qa, "--heldout", "data/qa_heldout.tsv"), capsys.readouterr().err,
                       "data/qa_heldout.tsv", "python3 prepare_qa_data.py")


def test_a_nan_before_any_checkpoint_does_not_promise_one(tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    real_cross_entropy, calls = model_module.F.cross_entropy, itertools.count(1)

    def cross_entropy_that_breaks(*args, **kwargs):  # fine for the first evaluation, then NaN
        loss = real_cross_entropy(*args, **kwargs)
        return loss * float("nan") if next(calls) > 5 else loss

    monkeypatch.setattr(model_module.F, "cross_entropy", cross_entropy_that_breaks)
    status = run(train, "--data", tiny_text_file, "--max_iters", "100", "--out_dir", "out", *SMALL)
    err = capsys.readouterr().err
    assert_clean_error(status, err, "NaN", "--learning_rate")
    assert not (tmp_path / "out" / "ckpt.pt").exists()
    assert "ckpt.pt" not in err  # none was written, so none is promised


def test_the_next_step_after_prepare_qa_data_is_the_readmes_command(tmp_path, capsys):
    poems = tmp_path / "poems.txt"
    poems.write_text((REPO / "data" / "chinese.txt").read_text(encoding="utf-8")[:3000], encoding="utf-8")
    assert run(prepare_qa_data, "--poems", poems, "--num_poems", "10", "--three_digit", "100",
               "--out", tmp_path / "qa.txt", "--heldout", tmp_path / "heldout.tsv") == 0
    printed = re.search(r"python3 train\.py --data data/qa\.txt[^\n(]*", capsys.readouterr().out).group().strip()
    for readme in ("README.md", "README_en.md"):
        shown = re.search(r"^python3 train\.py --data data/qa\.txt[^\n#]*", (REPO / readme).read_text(encoding="utf-8"),
                          re.M).group().strip()
        assert printed == shown, readme  # the whole command, flags and all


def test_a_gbk_file_is_named_as_probably_gbk_with_the_command_that_converts_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "poem.txt").write_bytes("床前明月光，疑是地上霜。\n".encode("gbk") * 50)
    assert_clean_error(run(train, "--data", "poem.txt", *SMALL), capsys.readouterr().err,
                       "poem.txt is not UTF-8", "GBK", "iconv -f GBK -t UTF-8 poem.txt")


def test_a_run_that_fails_before_its_first_step_leaves_no_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_text.txt").write_text("too short\n", encoding="utf-8")
    status = run(train, "--data", "my_text.txt", "--out_dir", "out-my", *SMALL)
    assert_clean_error(status, capsys.readouterr().err, "too few")
    assert not (tmp_path / "out-my").exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine", encoding="utf-8")
    assert run(train, "--data", "my_text.txt", "--out_dir", "kept", *SMALL) == 2
    assert {p.name for p in (tmp_path / "kept").iterdir()} - {".lock"} == {"notes.txt"}  # a folder it didn't make stays


def test_day3_and_day4_say_their_lessons_in_chinese_punctuation_and_agree_with_the_tutorial(tmp_path, monkeypatch,
                                                                                            capsys):
    monkeypatch.chdir(tmp_path)
    day3_attention.main()
    out = capsys.readouterr().out
    assert not re.search(r"[\u4e00-\u9fff]: ", out), re.findall(r".{6}[\u4e00-\u9fff]: .{6}", out)
    assert "2. 计算相似度：Q @ K^T" in out
    assert run(day4_train_small, "--max_iters", "20", "--device", "cpu") == 0
    out = capsys.readouterr().out
    tutorial = (REPO / "TUTORIAL.md").read_text(encoding="utf-8")
    lesson = "验证 loss 跟着训练 loss 一起下降，说明模型学到的是规律，而不是死记硬背"
    assert lesson in out and lesson in tutorial
    assert "开始过拟合" not in out


def test_a_torch_below_the_floor_is_one_line_at_start_up(tmp_path, monkeypatch, capsys):
    import torch

    import cli

    monkeypatch.setattr(torch, "__version__", "2.0.1+cpu")
    assert_clean_error(run(generate), capsys.readouterr().err, "PyTorch 2.0.1 is too old", "torch 2.1 or newer",
                       "python3 -m pip install --upgrade torch")
    monkeypatch.setattr(torch, "__version__", "2.1.0")
    assert run(generate, "--checkpoint", "nowhere.pt") == 2 and "too old" not in capsys.readouterr().err
    # The floor said in one place agrees with the one requirements.txt states.
    floor = re.search(r"^torch>=([\d.]+)", (REPO / "requirements.txt").read_text(encoding="utf-8"), re.M).group(1)
    assert tuple(map(int, floor.split("."))) == cli.MIN_TORCH


def test_after_a_qa_model_the_next_step_is_asking_it(tmp_path, monkeypatch, capsys):
    # The hint used to send a Q&A model's trainer to generate.py, which continues text instead of answering.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "qa.txt").write_text("问：1+1等于多少？\n答：2\n\n问：2+2等于多少？\n答：4\n\n" * 40, encoding="utf-8")
    flags = ["--n_embd", "16", "--num_heads", "2", "--n_layer", "1", "--block_size", "16", "--batch_size", "4",
             "--max_iters", "2", "--eval_interval", "2", "--eval_iters", "1", "--sample_tokens", "5", "--device", "cpu"]
    assert run(train, "--data", "qa.txt", "--out_dir", "out-qa", *flags) == 0
    out = capsys.readouterr().out
    assert "next: python3 eval_qa.py --checkpoint out-qa/ckpt.pt" in out and "chat.py" in out
    assert "generate.py" not in out
