import argparse
import dataclasses

import pytest

import shutil
import subprocess
import sys

from config import (
    CUDA_PRESET, PRESETS, Config, add_config_args, apply_overrides, choose_preset, config_from_args, preset_sizes,
    validate,
)
from conftest import REPO


def parse(argv):
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    return parser.parse_args(argv)


def test_every_field_has_a_flag_of_the_same_name():
    args = parse([])
    for f in dataclasses.fields(Config):
        assert hasattr(args, f.name) and getattr(args, f.name) is None


def test_flags_override_the_preset_which_overrides_the_defaults():
    cfg = config_from_args(parse(["--n_embd", "96", "--max_iters", "7", "--dropout", "0"]), preset="tiny")
    assert cfg.n_embd == 96  # the flag wins over the preset
    assert cfg.num_heads == PRESETS["tiny"]["num_heads"]  # the preset wins over the default
    assert cfg.max_iters == 7 and cfg.dropout == 0.0
    assert cfg.batch_size == Config().batch_size  # untouched fields keep config.py's value


def test_presets_are_the_tutorial_sizes_and_valid():
    assert {k: PRESETS["tiny"][k] for k in ("n_embd", "n_layer", "num_heads")} == dict(n_embd=64, n_layer=2, num_heads=2)
    assert {k: PRESETS["small"][k] for k in ("n_embd", "n_layer", "num_heads")} == dict(n_embd=128, n_layer=4, num_heads=4)
    assert {k: PRESETS["default"][k] for k in ("n_embd", "n_layer", "num_heads")} == dict(n_embd=384, n_layer=6, num_heads=6)
    for name in PRESETS:
        validate(apply_overrides(Config(), PRESETS[name]))
    validate(Config())


def test_validate_explains_what_is_wrong():
    with pytest.raises(ValueError, match=r"n_embd \(100\) must be divisible by num_heads \(3\)"):
        validate(Config(n_embd=100, num_heads=3))
    with pytest.raises(ValueError, match="dropout must be in"):
        validate(Config(dropout=1.5))
    with pytest.raises(ValueError, match=r"average_fraction must be in \[0, 1\], got 1.5"):
        validate(Config(average_fraction=1.5))
    with pytest.raises(ValueError, match="position must be learned or rope, got 'sinusoidal'"):
        validate(Config(position="sinusoidal"))
    with pytest.raises(ValueError, match="--position rope needs an even head size"):
        validate(Config(position="rope", n_embd=36, num_heads=4))
    with pytest.raises(ValueError, match="unknown config field"):
        apply_overrides(Config(), {"n_embed": 3})


def test_true_or_false_flags(capsys):
    for text, value in (("true", True), ("False", False), ("1", True), ("no", False)):
        assert parse(["--qk_norm", text]).qk_norm is value  # bool("False") would be True
    with pytest.raises(SystemExit) as exit:
        parse(["--qk_norm", "maybe"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--qk_norm: expected true or false, got 'maybe'" in err.splitlines()[-1]


def test_choose_preset():
    assert choose_preset("tiny", "cuda") == "tiny"  # asked for: always
    assert choose_preset(None, "cuda") == CUDA_PRESET
    assert choose_preset(None, "cuda:1") == CUDA_PRESET
    assert choose_preset("none", "cuda") is None  # config.py's values, on CUDA too
    assert choose_preset(None, "cpu") is None  # config.py as it stands, whatever the time budget
    assert choose_preset(None, "mps") is None
    assert preset_sizes("default") == "n_embd 384, num_heads 6, n_layer 6, block_size 256"


def test_an_edit_to_config_py_is_what_the_next_run_uses(tmp_path, tiny_text_file):
    """Day 5 asks the learner to edit the model size in config.py: the run must use the edit, short
    time budget or not."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns("out*", ".git", "tests", "docs", "static", "data"))
    config = copy / "config.py"
    text = config.read_text(encoding="utf-8")
    for field, new in (("n_embd", 48), ("num_heads", 3), ("n_layer", 1)):
        line = f"    {field}: int = _param({getattr(Config(), field)}, "
        assert line in text, f"config.py no longer has {line!r}; update this test"
        text = text.replace(line, f"    {field}: int = _param({new}, ")
    config.write_text(text, encoding="utf-8")
    # Both runs in one fresh interpreter (it reads the edited config.py; a second one would only import torch again).
    runs = [["train.py", "--data", str(tiny_text_file), "--time_budget", budget, "--max_iters", "1", "--eval_iters", "1",
             "--batch_size", "2", "--block_size", "16", "--sample_tokens", "0", "--device", "cpu",
             "--out_dir", str(tmp_path / f"out{budget}")] for budget in ("75", "0")]
    program = ("import runpy, sys\n"
               f"for argv in {runs!r}:\n"
               "    sys.argv = argv\n"
               "    runpy.run_path('train.py', run_name='__main__')\n"
               "    print('=== run done')\n")
    result = subprocess.run([sys.executable, "-c", program], cwd=copy, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    outputs = result.stdout.split("=== run done")[:2]
    assert len(outputs) == 2
    for output in outputs:
        assert "config: config.py" in output
        assert "(n_embd 48, num_heads 3, n_layer 1, block_size 16)" in output, output


@pytest.mark.parametrize("script", ["train", "generate", "bench", "visualize_attention"])
def test_help_shows_each_default_once(script, capsys):
    module = __import__(script)
    with pytest.raises(SystemExit):
        module.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert "(default: None)" not in text
    if script in ("train", "bench"):
        assert f"(default {Config().n_embd})" in text and "(default: 128)" not in text
