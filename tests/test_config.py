import argparse
import dataclasses

import pytest

from config import (
    CUDA_PRESET, PRESETS, QUICK_BUDGET_SECONDS, Config, add_config_args, apply_overrides, choose_preset,
    config_from_args, validate,
)


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
    with pytest.raises(ValueError, match="unknown config field"):
        apply_overrides(Config(), {"n_embed": 3})


def test_choose_preset():
    assert choose_preset("tiny", "cuda", 0) == "tiny"  # asked for: always
    assert choose_preset(None, "cuda", 60) == CUDA_PRESET
    assert choose_preset(None, "cpu", 0) is None  # config.py as it stands
    assert choose_preset(None, "cpu", 600) is None
    assert choose_preset(None, "mps", 75) == "quick"
    assert choose_preset(None, "cpu", QUICK_BUDGET_SECONDS) == "quick"
    assert choose_preset(None, "cpu", QUICK_BUDGET_SECONDS + 1) is None


@pytest.mark.parametrize("script", ["train", "generate", "bench", "visualize_attention"])
def test_help_shows_each_default_once(script, capsys):
    module = __import__(script)
    with pytest.raises(SystemExit):
        module.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert "(default: None)" not in text
    if script in ("train", "bench"):
        assert f"(default {Config().n_embd})" in text and "(default: 128)" not in text
