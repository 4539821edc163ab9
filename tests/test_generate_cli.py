"""generate.py's sampling controls and visualize_attention.py, on a checkpoint trained once per module."""

import pytest

import generate
import sampling
import train
import visualize_attention
from conftest import TINY_TEXT, assert_clean_error, run


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    data = folder / "tiny.txt"
    data.write_text(TINY_TEXT, encoding="utf-8")
    flags = ["--n_embd", "32", "--num_heads", "2", "--n_layer", "2", "--block_size", "16", "--batch_size", "16",
             "--max_iters", "120", "--eval_interval", "120", "--eval_iters", "2", "--learning_rate", "3e-3",
             "--sample_tokens", "0", "--device", "cpu"]
    assert run(train, "--data", data, "--out_dir", folder / "out", *flags) == 0
    return str(folder / "out" / "ckpt.pt")


def generated(capsys, checkpoint, *flags):
    assert run(generate, "--checkpoint", checkpoint, *flags) == 0
    return capsys.readouterr().out


def test_cache_streaming_and_batching_do_not_change_the_text(capsys, checkpoint):
    flags = ["--prompt", "First Citizen:\\n", "--max_new_tokens", "60", "--top_p", "0.9"]
    plain = generated(capsys, checkpoint, *flags)
    assert plain.startswith("First Citizen:\n") and len(plain) == len("First Citizen:\n") + 60 + 1
    assert generated(capsys, checkpoint, *flags, "--no_cache") == plain  # 60 tokens cross block_size 16
    assert generated(capsys, checkpoint, *flags, "--stream") == plain
    assert generated(capsys, checkpoint, *flags, "--seed", "7") != plain


def test_temperature_zero_is_repeatable_whatever_the_seed(capsys, checkpoint):
    a = generated(capsys, checkpoint, "--temperature", "0", "--max_new_tokens", "30", "--seed", "1")
    assert generated(capsys, checkpoint, "--temperature", "0", "--max_new_tokens", "30", "--seed", "2") == a


def test_stop_string_ends_each_sample_before_it(capsys, checkpoint):
    full = generated(capsys, checkpoint, "--prompt", "A", "--max_new_tokens", "200", "--temperature", "0")
    stop = full[5:7]  # two characters that greedy decoding is sure to produce
    for extra in ([], ["--stream"]):
        out = generated(capsys, checkpoint, "--prompt", "A", "--max_new_tokens", "200", "--temperature", "0",
                        "--stop", stop, *extra)
        assert out == full[: full.index(stop, 1)] + "\n"


def test_prompt_file(tmp_path, capsys, checkpoint):
    (tmp_path / "prompt.txt").write_text("MENENIUS:\n", encoding="utf-8")
    out = generated(capsys, checkpoint, "--prompt_file", tmp_path / "prompt.txt", "--max_new_tokens", "5")
    assert out.startswith("MENENIUS:\n")
    (tmp_path / "unknown.txt").write_text("KING", encoding="utf-8")
    status = run(generate, "--checkpoint", checkpoint, "--prompt_file", tmp_path / "unknown.txt")
    assert_clean_error(status, capsys.readouterr().err, "--prompt_file: cannot encode", "'K'")


@pytest.mark.parametrize("flags, phrase", [
    (["--top_p", "1.5"], "top_p must be in (0, 1]"),
    (["--top_k", "0"], "top_k must be at least 1"),
    (["--max_new_tokens", "-3"], "--max_new_tokens must be >= 0"),
    (["--num_samples", "0"], "--num_samples must be >= 1"),
    (["--stop", "你"], "--stop: cannot encode"),
    (["--prompt_file", "missing.txt"], "no such text file"),
])
def test_bad_generate_flags_get_one_clear_line(capsys, checkpoint, flags, phrase):
    assert_clean_error(run(generate, "--checkpoint", checkpoint, *flags), capsys.readouterr().err, phrase)


def test_visualize_attention(tmp_path, capsys, checkpoint):
    grid = tmp_path / "grid.png"
    assert run(visualize_attention, "--checkpoint", checkpoint, "--prompt", "ROMEO:\\nI", "--out", grid) == 0
    assert "2 layer(s) x 2 head(s) over 8 tokens" in capsys.readouterr().out
    one = tmp_path / "one.png"
    assert run(visualize_attention, "--checkpoint", checkpoint, "--layer", "1", "--head", "0", "--out", one) == 0
    assert grid.stat().st_size > one.stat().st_size > 5_000
    status = run(visualize_attention, "--checkpoint", checkpoint, "--layer", "2")
    assert_clean_error(status, capsys.readouterr().err, "--layer 2 does not exist", "numbered 0 to 1")


def test_a_text_file_or_an_edited_checkpoint_is_one_clear_line(tmp_path, capsys, checkpoint):
    import torch

    notes = tmp_path / "notes.txt"
    notes.write_text("these are my notes,\nnot a model\n", encoding="utf-8")
    for script in (generate, visualize_attention):
        status = run(script, "--checkpoint", notes, "--out" if script is visualize_attention else "--seed", "1")
        assert_clean_error(status, capsys.readouterr().err, "notes.txt is not a checkpoint", "ckpt.pt")

    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["config"]["n_embd"] = 64  # the config now disagrees with the weights
    edited = tmp_path / "edited.pt"
    torch.save(ckpt, edited)
    status = run(generate, "--checkpoint", edited)
    assert_clean_error(status, capsys.readouterr().err, "weights do not fit the model its config describes")


def test_stop_text_holds_back_what_may_become_a_stop_string():
    text = sampling.StopText(["\n\n", "END"])
    released = [text.add(ch) for ch in "ab\nc\nE"]
    assert "".join(released) == "ab\nc" and not text.stopped  # "\n" and "E" may still start a stop string
    assert text.add("N") == "\n" and text.add("D") == "" and text.stopped  # cut before END, never shown
    plain = sampling.StopText()
    assert [plain.add(ch) for ch in "xy"] == ["x", "y"] and plain.rest() == ""
