"""train.py as a serious trainer: exact resume, Ctrl-C, NaN guard, time budget, DDP, token cache."""

import csv
import dataclasses
import itertools
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import checkpoint
import cli
import device
import model as model_module
import optim
import token_cache
import start
import train
import train_runtime
import utils
from conftest import REPO, assert_clean_error, needs_muon, run, torchrun

SMALL = ["--n_embd", "32", "--num_heads", "2", "--n_layer", "2", "--block_size", "16", "--batch_size", "8",
         "--eval_interval", "10", "--eval_iters", "2", "--warmup_fraction", "0.1", "--learning_rate", "3e-3",
         "--dropout", "0.1", "--sample_tokens", "0", "--device", "cpu"]


def read_log(path):
    return [{k: float(v) if v else math.nan for k, v in row.items()} for row in csv.DictReader(open(path))]


def final_weights(out_dir):
    return torch.load(out_dir / "last.pt", weights_only=True)["model_state_dict"]


def test_stop_and_resume_gives_the_same_run_as_going_straight(tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    # Whatever handled Ctrl-C before (Python's default, or SIG_IGN in a shell's background job) must be put back.
    handler_before = signal.getsignal(signal.SIGINT)
    # The weights are averaged over the last half (steps 20-40), so the stop at step 24 falls inside it.
    flags = ["--data", tiny_text_file, "--max_iters", "40", "--average_fraction", "0.5", *SMALL]
    assert run(train, *flags, "--out_dir", "straight") == 0

    # Press Ctrl-C in the middle of step 24: the step finishes, then last.pt captures everything.
    real_get_batch, calls = train.get_batch, itertools.count(1)

    def interrupting_get_batch(*args):
        if next(calls) == 24:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered to this process
        return real_get_batch(*args)

    monkeypatch.setattr(train, "get_batch", interrupting_get_batch)
    assert run(train, *flags, "--out_dir", "stopped") == 130
    out = capsys.readouterr().out
    assert "interrupted at step 24" in out and "python3 train.py --out_dir stopped --resume" in out
    assert torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)["step"] == 24
    assert signal.getsignal(signal.SIGINT) is handler_before  # Ctrl-C handling put back

    monkeypatch.setattr(train, "get_batch", real_get_batch)
    torch.manual_seed(999)  # a resumed run must not depend on the state the process happens to be in
    assert run(train, "--out_dir", "stopped", "--resume") == 0
    assert "resuming stopped/last.pt at step 24" in capsys.readouterr().out

    straight, resumed = read_log(tmp_path / "straight" / "log.csv"), read_log(tmp_path / "stopped" / "log.csv")
    assert [r["step"] for r in resumed] == [r["step"] for r in straight] == [0, 10, 20, 30, 40]
    for a, b in zip(straight, resumed):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-5 and abs(a["val_loss"] - b["val_loss"]) < 1e-5
    for name, tensor in final_weights(tmp_path / "straight").items():
        torch.testing.assert_close(final_weights(tmp_path / "stopped")[name], tensor, atol=1e-5, rtol=0)
    straight_average, resumed_average = (torch.load(tmp_path / d / "last.pt", weights_only=True)["average_state_dict"]
                                         for d in ("straight", "stopped"))
    assert straight_average["n_averaged"] == resumed_average["n_averaged"] == 21  # steps 20 to 40
    for name, tensor in straight_average.items():
        torch.testing.assert_close(resumed_average[name], tensor, atol=1e-5, rtol=0)


def test_the_saved_model_is_the_mean_of_the_weights_over_the_runs_last_part(tmp_path, monkeypatch, capsys,
                                                                            tiny_text_file):
    monkeypatch.chdir(tmp_path)
    real_train_step, snapshots = train.train_step, []

    def recording_train_step(model, *args):
        loss = real_train_step(model, *args)
        snapshots.append({name: p.detach().clone() for name, p in model.named_parameters(remove_duplicate=False)})
        return loss

    monkeypatch.setattr(train, "train_step", recording_train_step)
    # 20 steps by the step count alone; one evaluation after step 0, at the end, so ckpt.pt is saved there.
    flags = ["--data", tiny_text_file, *SMALL, "--max_iters", "20", "--time_budget", "0", "--eval_interval", "100"]
    assert run(train, *flags, "--average_fraction", "0.25", "--out_dir", "averaged") == 0
    assert "weights: averaged over the last 25% of the run" in capsys.readouterr().out
    last = torch.load(tmp_path / "averaged" / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "averaged" / "ckpt.pt", weights_only=True)
    assert len(snapshots) == 20 and last["average_state_dict"]["n_averaged"] == 6  # after steps 15, 16, ..., 20
    for name, tensor in last["model_state_dict"].items():
        mean = torch.stack([snapshot[name] for snapshot in snapshots[14:]]).mean(dim=0)
        torch.testing.assert_close(best["model_state_dict"][name], mean, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(tensor, snapshots[-1][name])  # last.pt keeps the weights as they train
        assert not torch.allclose(mean, snapshots[-1][name])  # ... which are not the average

    snapshots.clear()
    assert run(train, *flags, "--average_fraction", "0", "--out_dir", "plain") == 0
    assert "averaged over" not in capsys.readouterr().out
    last = torch.load(tmp_path / "plain" / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "plain" / "ckpt.pt", weights_only=True)
    assert "average_state_dict" not in last
    for name, tensor in last["model_state_dict"].items():
        torch.testing.assert_close(best["model_state_dict"][name], tensor)


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_whole_save(tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    real_get_batch, calls = train.get_batch, itertools.count(1)

    def impatient_get_batch(*args):
        if next(calls) == 15:
            raise KeyboardInterrupt  # what Python raises when Ctrl-C is pressed again mid-step
        return real_get_batch(*args)

    monkeypatch.setattr(train, "get_batch", impatient_get_batch)
    assert run(train, "--data", tiny_text_file, "--max_iters", "40", *SMALL, "--out_dir", "out") == 130
    assert "stopped at once" in capsys.readouterr().out
    assert torch.load(tmp_path / "out" / "last.pt", weights_only=True)["step"] == 10  # the last evaluation


def test_resume_without_a_last_checkpoint_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert_clean_error(run(train, "--resume", "--out_dir", "empty"), capsys.readouterr().err, "no checkpoint at empty")


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    real_cross_entropy, calls = model_module.F.cross_entropy, itertools.count(1)

    def cross_entropy_that_breaks(*args, **kwargs):  # fine for 30 calls, then NaN
        loss = real_cross_entropy(*args, **kwargs)
        return loss * float("nan") if next(calls) > 30 else loss

    monkeypatch.setattr(model_module.F, "cross_entropy", cross_entropy_that_breaks)
    status = run(train, "--data", tiny_text_file, "--max_iters", "100", "--out_dir", "out", *SMALL)
    assert_clean_error(status, capsys.readouterr().err, "NaN", "--learning_rate")
    last = torch.load(tmp_path / "out" / "last.pt", weights_only=True)
    assert last["step"] == 10  # the evaluation before things broke
    assert all(torch.isfinite(t).all() for t in last["model_state_dict"].values())


def test_time_budget_stops_the_run_and_drives_the_schedule(tmp_path, monkeypatch, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    ticks = itertools.count()
    monkeypatch.setattr(train.time, "perf_counter", lambda: next(ticks) * 0.5)  # a fake clock: 0.5 s per look
    flags = ["--data", tiny_text_file, "--time_budget", "30", "--max_iters", "100000", "--min_lr_ratio", "0.1", *SMALL]
    assert run(train, *flags, "--out_dir", "out") == 0
    log = read_log(tmp_path / "out" / "log.csv")
    assert 5 < log[-1]["step"] < 100000  # the budget, not max_iters, decided when to stop
    assert 30 <= log[-1]["seconds"] <= 31
    assert log[-1]["lr"] == pytest.approx(3e-3 * 0.1, rel=0.05)  # decayed to min_lr_ratio by the end


def test_bf16_and_fp32_runs_both_learn_and_say_which_they_are(tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    for precision in ("bf16", "fp32"):
        assert run(train, "--data", tiny_text_file, "--max_iters", "60", *SMALL, "--precision", precision,
                   "--out_dir", precision) == 0
        assert f"schedule, {precision}" in capsys.readouterr().out  # the start-up line says what it computes in
        log = read_log(tmp_path / precision / "log.csv")
        assert log[-1]["val_loss"] < log[0]["val_loss"] - 0.5
    status = run(train, "--data", tiny_text_file, *SMALL, "--precision", "fp16")
    assert_clean_error(status, capsys.readouterr().err, "precision must be auto, bf16 or fp32, got 'fp16'")


def test_max_iters_and_time_budget_whichever_comes_first(tmp_path, monkeypatch, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train.time, "perf_counter", itertools.count().__next__)  # 1 s per look: slow
    assert run(train, "--data", tiny_text_file, "--time_budget", "1000", "--max_iters", "7", *SMALL) == 0
    log = read_log(tmp_path / "out" / "log.csv")
    assert log[-1]["step"] == 7 and log[-1]["seconds"] < 1000  # max_iters came first


def test_two_processes_on_cpu_train_in_sync_and_rank_0s_clock_ends_them(tmp_path, tiny_text_file):
    # One torchrun for both checks (each launch costs two fresh interpreters). The clock drives the learning rate
    # and the end: each process reading its own clock ended with different weights. Rank 0's clock must decide.
    result = torchrun([REPO / "train.py", "--data", tiny_text_file, "--time_budget", "3", "--max_iters", "1000000",
                       "--out_dir", "out", *SMALL, "--warmup_fraction", "0.3", "--eval_interval", "5"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cpu x 2 processes" in result.stdout
    assert "all 2 processes hold identical weights" in result.stdout
    assert result.stdout.count("step     5 |") == 1  # only rank 0 logs
    log = read_log(tmp_path / "out" / "log.csv")
    steps = [r["step"] for r in log]
    # Every 5 steps (a quick evaluation may add some on the clock, every twelfth of the budget), then the end.
    every_5 = [step for step in steps[:-1] if step % 5 == 0]
    assert every_5 == list(range(0, 5 * len(every_5), 5)) and steps == sorted(set(steps))
    assert 0 < steps[-1] < 1000000 and log[-1]["seconds"] >= 3  # the clock ended it
    assert (tmp_path / "out" / "ckpt.pt").exists() and (tmp_path / "out" / "loss.png").exists()


def test_torchrun_checks_device_like_one_process(monkeypatch):
    # --device cuda:1 under torchrun used to fall back to CPU processes without a word.
    backends = []
    monkeypatch.setattr(train_runtime.dist, "init_process_group", lambda backend: backends.append(backend))
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    if not torch.cuda.is_available():
        for flag in ("cuda", "cuda:1"):
            with pytest.raises(cli.UserError, match="no CUDA GPU"):
                train_runtime.setup_distributed(flag)
    with pytest.raises(cli.UserError, match="unknown device"):
        train_runtime.setup_distributed("tpu")
    assert backends == []  # refused before joining any process group
    assert train_runtime.setup_distributed("cpu") == (0, 2, "cpu") and backends == ["gloo"]


def test_fused_adamw_falls_back_when_this_torch_lacks_it(monkeypatch):
    # Fused AdamW on CPU arrived in torch 2.4; older versions raise RuntimeError when asked for it.
    from config import Config
    from model import GPTModel

    real_adamw = torch.optim.AdamW

    def old_adamw(params, fused=None, **kwargs):
        if fused:
            # As torch 2.1's AdamW does: Optimizer.__init__ writes the defaults into the caller's group dicts
            # ("fused": True among them), and only then does AdamW's own check raise. A fallback that reuses those
            # dicts still steps with the fused kernel, which that torch lacks on a CPU.
            for group in params:
                group.setdefault("fused", True)
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported "
                               "devices: ['cuda', 'xpu', 'privateuseone']")
        return real_adamw(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", old_adamw)
    model = GPTModel(10, n_embd=8, num_heads=2, n_layer=1, block_size=4)
    (optimizer,) = optim.make_optimizer(model, Config(optimizer="adamw"), "cpu").optimizers
    assert isinstance(optimizer, real_adamw) and not optimizer.defaults["fused"]
    assert not any(group.get("fused") for group in optimizer.param_groups)  # no group keeps the failed call's fused
    if hasattr(torch.optim, "Muon"):  # Muon alongside: its AdamW half falls back the same way
        muon, adamw = optim.make_optimizer(model, Config(optimizer="muon"), "cpu").optimizers
        assert isinstance(adamw, real_adamw) and not adamw.defaults["fused"]
        assert not any(group.get("fused") for group in adamw.param_groups)


def test_a_torch_without_muon_trains_with_adamw_and_says_so_at_start_up(monkeypatch, capsys, tmp_path,
                                                                           tiny_text_file):
    from config import Config
    from model import GPTModel

    monkeypatch.delattr(torch.optim, "Muon", raising=False)  # as in torch < 2.9
    optimizer = optim.make_optimizer(GPTModel(10, n_embd=8, num_heads=2, n_layer=1, block_size=4), Config(), "cpu")
    assert [type(opt) for opt in optimizer.optimizers] == [torch.optim.AdamW]
    assert "has no torch.optim.Muon" in capsys.readouterr().out
    # The start-up line names the optimizer the run really uses, and the checkpoint records it.
    monkeypatch.chdir(tmp_path)
    assert run(train, "--data", tiny_text_file, "--max_iters", "2", "--out_dir", "out", *SMALL) == 0
    out = capsys.readouterr().out
    assert "tokens per step, adamw, peak lr" in out and "muon, peak lr" not in out
    assert torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)["config"]["optimizer"] == "adamw"


@needs_muon
def test_muon_takes_the_blocks_weight_matrices_and_adamw_the_rest():
    from config import Config
    from model import GPTModel

    model = GPTModel(10, n_embd=8, num_heads=2, n_layer=2, block_size=4)
    muon, adamw = optim.make_optimizer(model, Config(optimizer="muon", weight_decay=0.5), "cpu").optimizers
    names = {id(p): name for name, p in model.named_parameters()}
    in_muon = sorted(names[id(p)] for group in muon.param_groups for p in group["params"])
    in_adamw = sorted(names[id(p)] for group in adamw.param_groups for p in group["params"])
    assert in_muon == sorted(f"blocks.{i}.{w}.weight" for i in range(2)
                             for w in ("attn.qkv", "attn.proj", "ffwd.net.0", "ffwd.net.2"))
    assert sorted(in_muon + in_adamw) == sorted(names.values())  # each parameter exactly once
    assert "token_embedding.weight" in in_adamw  # tied with the head: AdamW, decayed
    decayed = {names[id(p)] for group in adamw.param_groups if group["weight_decay"] for p in group["params"]}
    assert decayed == {"token_embedding.weight", "position_embedding.weight"}
    assert muon.param_groups[0]["weight_decay"] == 0.5
    optimizer = optim.make_optimizer(model, Config(optimizer="muon", adamw_lr_ratio=3.0), "cpu")
    optimizer.set_lr(0.1)  # the one rate the loop sets: Muon's group takes it, AdamW's two take 3x
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.1, 0.3, 0.3])


@needs_muon
def test_our_muon_is_torchs_with_a_choice_of_newton_schulz_precision(monkeypatch):
    from config import Config
    from model import GPTModel

    shapes = [(12, 4), (4, 4), (4, 12), (12, 4)]  # a tall, a square and a wide matrix; two of one shape share a batch

    def parameters():
        torch.manual_seed(0)
        return [torch.nn.Parameter(torch.randn(*shape) * 0.1) for shape in shapes]

    kwargs = dict(lr=0.01, weight_decay=0.5, adjust_lr_fn="match_rms_adamw")
    theirs, ours_bf16, ours_fp32 = parameters(), parameters(), parameters()
    optimizers = [torch.optim.Muon(theirs, **kwargs), optim.Muon(ours_bf16, ns_dtype=torch.bfloat16, **kwargs),
                  optim.Muon(ours_fp32, ns_dtype=torch.float32, **kwargs)]
    for step in range(4):
        gradients = [torch.randn(*shape) for shape in shapes]
        for params, optimizer in zip((theirs, ours_bf16, ours_fp32), optimizers):
            for p, g in zip(params, gradients):
                p.grad = g.clone()
            optimizer.step()
    moved = max((p - q).abs().max().item() for p, q in zip(theirs, parameters()))
    for a, b, c in zip(theirs, ours_bf16, ours_fp32):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=0)  # in bf16: PyTorch's numbers, up to rounding
        assert (c - a).abs().max().item() < 0.05 * moved  # in fp32: the same steps, less rounding
    # The same state, so a checkpoint of one resumes with the other.
    optimizers[2].load_state_dict(optimizers[0].state_dict())

    # Newton-Schulz brings every singular value near 1, whatever the matrix's scale.
    matrices = torch.randn(3, 8, 24) * torch.tensor([1e-3, 1.0, 1e3]).view(3, 1, 1)
    singular = torch.linalg.svdvals(optim.orthogonalize(matrices, (3.4445, -4.7750, 2.0315), 5, 1e-7, torch.float32))
    assert singular.min() > 0.6 and singular.max() < 1.3

    # make_optimizer iterates in bf16 only where the hardware multiplies bf16.
    model = GPTModel(10, n_embd=8, num_heads=2, n_layer=1, block_size=4)
    for fast_bf16, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: fast_bf16)
        muon, _ = optim.make_optimizer(model, Config(optimizer="muon"), "cpu").optimizers
        assert muon.ns_dtype == dtype


@needs_muon  # the saved run is Muon's
def test_resuming_with_another_optimizer_is_one_clear_line(tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    assert run(train, "--data", tiny_text_file, "--max_iters", "4", "--optimizer", "adamw", *SMALL) == 0
    before = (tmp_path / "out" / "last.pt").read_bytes()
    capsys.readouterr()
    status = run(train, "--resume", "--max_iters", "8", "--optimizer", "muon", *SMALL)
    assert_clean_error(status, capsys.readouterr().err, "holds an optimizer state this run can't use",
                       "saved by a different optimizer")
    assert (tmp_path / "out" / "last.pt").read_bytes() == before


def test_resume_refuses_flags_it_cannot_honour(tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "other.txt"
    other.write_text(utils.read_text(tiny_text_file)[::-1], encoding="utf-8")
    assert run(train, "--data", tiny_text_file, "--max_iters", "10", *SMALL) == 0
    before = (tmp_path / "out" / "last.pt").read_bytes()
    capsys.readouterr()
    for flags, phrase in ((["--data", other], "--data"), (["--seed", "7"], "--seed 7"),
                          (["--preset", "tiny"], "--preset tiny"), (["--n_embd", "64"], "--n_embd 64"),
                          (["--position", "rope"], "--position rope (it has learned)"),
                          (["--qk_norm", "true"], "--qk_norm True (it has False)")):
        status = run(train, "--resume", "--max_iters", "20", *flags)
        assert_clean_error(status, capsys.readouterr().err, "--resume continues out/last.pt", phrase,
                           "another --out_dir")
    assert (tmp_path / "out" / "last.pt").read_bytes() == before  # nothing was overwritten
    # The same values as saved are fine, and so are hyperparameters that don't change the model.
    assert run(train, "--resume", "--data", tiny_text_file, "--seed", "1337", "--n_embd", "32",
               "--max_iters", "20", "--learning_rate", "1e-3") == 0
    assert read_log(tmp_path / "out" / "log.csv")[-1]["step"] == 20


def test_a_rotary_run_saves_a_checkpoint_that_rebuilds_its_model(tmp_path, monkeypatch, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    assert run(train, "--data", tiny_text_file, "--max_iters", "10", "--position", "rope", "--qk_norm", "true",
               *SMALL) == 0
    ckpt = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    model, _ = checkpoint.model_from_checkpoint(ckpt)
    assert model.position_embedding is None and all(b.attn.rotary and b.attn.qk_norm for b in model.blocks)
    # A checkpoint from before --position and --qk_norm existed has neither field: it is the classic model,
    # whatever config.py's defaults say now, and resuming it continues that model.
    flags = ["--data", tiny_text_file, *SMALL, "--out_dir", "old", "--position", "learned", "--qk_norm", "false"]
    assert run(train, "--max_iters", "10", *flags) == 0
    for name in ("ckpt.pt", "last.pt"):
        old = torch.load(tmp_path / "old" / name, weights_only=True)
        del old["config"]["position"], old["config"]["qk_norm"]
        torch.save(old, tmp_path / "old" / name)
    model, _ = checkpoint.model_from_checkpoint(torch.load(tmp_path / "old" / "ckpt.pt", weights_only=True))
    assert model.position_embedding is not None and not model.blocks[0].attn.rotary
    assert not model.blocks[0].attn.qk_norm

    @dataclasses.dataclass
    class MovedOn(start.Config):  # a config.py whose defaults have since changed to the new options
        position: str = "rope"
        qk_norm: bool = True

    monkeypatch.setattr(start, "Config", MovedOn)
    assert run(train, "--out_dir", "old", "--resume", "--max_iters", "20") == 0
    resumed = torch.load(tmp_path / "old" / "last.pt", weights_only=True)["config"]
    assert (resumed["position"], resumed["qk_norm"]) == ("learned", False)


def test_max_iters_0_does_not_claim_a_checkpoint_it_did_not_write(tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    assert run(train, "--data", tiny_text_file, "--max_iters", "0", *SMALL) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "out" / "ckpt.pt").exists()
    assert "Saved out/ckpt.pt" not in out and "no out/ckpt.pt" in out
    assert (tmp_path / "out" / "last.pt").exists() and "out/last.pt" in out


def test_out_dir_that_is_a_file_is_a_clear_error(tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("my notes", encoding="utf-8")
    status = run(train, "--data", tiny_text_file, "--max_iters", "5", "--out_dir", "taken", *SMALL)
    assert_clean_error(status, capsys.readouterr().err, "--out_dir taken is a file")
    assert (tmp_path / "taken").read_text(encoding="utf-8") == "my notes"


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="root can write to any folder")
def test_out_dir_must_be_writable_before_training(tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "locked").mkdir(mode=0o500)
    status = run(train, "--data", tiny_text_file, "--max_iters", "5", "--out_dir", "locked/out", *SMALL)
    assert_clean_error(status, capsys.readouterr().err, "can't write to --out_dir")


def test_out_dir_writability_is_checked_before_training(tmp_path, monkeypatch, capsys, tiny_text_file):
    # Root may write anywhere, so make the folder unwritable by making the first write in it fail.
    monkeypatch.chdir(tmp_path)
    real_open, steps = open, []

    def refusing_open(path, *args, **kwargs):
        if str(path).startswith("out"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    monkeypatch.setattr(train, "train_step", lambda *args: steps.append(1))
    status = run(train, "--data", tiny_text_file, "--max_iters", "5", *SMALL)
    monkeypatch.undo()
    assert_clean_error(status, capsys.readouterr().err, "can't write to --out_dir out", "Permission denied")
    assert steps == []  # refused before a single step


LOCK_HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from train_runtime import OutDirLock
with OutDirLock({out!r}):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.mark.skipif(os.name == "nt", reason="uses SIGKILL")
def test_a_second_run_into_the_same_out_dir_is_refused_until_the_first_ends(tmp_path, monkeypatch, capsys,
                                                                           tiny_text_file):
    monkeypatch.chdir(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER.format(repo=str(REPO), out=str(tmp_path / "out"))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        status = run(train, "--data", tiny_text_file, "--max_iters", "5", *SMALL)
        assert_clean_error(status, capsys.readouterr().err, f"another training run (process {holder.pid})",
                           "another --out_dir")
        assert not (tmp_path / "out" / "last.pt").exists()
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the lock file stays behind
        holder.wait()
    assert (tmp_path / "out" / ".lock").exists()
    assert run(train, "--data", tiny_text_file, "--max_iters", "5", *SMALL) == 0  # the stale lock doesn't block
    assert (tmp_path / "out" / "last.pt").exists()


# ---------------------------------------------------------------- token cache

def test_token_cache_is_written_once_and_read_back(tmp_path, monkeypatch):
    text = "床前明月光，疑是地上霜。\nto be or not to be\n" * 50
    path = tmp_path / "poems.txt"
    path.write_text(text, encoding="utf-8")
    first = token_cache.load_tokens(path)
    tok = utils.CharTokenizer(text)
    assert first.stoi == tok.stoi
    assert first.tokens.dtype == np.uint16 and first.tokens.tolist() == tok.encode(text)
    assert len(list(tmp_path.glob("poems.txt.*.tokens.npy"))) == 1

    def no_encoding(*args):
        raise AssertionError("the cached tokens should have been read back, not re-encoded")

    monkeypatch.setattr(utils.CharTokenizer, "encode_array", no_encoding)
    again = token_cache.load_tokens(path)
    assert isinstance(again.tokens, np.memmap) and again.tokens.tolist() == first.tokens.tolist()
    monkeypatch.undo()

    path.write_text(text + "new words", encoding="utf-8")  # new content, new hash, new cache
    changed = token_cache.load_tokens(path)
    assert len(changed.tokens) == len(text) + len("new words")
    assert len(list(tmp_path.glob("poems.txt.*.tokens.npy"))) == 1  # the stale cache is gone


def test_token_cache_uses_uint32_for_big_vocabularies_and_chunks_big_files(tmp_path, monkeypatch):
    monkeypatch.setattr(utils, "CHUNK_CHARS", 1000)  # force many chunks
    text = "".join(chr(0x10000 + i) for i in range(70_000))  # 70,000 distinct characters > 65,536
    path = tmp_path / "wide.txt"
    path.write_text(text, encoding="utf-8")
    data = token_cache.load_tokens(path)
    assert data.tokens.dtype == np.uint32
    assert utils.CharTokenizer.from_stoi(data.stoi).decode(data.tokens.tolist()) == text


def test_token_cache_falls_back_to_memory_in_a_read_only_folder(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    path.write_text("hello there\n", encoding="utf-8")

    def read_only(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(token_cache.tempfile, "mkstemp", read_only)
    data = token_cache.load_tokens(path)
    assert utils.CharTokenizer.from_stoi(data.stoi).decode(data.tokens.tolist()) == "hello there\n"
    assert list(tmp_path.iterdir()) == [path]


def test_load_tokens_errors(tmp_path):
    with pytest.raises(cli.UserError, match="no such text file"):
        token_cache.load_tokens(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(cli.UserError, match="empty"):
        token_cache.load_tokens(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe bad")
    with pytest.raises(cli.UserError, match="not UTF-8"):
        token_cache.load_tokens(tmp_path / "bad.txt")


def test_gradient_accumulation_equals_one_big_batch():
    from config import Config
    from contextlib import nullcontext
    from model import GPTModel

    torch.manual_seed(0)
    data = torch.randint(20, (8, 17))
    batches = [(data[:4, :-1], data[:4, 1:]), (data[4:, :-1], data[4:, 1:])]
    results = []
    for accum, micro in ((1, [(data[:, :-1], data[:, 1:])]), (2, batches)):
        torch.manual_seed(1)
        model = GPTModel(20, n_embd=16, num_heads=2, n_layer=1, block_size=16)
        cfg = Config(grad_accum=accum, grad_clip=0.0, learning_rate=1e-2, weight_decay=0.0)
        optimizer = optim.make_optimizer(model, cfg, "cpu")
        feed = iter(micro)
        train.train_step(model, optimizer, cfg, nullcontext(), 1, lambda: next(feed))
        results.append(model.state_dict())
    for name, tensor in results[0].items():
        torch.testing.assert_close(results[1][name], tensor, atol=1e-6, rtol=0)


def test_cleaning_stale_caches_never_removes_the_current_one(tmp_path):
    # Two processes (torchrun) may build the same cache at once: one's clean-up of stale caches
    # must not delete the cache the other has just written for the same text.
    path = tmp_path / "t.txt"
    path.write_text("some text\n", encoding="utf-8")
    data = token_cache.load_tokens(path)
    current = sorted(p.name for p in tmp_path.glob("t.txt.*.tokens.*"))
    (tmp_path / "t.txt.0123456789abcdef.tokens.npy").write_bytes(b"stale")
    (tmp_path / "t.txt.0123456789abcdef.tokens.json").write_text("{}")
    stem = current[0].rsplit(".", 1)[0]  # t.txt.<hash>.tokens
    token_cache.remove_stale_caches(path, stem)
    assert sorted(p.name for p in tmp_path.glob("t.txt.*.tokens.*")) == current
    assert token_cache.load_tokens(path).tokens.tolist() == data.tokens.tolist()


def test_the_best_model_is_scored_on_the_whole_validation_split(tmp_path, monkeypatch, capsys, tiny_text_file):
    monkeypatch.chdir(tmp_path)
    assert run(train, "--data", tiny_text_file, "--max_iters", "20", *SMALL) == 0
    out = capsys.readouterr().out
    ckpt = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    log = read_log(tmp_path / "out" / "log.csv")
    scored = [row for row in log if not math.isnan(row["full_val_loss"])]
    assert [row["step"] for row in scored] == [ckpt["step"]]  # on the best model's row, and only there
    assert math.isclose(scored[0]["full_val_loss"], ckpt["full_val_loss"], abs_tol=1e-4)
    model, _ = checkpoint.load_model(tmp_path / "out" / "ckpt.pt")
    val = utils.train_val_split(utils.CharTokenizer(utils.read_text(tiny_text_file)).encode_array(
        utils.read_text(tiny_text_file)))[1]
    assert math.isclose(utils.full_split_loss(model, val, 16, 8, "cpu"), ckpt["full_val_loss"], rel_tol=1e-5)
    assert f"{ckpt['full_val_loss']:.4f} on the whole validation split" in out


def test_a_checkpoint_whose_head_has_a_bias_still_loads_and_resumes(tmp_path, monkeypatch, tiny_text_file):
    # Before head_bias existed every model's output layer had a bias, and day 4's checkpoints never say: the
    # weights themselves tell which model to build.
    monkeypatch.chdir(tmp_path)
    assert run(train, "--data", tiny_text_file, "--max_iters", "10", "--out_dir", "old", "--head_bias", "true",
               *SMALL) == 0
    for name in ("ckpt.pt", "last.pt"):
        ckpt = torch.load(tmp_path / "old" / name, weights_only=True)
        del ckpt["config"]["head_bias"]  # as saved before the field existed
        torch.save(ckpt, tmp_path / "old" / name)
    model, _ = checkpoint.load_model(tmp_path / "old" / "ckpt.pt")
    assert model.lm_head.bias is not None
    assert run(train, "--out_dir", "old", "--resume", "--max_iters", "12") == 0
    resumed = torch.load(tmp_path / "old" / "last.pt", weights_only=True)
    assert resumed["step"] == 12 and "lm_head.bias" in resumed["model_state_dict"]
    new, _ = checkpoint.model_from_checkpoint({**ckpt, "model_state_dict": {
        k: v for k, v in ckpt["model_state_dict"].items() if k != "lm_head.bias"}})
    assert new.lm_head.bias is None  # the default now: no bias, as GPT-2


def test_a_time_budgeted_run_also_evaluates_on_the_clock_but_not_too_often():
    from types import SimpleNamespace as NS

    def due(step, seconds, last_eval_at, budget=60.0, eval_seconds=0.1, eval_interval=500):
        run = NS(cfg=NS(time_budget=budget, eval_interval=eval_interval), eval_seconds=eval_seconds,
                 state=NS(step=step, seconds=seconds, history=[train.HistoryRow(0, last_eval_at, 0, 0, 0)]))
        return train.Run.evaluation_due(run)

    assert due(500, 1.0, 0.9)  # every eval_interval steps, as always
    assert not due(37, 4.9, 0.0) and due(37, 5.0, 0.0)  # and every twelfth of a 60 s budget
    assert not due(37, 30.0, 0.0, budget=0)  # a run by steps only: steps only
    assert not due(37, 20.0, 0.0, eval_seconds=3.0) and due(37, 30.0, 0.0, eval_seconds=3.0)  # at most a tenth


def test_a_busy_cpu_gets_fewer_threads_and_a_slow_run_says_why(monkeypatch):
    assert train_runtime.threads_for(2, 1.9, 2) == 1  # a second training holds both cores
    assert train_runtime.threads_for(2, 0.2, 2) == 2 and train_runtime.threads_for(8, 3.2, 8) == 5
    assert train_runtime.threads_for(2, None, 2) == 2  # unknown (not Linux): PyTorch's choice stands
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert train_runtime.slow_run_note(5000, 580, 9.0, 0.1, 2) is None  # quiet, at its own pace
    crowded = train_runtime.slow_run_note(300, 60, 9.0, 1.4, 1)
    assert crowded.startswith("note: other programs kept 1.4 of this computer's 2 cores busy")
    assert "(300 in 60 s)" in crowded and "OMP_NUM_THREADS" not in crowded and "常见错误" in crowded
    slowed = train_runtime.slow_run_note(1000, 580, 9.0, 0.2, 2)
    assert "19% of what its own fastest stretch would have made" in slowed and "OMP_NUM_THREADS=1" in slowed
    # The meter reads this process's share apart from everyone else's (on Linux).
    meter = train_runtime.CpuMeter()
    if meter.last is not None:
        sum(i * i for i in range(1_000_000))  # busy in this process only
        others = meter.others()  # None if the kernel's clock hasn't ticked in between
        assert others is None or 0.0 <= others <= 2.0
