"""End to end: the scripts as a learner runs them, each in a fresh temporary folder.

Most run in-process (calling the script's main() as `python3 script.py` would), since starting a new
Python with torch costs seconds; one test runs real subprocesses to check exit codes and stderr.
"""

import csv
import re
import subprocess
import sys

import torch

import day1_bpe
import day1_tokenizer
import day2_embedding
import day3_attention
import day4_train_small
import generate
import optim
import train
from conftest import REPO, assert_clean_error, needs_muon, run

TRAIN_FLAGS = ["--n_embd", "32", "--num_heads", "2", "--n_layer", "2", "--block_size", "32",
               "--batch_size", "16", "--max_iters", "150", "--eval_interval", "50", "--eval_iters", "5",
               "--learning_rate", "3e-3", "--warmup_fraction", "0.07", "--sample_tokens", "50", "--device", "cpu"]


def test_train_then_generate(tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    assert run(train, "--data", tiny_text_file, "--out_dir", "out", *TRAIN_FLAGS) == 0
    out = tmp_path / "out"
    assert {"ckpt.pt", "loss.png", "log.csv"} <= {p.name for p in out.iterdir()}
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["step"]) for r in rows] == [0, 50, 100, 150]
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"]) - 0.8  # it learned something
    assert "sample (temperature 0.8)" in capsys.readouterr().out

    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    for key in ("model_state_dict", "tokenizer_stoi", "tokenizer_itos", "vocab_size", "config"):
        assert key in ckpt
    assert ckpt["config"]["n_embd"] == 32

    flags = ["--prompt", "First", "--max_new_tokens", "40", "--num_samples", "2"]
    assert run(generate, *flags) == 0
    first = capsys.readouterr().out
    samples = first.split("---------- sample 2 ----------\n")
    assert len(samples) == 2 and samples[1].startswith("First")
    assert len(samples[1].rstrip("\n")) == len("First") + 40
    assert run(generate, *flags) == 0
    assert capsys.readouterr().out == first  # same seed, same text

    assert_clean_error(run(generate, "--prompt", "你好"), capsys.readouterr().err, "'你'", "only knows")
    assert_clean_error(run(generate, "--temperature", "-1"), capsys.readouterr().err, "temperature")
    assert_clean_error(run(generate, "--checkpoint", "missing.pt"), capsys.readouterr().err, "no checkpoint")


def test_train_bad_input_fails_cleanly_and_keeps_the_old_checkpoint(tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "ckpt.pt").write_bytes(b"an earlier run's model")
    assert_clean_error(run(train, "--data", "nope.txt"), capsys.readouterr().err, "no such text file", "nope.txt")
    assert_clean_error(run(train, "--data", tiny_text_file, "--n_embd", "30", "--num_heads", "4"),
                       capsys.readouterr().err, "divisible")
    (tmp_path / "short.txt").write_text("too short", encoding="utf-8")
    assert_clean_error(run(train, "--data", "short.txt"), capsys.readouterr().err, "smaller --block_size")
    assert_clean_error(run(train, "--device", "tpu"), capsys.readouterr().err, "unknown device")
    assert (out / "ckpt.pt").read_bytes() == b"an earlier run's model"


def test_scripts_as_subprocesses_exit_non_zero_with_one_line(tmp_path):
    """The real thing, once: `python3 generate.py` with no checkpoint, from a folder without one."""
    result = subprocess.run([sys.executable, str(REPO / "generate.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == "error: no checkpoint at out/ckpt.pt; train one first: python3 train.py " \
                            "(or pass --checkpoint)\n"


def test_day1(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    day1_tokenizer.main()
    stdout = capsys.readouterr().out
    assert "词汇表大小：8" in stdout  # full-width colons after Chinese labels
    assert not re.search(r"[\u4e00-\u9fff]: ", stdout)
    assert "验证：解码结果和原文一致 ✓" in stdout
    assert "数字→字符映射（itos" in stdout and "  0 → ' '" in stdout
    assert "1、2、3、x、y、z 这 6 个字符不在词汇表里" in stdout
    assert "True" not in stdout and "False" not in stdout  # no Python booleans inside Chinese sentences


def test_day1_bpe(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # Smaller than the learner's run, the same lesson: the readable BPE's first merges, a sentence, vocabulary sizes.
    monkeypatch.setattr(day1_bpe, "ENGLISH_SLICE", 20_000)
    monkeypatch.setattr(day1_bpe, "CHINESE_SLICE", 6_000)
    monkeypatch.setattr(day1_bpe, "SIZES", (300, 600))
    read_text = day1_bpe.read_text
    monkeypatch.setattr(day1_bpe, "read_text", lambda path: read_text(path)[:200_000])  # experiment 4's texts
    day1_bpe.main()
    stdout = capsys.readouterr().out
    assert "第  1 次合并：「␣」 + 「t」 → 「␣t」" in stdout  # the most frequent pair in English: a space before t
    assert re.search(r"第  1 次合并：字节 [0-9a-f]{2} \+ 字节 [0-9a-f]{2} → 字节 [0-9a-f]{2} [0-9a-f]{2}", stdout)
    assert "'床前明月光，疑是地上霜。'：12 个字符 →" in stdout and "个完整的汉字" in stdout
    assert "  BPE" in stdout and "字符级" in stdout and "Embedding 表参数" in stdout
    assert not re.search(r"[\u4e00-\u9fff]: ", stdout) and "True" not in stdout


def test_day2_saves_its_picture(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    day2_embedding.main()
    assert (tmp_path / "day2_embeddings.png").stat().st_size > 10_000
    stdout = capsys.readouterr().out
    assert "已保存到 day2_embeddings.png" in stdout
    assert "第1个和第4个相同 → 是 ✓" in stdout and "True" not in stdout


def test_day3_saves_its_picture_and_head_matches_the_hand_computation(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    day3_attention.main()
    assert (tmp_path / "day3_attention.png").stat().st_size > 10_000
    stdout = capsys.readouterr().out
    assert "已保存到 day3_attention.png" in stdout
    assert "和手算结果一致：是 ✓" in stdout and "True" not in stdout


def test_day4_trains_saves_and_its_model_generates(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run(day4_train_small, "--max_iters", "100", "--device", "cpu") == 0
    stdout = capsys.readouterr().out
    assert "✓ 模型已保存到 day4_model.pt" in stdout
    assert (tmp_path / "day4_training_curve.png").exists()
    ckpt = torch.load(tmp_path / "day4_model.pt", weights_only=True)
    assert set(ckpt) == {"model_state_dict", "tokenizer_stoi", "tokenizer_itos", "vocab_size", "config"}
    assert ckpt["config"] == {"n_embd": 64, "num_heads": 2, "n_layer": 2, "block_size": 32}
    assert run(generate, "--checkpoint", "day4_model.pt", "--max_new_tokens", "20") == 0


def test_bench_reports_consistent_numbers(tmp_path, capsys):
    import json
    import statistics

    import bench

    out = tmp_path / "bench.json"
    flags = ["--n_embd", "32", "--num_heads", "2", "--n_layer", "1", "--block_size", "16", "--batch_size", "4",
             "--repeats", "2", "--steps", "2", "--warmup", "1", "--gen_tokens", "20", "--device", "cpu"]
    assert run(bench, *flags, "--json", out) == 0
    table = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert results["autocast"] in ("bf16", "fp32")
    for row in ("training tokens/s (median)", f"{results['autocast']} matmul peak GFLOP/s",
                "generation tokens/s, KV cache", "generation tokens/s, no cache", "peak memory"):
        assert row in table
    assert len(results["train_tokens_per_s"]) == 2 and min(results["train_tokens_per_s"]) > 0
    assert results["train_tokens_per_s_median"] == statistics.median(results["train_tokens_per_s"])
    assert results["train_gflops_per_s"] > 0 and results["matmul_peak_gflops"] > 0
    assert set(results["generate_tokens_per_s_median"]) == {"cached", "uncached"}
    assert results["peak_memory_mb"] > 0


FAKE_NANOGPT = '''
from dataclasses import dataclass
import torch, torch.nn as nn, torch.nn.functional as F

@dataclass
class GPTConfig:
    block_size: int = 16
    vocab_size: int = 65
    n_layer: int = 1
    n_head: int = 2
    n_embd: int = 32
    dropout: float = 0.0

class GPT(nn.Module):  # nanoGPT's interface: transformer.h holds the blocks; forward(idx, targets)
    def __init__(self, config):
        super().__init__()
        print("number of parameters: ...")
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            h=nn.ModuleList(nn.Linear(config.n_embd, config.n_embd) for _ in range(config.n_layer))))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size)

    def forward(self, idx, targets=None):
        x = self.transformer.wte(idx)
        for block in self.transformer.h:
            x = x + block(x)
        logits = self.lm_head(x)
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
'''


@needs_muon  # it checks which matrices Muon takes
def test_bench_times_nanogpt_side_by_side_with_the_same_optimizer(tmp_path, capsys, monkeypatch):
    import json

    import bench

    (tmp_path / "model.py").write_text(FAKE_NANOGPT)
    built = []
    make = optim.make_optimizer
    monkeypatch.setattr(bench, "make_optimizer", lambda *a, **k: built.append(make(*a, **k)) or built[-1])
    out = tmp_path / "bench.json"
    flags = ["--n_embd", "32", "--num_heads", "2", "--n_layer", "2", "--block_size", "16", "--batch_size", "4",
             "--repeats", "2", "--steps", "2", "--warmup", "1", "--gen_tokens", "0", "--device", "cpu"]
    assert run(bench, *flags, "--nanogpt", tmp_path / "model.py", "--json", out) == 0
    assert "training tokens/s, this model vs nanoGPT" in capsys.readouterr().out
    side = json.loads(out.read_text())["side_by_side_tokens_per_s"]
    assert len(side["mini-gpt"]) == len(side["nanogpt"]) == 2 and min(side["nanogpt"]) > 0
    ours, theirs = built[-2:]  # both Muon (the default) for their blocks' weight matrices, AdamW for the rest
    muon_shapes = [[tuple(p.shape) for p in opt.optimizers[0].param_groups[0]["params"]] for opt in (ours, theirs)]
    assert muon_shapes[1] == [(32, 32), (32, 32)]  # nanoGPT's two blocks' weights, not its embedding or head
    assert len(muon_shapes[0]) == 8  # this repo: qkv, proj, MLP in and out, in each of its 2 blocks
