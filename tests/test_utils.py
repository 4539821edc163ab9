import math
import os

import numpy as np
import pytest
import torch

from model import GPTModel
from utils import (
    CharTokenizer, UserError, get_batch, get_device, load_checkpoint, lr_at, model_from_checkpoint,
    read_text, save_checkpoint, train_val_split,
)


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


def test_checkpoint_round_trip(tmp_path):
    tok = CharTokenizer("to be or not to be")
    model = GPTModel(tok.vocab_size, n_embd=16, num_heads=2, n_layer=1, block_size=8).eval()
    ckpt = {
        "model_state_dict": model.state_dict(), "tokenizer_stoi": tok.stoi, "tokenizer_itos": tok.itos,
        "vocab_size": tok.vocab_size, "config": {"n_embd": 16, "num_heads": 2, "n_layer": 1, "block_size": 8},
    }
    path = tmp_path / "sub" / "ckpt.pt"
    save_checkpoint(ckpt, path)
    assert os.listdir(path.parent) == ["ckpt.pt"]  # no temporary file left behind
    loaded_model, loaded_tok = model_from_checkpoint(load_checkpoint(path), "cpu")
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
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(UserError, match="could not read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(UserError, match="does not hold a Mini-GPT model"):
        model_from_checkpoint({"step": 3})


def test_lr_schedule_warmup_then_cosine():
    base, warmup = 1e-3, 10
    warm = [lr_at(s, s / 100, base, warmup, 0.1) for s in range(warmup)]
    assert warm == sorted(warm) and math.isclose(warm[-1], base)  # rises linearly to the peak
    assert math.isclose(warm[0], base / warmup)
    decay = [lr_at(s, s / 100, base, warmup, 0.1) for s in range(warmup, 101)]
    assert decay == sorted(decay, reverse=True)  # then only falls
    assert math.isclose(lr_at(100, 1.0, base, warmup, 0.1), base * 0.1)  # to min_lr_ratio * base
    assert math.isclose(lr_at(50, 0.5, base, 0, 0.0), base / 2)  # the cosine's midpoint
    assert math.isclose(lr_at(500, 3.0, base, warmup, 0.1), base * 0.1)  # progress past 1 is clamped
