import contextlib
import math
import os

import numpy as np
import pytest
import torch

from checkpoint import load_checkpoint, load_model, make_checkpoint, model_from_checkpoint, save_checkpoint
from cli import UserError
from device import get_device
from model import GPTModel
from optim import lr_at, progress
from utils import CharTokenizer, full_split_loss, get_batch, read_text, train_val_split
import device
import utils


def test_get_batch_targets_are_the_inputs_shifted_by_one():
    data = torch.arange(1000)
    x, y = get_batch(data, batch_size=8, block_size=16, device="cpu", generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16)
    assert x.dtype == y.dtype == torch.long
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(8, 15, dtype=torch.long))  # contiguous windows
    assert torch.equal(y[:, -1], x[:, -1] + 1)


def test_get_batch_is_a_pure_function_of_its_generator_and_accepts_numpy():
    data = torch.randint(50, (500,))
    a = get_batch(data, 4, 8, "cpu", torch.Generator().manual_seed(7))
    b = get_batch(data.numpy().astype(np.uint16), 4, 8, "cpu", torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_get_batch_covers_every_start():
    data = torch.arange(20)
    x, _ = get_batch(data, batch_size=2000, block_size=5, device="cpu", generator=torch.Generator().manual_seed(0))
    assert set(x[:, 0].tolist()) == set(range(15))  # every valid window start, none past the end


def test_train_val_split():
    train, val = train_val_split(torch.arange(100), 0.9)
    assert len(train) == 90 and len(val) == 10 and val[0] == 90


def test_read_text_errors(tmp_path):
    with pytest.raises(UserError, match="no such text file"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        read_text(tmp_path / "latin1.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="empty"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "ok.txt").write_text("你好\n", encoding="utf-8")
    assert read_text(tmp_path / "ok.txt") == "你好\n"


def test_get_device():
    assert get_device("cpu") == "cpu"
    assert get_device("auto") in ("cpu", "cuda", "mps")
    with pytest.raises(UserError, match="unknown device"):
        get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            get_device("cuda")


def test_fast_bf16_is_read_from_the_cpu_flags(tmp_path):
    flags = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {extra}\nbogomips\t: 4800\n"
    cases = {"avx512_bf16 avx512_vnni": True, "amx_tile amx_bf16": True, "avx512_vnni": False}
    for extra, expected in cases.items():
        (tmp_path / "cpuinfo").write_text(flags.format(extra=extra))
        assert device.cpu_has_fast_bf16(tmp_path / "cpuinfo") is expected
    assert device.cpu_has_fast_bf16(tmp_path / "missing") is False  # not Linux: stay with fp32


def test_precision_auto_is_bf16_only_where_the_hardware_is_fast(monkeypatch):
    for fast, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: fast)
        assert device.resolve_precision("cpu", "auto") == expected
        assert device.resolve_precision("mps", "auto") == "fp32"
    assert device.resolve_precision("cpu", "bf16") == "bf16" and device.resolve_precision("cpu", "fp32") == "fp32"
    assert device.resolve_precision("mps", "bf16") == "fp32"  # MPS always computes in fp32 here
    assert isinstance(device.autocast_context("cpu", "fp32"), type(contextlib.nullcontext()))
    assert device.autocast_context("cpu", "bf16").fast_dtype == torch.bfloat16


def test_bf16_autocast_gives_the_fp32_loss_and_gradients_to_bf16_precision():
    torch.manual_seed(0)
    model = GPTModel(65, n_embd=64, num_heads=4, n_layer=2, block_size=32)
    x, y = torch.randint(65, (4, 32)), torch.randint(65, (4, 32))
    results = {}
    for precision in ("fp32", "bf16"):
        model.zero_grad()
        with device.autocast_context("cpu", precision):
            logits, loss = model(x, y)
        loss.backward()
        assert logits.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
        assert loss.dtype == torch.float32 and model.lm_head.weight.grad.dtype == torch.float32  # fp32 weights
        results[precision] = loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])
    (loss32, grad32), (loss16, grad16) = results["fp32"], results["bf16"]
    assert abs(loss16 - loss32) < 1e-2  # bf16 keeps ~3 significant digits
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.99


def test_checkpoint_round_trip(tmp_path):
    tok = CharTokenizer("to be or not to be")
    model = GPTModel(tok.vocab_size, n_embd=16, num_heads=2, n_layer=1, block_size=8).eval()
    ckpt = make_checkpoint(model, tok, {"n_embd": 16, "num_heads": 2, "n_layer": 1, "block_size": 8}, step=7)
    assert set(ckpt) == {"model_state_dict", "tokenizer_stoi", "tokenizer_itos", "vocab_size", "config", "step"}
    path = tmp_path / "sub" / "ckpt.pt"
    save_checkpoint(ckpt, path)
    assert os.listdir(path.parent) == ["ckpt.pt"]  # no temporary file left behind
    loaded_model, loaded_tok = load_model(path, "cpu")
    assert not loaded_model.training  # ready for inference: dropout off
    idx = torch.tensor([tok.encode("to be")])
    torch.testing.assert_close(loaded_model(idx)[0], model(idx)[0], atol=0, rtol=0)
    assert loaded_tok.stoi == tok.stoi and loaded_tok.itos == tok.itos


def test_a_failed_save_leaves_the_old_checkpoint_intact(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"step": 1}, path)
    with pytest.raises(Exception):
        save_checkpoint({"step": 2, "bad": lambda: None}, path)  # a lambda cannot be pickled
    assert load_checkpoint(path) == {"step": 1}
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(UserError, match="train one first"):
        load_checkpoint(tmp_path / "nothing.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint\nbut a text file\n")
    with pytest.raises(UserError, match="not a checkpoint that Mini-GPT can read") as error:
        load_checkpoint(tmp_path / "junk.pt")
    assert "\n" not in str(error.value)  # one line, not torch's multi-line weights_only explanation
    with pytest.raises(UserError, match="does not hold a Mini-GPT model"):
        model_from_checkpoint({"step": 3})


def test_lr_schedule_warmup_then_cosine():
    base, warmup = 1e-3, 0.1
    warm = [lr_at(p / 100, base, warmup, 0.1) for p in range(11)]
    assert warm == sorted(warm) and math.isclose(warm[-1], base)  # rises linearly to the peak ...
    assert warm[0] == 0 and math.isclose(warm[5], base / 2)
    decay = [lr_at(p / 100, base, warmup, 0.1) for p in range(10, 101)]
    assert decay == sorted(decay, reverse=True)  # ... then only falls
    assert math.isclose(lr_at(1.0, base, warmup, 0.1), base * 0.1)  # to min_lr_ratio * base
    assert math.isclose(lr_at(0.55, base, warmup, 0.0), base / 2)  # the cosine's midpoint, halfway after warmup
    assert math.isclose(lr_at(3.0, base, warmup, 0.1), base * 0.1)  # progress past 1 is clamped
    assert math.isclose(lr_at(0.0, base, 0.0, 0.1), base)  # no warmup: the peak at once


def test_lr_schedule_warmup_stable_decay():
    base, warmup, cooldown = 1e-3, 0.1, 0.3
    lr = lambda p: lr_at(p, base, warmup, 0.1, schedule="wsd", cooldown=cooldown)  # noqa: E731
    assert lr(0.0) == 0 and math.isclose(lr(0.05), base / 2)  # the same warmup ...
    assert all(lr(p / 100) == base for p in range(10, 71))  # ... a flat peak until the cooldown ...
    cool = [lr(p / 100) for p in range(70, 101)]
    assert cool == sorted(cool, reverse=True) and math.isclose(cool[-1], base * 0.1)  # ... then a straight line down
    assert math.isclose(lr(0.85), base * (1 - 0.9 * 0.5))  # halfway through the cooldown
    assert math.isclose(lr_at(0.5, base, 0.6, 0.0, schedule="wsd", cooldown=0.9), base * 0.5 / 0.6)  # warmup first


def test_full_split_loss_is_the_mean_over_every_window_of_the_split():
    torch.manual_seed(0)
    model = GPTModel(7, n_embd=8, num_heads=2, n_layer=1, block_size=5)
    data = torch.randint(7, (53,))  # 10 whole windows of 5 (+1 target), then a window of the last 2 targets
    by_hand = [model(data[i:i + 5][None], data[i + 1:i + 6][None])[1].item() * 5 for i in range(0, 50, 5)]
    by_hand.append(model(data[50:52][None], data[51:53][None])[1].item() * 2)
    for batch_size in (1, 3, 64):  # batching does not change the number
        assert math.isclose(full_split_loss(model, data, 5, batch_size, "cpu"), sum(by_hand) / 52, rel_tol=1e-5)
    assert math.isclose(full_split_loss(model, data.numpy(), 5, 4, "cpu"), sum(by_hand) / 52, rel_tol=1e-5)
    assert model.training  # the mode is restored
    short = data[:4]  # shorter than a window: one window of 3 predictions
    assert math.isclose(full_split_loss(model, short, 5, 4, "cpu"), model(short[None, :3], short[None, 1:])[1].item(),
                        rel_tol=1e-5)
    with pytest.raises(ValueError, match="need at least 2 tokens"):
        full_split_loss(model, data[:1], 5, 4, "cpu")


def test_progress_is_steps_or_clock_whichever_is_further():
    assert progress(50, 0.0, 100, 0) == 0.5  # no time budget: steps only
    assert progress(50, 90.0, 100, 100) == 0.9  # the clock is further along
    assert progress(80, 10.0, 100, 100) == 0.8
    assert progress(300, 500.0, 100, 100) == 1.0  # never past the end


def test_the_schedule_has_the_same_shape_on_a_slow_and_a_fast_machine():
    # A short budget on a slow machine takes few steps. Warmup measured in steps (100 of them) would
    # cover a slow machine's whole run; measured as a fraction of the run, it is the same share anywhere.
    import train
    from config import Config

    cfg = Config(time_budget=60.0, max_iters=10**6)
    for steps_per_second in (1, 50):  # a slow machine and a fast one
        total = 60 * steps_per_second
        lrs = [train.learning_rate(cfg, s, s / steps_per_second) for s in range(total + 1)]
        peak = max(range(len(lrs)), key=lrs.__getitem__)
        assert math.isclose(lrs[peak], cfg.learning_rate, rel_tol=0.05)  # warmup ends, the peak is reached
        assert abs(peak / total - cfg.warmup_fraction) <= 1.5 / steps_per_second / 60 + 0.01
        assert math.isclose(lrs[-1], cfg.learning_rate * cfg.min_lr_ratio)


def test_checkpoints_get_ordinary_permissions_and_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    import token_cache

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    old_umask = os.umask(0o022)
    try:
        save_checkpoint({"step": 1}, tmp_path / "ckpt.pt")
        assert events == ["fsync", "replace", "fsync"]  # the file before the rename, its folder after
        (tmp_path / "text.txt").write_text("some text\n", encoding="utf-8")
        token_cache.load_tokens(tmp_path / "text.txt")
    finally:
        os.umask(old_umask)
    for path in tmp_path.iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path.name  # not mkstemp's private 0600


def test_a_checkpoint_whose_config_does_not_fit_its_weights_is_one_clear_line(tmp_path):
    tok = CharTokenizer("abcdef")
    model = GPTModel(tok.vocab_size, n_embd=16, num_heads=2, n_layer=1, block_size=8)
    ckpt = make_checkpoint(model, tok, {"n_embd": 32, "num_heads": 2, "n_layer": 1, "block_size": 8})
    save_checkpoint(ckpt, tmp_path / "edited.pt")
    with pytest.raises(UserError) as error:
        load_model(tmp_path / "edited.pt")
    message = str(error.value)
    assert "do not fit the model its config describes" in message and "[6, 16]" in message
    assert "\n" not in message and "size mismatch" not in message
