"""Every hyperparameter in one typed place.

Edit the defaults below to change what `python3 train.py` does (day 5's experiments), or override
any field for one run on the command line with the same name: `--n_embd 128 --max_iters 2000`.

The defaults are tuned to learn the most in 10 minutes on a 2-core laptop CPU (README has the
measurements): a small model, a high learning rate with warmup and cosine decay, no dropout (it
costs more time than it saves on a CPU) and a strong weight decay against overfitting instead.
On a CUDA GPU, train.py starts from the `default` preset instead (see CUDA_PRESET).
"""

import argparse
import dataclasses
from dataclasses import dataclass, field


def _param(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # --- model size ---
    n_embd: int = _param(128, "embedding width: each character becomes a vector of this many numbers")
    num_heads: int = _param(4, "attention heads per layer (n_embd must be divisible by it)")
    n_layer: int = _param(4, "number of transformer blocks")
    block_size: int = _param(128, "context length: how many characters the model sees at once")
    dropout: float = _param(0.0, "dropout probability while training (0 = off; helps big models not overfit)")
    # --- training ---
    batch_size: int = _param(32, "sequences per training step")
    max_iters: int = _param(5000, "stop after this many training steps (or at time_budget, whichever comes first)")
    eval_interval: int = _param(500, "evaluate train/val loss every this many steps")
    eval_iters: int = _param(20, "batches averaged for each loss estimate")
    learning_rate: float = _param(4e-3, "peak AdamW learning rate")
    warmup_fraction: float = _param(0.03, "fraction of the run (by steps or by the clock) spent warming the "
                                          "learning rate up, before the cosine decay")
    min_lr_ratio: float = _param(0.05, "the cosine decay ends at learning_rate * min_lr_ratio")
    weight_decay: float = _param(0.6, "AdamW weight decay (of weight matrices and embeddings)")
    grad_clip: float = _param(1.0, "clip the gradient norm to this (0 = off)")
    grad_accum: int = _param(1, "micro-batches summed into each optimizer step (a bigger batch in less memory)")
    time_budget: float = _param(580.0, "stop after this many seconds of training (0 = no limit): with start-up and "
                                       "the final sample, `python3 train.py` takes 10 minutes")
    compile: str = _param("auto", "torch.compile the model: auto (on for CUDA only), true or false")
    sample_tokens: int = _param(300, "characters to sample and print when training ends (0 = none)")


# Named model sizes from the tutorial's day 5, experiment 1. A preset sets only the fields it
# names; everything else keeps the value above (or the one given on the command line).
PRESETS = {
    "tiny": dict(n_embd=64, num_heads=2, n_layer=2),
    "small": dict(n_embd=128, num_heads=4, n_layer=4),
    # Most learned per second on a CPU in short runs (chosen automatically for a --time_budget of at
    # most QUICK_BUDGET_SECONDS, below).
    "quick": dict(n_embd=128, num_heads=4, n_layer=2, block_size=64, batch_size=16, dropout=0.0,
                  learning_rate=5e-3, eval_interval=500, eval_iters=50),
    # The classic GPU recipe for tiny Shakespeare: ~10.8M parameters, validation loss ~1.47.
    "default": dict(
        n_embd=384, num_heads=6, n_layer=6, block_size=256, dropout=0.2,
        batch_size=64, max_iters=5000, time_budget=0.0, eval_interval=500, eval_iters=200, learning_rate=1e-3,
    ),
}

# With no --preset, a run on a CUDA GPU uses this preset; CPU and Apple MPS runs use the
# defaults above. Set it to None to make GPU runs use the defaults above too.
CUDA_PRESET = "default"

# With no --preset, a short --time_budget off CUDA uses the "quick" preset: a bigger model needs
# more steps before it pulls ahead, so in a minute or two a 2-layer model learns the most.
QUICK_BUDGET_SECONDS = 240


def choose_preset(requested, device, time_budget):
    """The preset a run uses: the one asked for, else CUDA_PRESET on CUDA, else "quick" for a
    short time budget, else None (config.py's values as they stand)."""
    if requested:
        return requested
    if str(device).startswith("cuda"):
        return CUDA_PRESET
    if 0 < time_budget <= QUICK_BUDGET_SECONDS:
        return "quick"
    return None


def apply_overrides(cfg, overrides):
    """Return a copy of cfg with the given {field: value} changed (unknown names raise ValueError)."""
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
    return dataclasses.replace(cfg, **overrides)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each flag's default, except where the default is None: the hyperparameter flags
    default to None ("not given") and say config.py's value in their own help text."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def add_config_args(parser):
    """Add one --<field> flag per Config field. Flags default to None, meaning "not given"."""
    group = parser.add_argument_group("hyperparameters (defaults in config.py)")
    for f in dataclasses.fields(Config):
        group.add_argument(
            f"--{f.name}", type=f.type, default=None, metavar=f.type.__name__.upper(),
            help=f"{f.metadata['help']} (default {f.default})",
        )


def config_from_args(args, preset=None):
    """Config defaults, then the preset's values, then every flag given on the command line."""
    cfg = Config()
    if preset is not None:
        cfg = apply_overrides(cfg, PRESETS[preset])
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    return apply_overrides(cfg, given)


def validate(cfg):
    """Raise ValueError with a clear message for settings that cannot work."""
    checks = [
        (cfg.n_embd >= 1 and cfg.num_heads >= 1 and cfg.n_layer >= 1, "n_embd, num_heads and n_layer must be >= 1"),
        (cfg.n_embd % cfg.num_heads == 0, f"n_embd ({cfg.n_embd}) must be divisible by num_heads ({cfg.num_heads})"),
        (cfg.block_size >= 1, "block_size must be >= 1"),
        (0.0 <= cfg.dropout < 1.0, f"dropout must be in [0, 1), got {cfg.dropout}"),
        (cfg.batch_size >= 1, "batch_size must be >= 1"),
        (cfg.max_iters >= 0, "max_iters must be >= 0"),
        (cfg.eval_interval >= 1, "eval_interval must be >= 1"),
        (cfg.eval_iters >= 1, "eval_iters must be >= 1"),
        (cfg.learning_rate > 0, f"learning_rate must be > 0, got {cfg.learning_rate}"),
        (0.0 <= cfg.warmup_fraction < 1.0, f"warmup_fraction must be in [0, 1), got {cfg.warmup_fraction}"),
        (0.0 <= cfg.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], got {cfg.min_lr_ratio}"),
        (cfg.weight_decay >= 0, "weight_decay must be >= 0"),
        (cfg.grad_clip >= 0, "grad_clip must be >= 0"),
        (cfg.grad_accum >= 1, "grad_accum must be >= 1"),
        (cfg.time_budget >= 0, "time_budget must be >= 0 seconds"),
        (cfg.compile in ("auto", "true", "false"), f"compile must be auto, true or false, got {cfg.compile!r}"),
        (cfg.sample_tokens >= 0, "sample_tokens must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
