"""Every hyperparameter in one typed place.

Edit the defaults below to change what `python3 train.py` does (day 5's experiments), or override
any field for one run on the command line with the same name: `--n_embd 128 --max_iters 2000`.
On a CPU or a Mac, an edit here is what the next run uses; on a CUDA GPU, train.py starts from the
`default` preset instead and says so (see CUDA_PRESET; `--preset none` uses these values there too).

The defaults are the best recipe measured for both a 75-second and a 10-minute run on a 2-core laptop CPU;
docs/speedrun.md has the record, one change per row. The comment above each tuned value says why it is what it is.
"""

import argparse
import dataclasses
from dataclasses import dataclass, field

from i18n import _
from model import MODEL_ARGS, check_model_args


def _param(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # --- model size ---
    # 128 wide, 4 heads of 32: the tutorial's small model
    n_embd: int = _param(128, "embedding width: each character becomes a vector of this many numbers")
    num_heads: int = _param(4, "attention heads per layer (n_embd must be divisible by it)")
    # 3 layers (0.64M parameters) beat 4 at 75 s and matched them at 10 minutes; 6 won at 10 minutes only
    n_layer: int = _param(3, "number of transformer blocks")
    # 256 characters, five to eight lines of a play: as fast per token as 128, and each prediction sees more
    block_size: int = _param(256, "context length: how many characters the model sees at once")
    # learned, as day 2 teaches. rope and qk_norm pay in 75 s runs on a CPU (both: 1.83 -> 1.70) and tie at
    # 10 minutes, where their 12% slower steps cost what they gain (docs/speedrun.md, round 5)
    position: str = _param("learned", "how the model knows where each character is: learned (a trained position "
                                      "embedding, day 2) or rope (rotary: attention turns queries and keys by "
                                      "their positions)")
    qk_norm: bool = _param(False, "normalise each query and key to RMS 1 before attention (true or false)")
    # none, as GPT-2 and nanoGPT (and Hugging Face's GPT2LMHeadModel, for export_hf.py): at 1,500 steps, seeds 1337 and
    # 1338, 1.4808 and 1.4941 without it against 1.4925 and 1.4941 with it
    head_bias: bool = _param(False, "give the output layer a learned bias per character (true or false)")
    # off: on a CPU it makes attention 6.5x slower (no fused kernel with dropout); 0.1 fell far behind in 10 minutes
    dropout: float = _param(0.0, "dropout probability while training (0 = off; helps big models not overfit)")
    # --- tokens ---
    tokenizer: str = _param("char", "char: one token per character (day 1); bpe: byte-pair encoding, subword tokens "
                                    "learned from the training text (day1_bpe.py)")
    vocab_size: int = _param(512, "with --tokenizer bpe: how many tokens, the 256 bytes plus the merges learned")
    # --- training ---
    # 16 x 256 = 4,096 tokens a step, as many as 32 x 128 was
    batch_size: int = _param(16, "sequences per training step")
    # high enough that on a CPU the 580 s clock, not the step count, ends the run
    max_iters: int = _param(20000, "stop after this many training steps (or at time_budget, whichever comes first)")
    eval_interval: int = _param(500, "evaluate train/val loss every this many steps (and, under a time "
                                           "budget, also every twelfth of it)")
    eval_iters: int = _param(20, "batches averaged for each loss estimate")
    # all: every prediction is trained, as in days 4 and 5. answers: supervised fine-tuning's convention
    # (nanochat, minimind); advanced project 2 measures it
    loss_on: str = _param("all", "all: train every prediction; answers: in question-and-answer text (问：... 答：...), "
                                 "train no prediction inside a question (plain text still trains every one; "
                                 "evaluations score what is trained)")
    # Muon for the hidden weight matrices: the largest single gain in the speedrun
    optimizer: str = _param("muon", "muon: Muon for the blocks' weight matrices and AdamW for the rest; "
                                    "adamw: AdamW for every parameter")
    # Muon's steps tolerate twice AdamW's 4e-3; 1.2e-2 and 1.6e-2 were worse
    learning_rate: float = _param(8e-3, "peak learning rate")
    adamw_lr_ratio: float = _param(1.0, "with --optimizer muon: AdamW's learning rate (embeddings, biases, "
                                        "LayerNorms) as a multiple of learning_rate")
    # a flat peak, then a linear cooldown (cooldown_fraction): beat warmup + cosine in 75 s runs, 1.73 against 1.84
    schedule: str = _param("wsd", "learning-rate schedule after warmup: wsd (flat, then a linear cooldown) or cosine")
    warmup_fraction: float = _param(0.03, "fraction of the run (by steps or by the clock) spent warming the "
                                          "learning rate up")
    # 80% of the run cooling down beat 50% at 75 s and at 10 minutes (100%, a plain linear decay, was worse at 75 s)
    cooldown_fraction: float = _param(0.8, "wsd only: the last fraction of the run, spent lowering the learning rate")
    min_lr_ratio: float = _param(0.05, "the schedule ends at learning_rate * min_lr_ratio")
    # the mean of the weights over the last 5%: 1.4727 -> 1.4583 at 10 minutes (one run, both scored); 75 s: +0.003
    average_fraction: float = _param(0.05, "average the weights over this last fraction of the run; evaluations "
                                          "and ckpt.pt use the average (0 = off)")
    # strong: 10 minutes are ~25 passes over the text, and without it the model memorises (0.1 and 1.0: worse)
    weight_decay: float = _param(0.6, "weight decay of the weight matrices and embeddings")
    grad_clip: float = _param(1.0, "clip the gradient norm to this (0 = off)")
    grad_accum: int = _param(1, "micro-batches summed into each optimizer step (a bigger batch in less memory)")
    time_budget: float = _param(580.0, "stop after this many seconds of training (0 = no limit): with start-up and "
                                       "the final sample, `python3 train.py` takes 10 minutes")
    # bf16 matmuls run 4.4x faster than fp32 on CPUs with AVX512-BF16 or AMX: 1.9x the steps at these defaults
    precision: str = _param("auto", "bf16 or fp32 matrix multiplies: auto = bf16 on CUDA GPUs and on CPUs that "
                                    "multiply bf16 in hardware (AVX512-BF16, AMX), fp32 elsewhere")
    compile: str = _param("auto", "torch.compile the model: auto (on for CUDA only), true or false")
    sample_tokens: int = _param(300, "tokens (characters, for --tokenizer char) to sample and print when training ends "
                                       "(0 = none)")


# Named model sizes from the tutorial's day 5, experiment 1. A preset sets only the fields it
# names; everything else keeps the value above (or the one given on the command line).
PRESETS = {
    "tiny": dict(n_embd=64, num_heads=2, n_layer=2),
    "small": dict(n_embd=128, num_heads=4, n_layer=4),
    # Between small and default (3.2M parameters): day 5's quick experiment 1 compares tiny, small and medium,
    # because default takes minutes for a few hundred steps on a CPU without bf16.
    "medium": dict(n_embd=256, num_heads=8, n_layer=4),
    # The previous release's recipe for runs of a minute or two on a CPU (AdamW): 2 layers, short
    # context. Kept as a preset for comparison; docs/speedrun.md measures it against the defaults.
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

def choose_preset(requested, device):
    """The preset a run uses: the one asked for ("none": config.py's values), else CUDA_PRESET on
    CUDA, else None (config.py's values as they stand, so an edit above always takes effect on a CPU
    or a Mac; on CUDA, train.py says at the start which preset replaced them)."""
    if requested == "none":
        return None
    if requested:
        return requested
    if str(device).startswith("cuda"):
        return CUDA_PRESET
    return None


def preset_sizes(name):
    """"n_embd 384, num_heads 6, ...": the model-size fields a preset sets."""
    return ", ".join(f"{k} {v}" for k, v in PRESETS[name].items() if k in MODEL_ARGS and k != "dropout")


def apply_overrides(cfg, overrides):
    """Return a copy of cfg with the given {field: value} changed (unknown names raise ValueError)."""
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(_("unknown config field(s): {names}").format(names=", ".join(sorted(unknown))))
    return dataclasses.replace(cfg, **overrides)


def add_config_args(parser):
    """Add one --<field> flag per Config field. Flags default to None, meaning "not given"."""
    group = parser.add_argument_group("hyperparameters (defaults in config.py)")
    for f in dataclasses.fields(Config):
        group.add_argument(
            f"--{f.name}", type=parse_bool if f.type is bool else f.type, default=None,
            metavar=f.type.__name__.upper(), help=f"{f.metadata['help']} (default {f.default})",
        )


def parse_bool(text):
    """--qk_norm true / false (bool("false") would be True)."""
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(_("expected true or false, got {value!r}").format(value=text))
    return value


def config_from_args(args, preset=None):
    """Config defaults, then the preset's values, then every flag given on the command line."""
    cfg = Config()
    if preset is not None:
        cfg = apply_overrides(cfg, PRESETS[preset])
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    return apply_overrides(cfg, given)


def validate(cfg):
    """Raise ValueError with a clear message for settings that cannot work."""
    check_model_args(**{name: getattr(cfg, name) for name in MODEL_ARGS})  # the model's own checks
    checks = [
        (cfg.tokenizer in ("char", "bpe"), _("tokenizer must be char or bpe, got {value!r}").format(
            value=cfg.tokenizer)),
        (256 <= cfg.vocab_size <= 1 << 16, _("vocab_size must be from 256 (the bytes) to 65536, got {value}").format(
            value=cfg.vocab_size)),
        (cfg.batch_size >= 1, _("batch_size must be >= 1")),
        (cfg.max_iters >= 0, _("max_iters must be >= 0")),
        (cfg.eval_interval >= 1, _("eval_interval must be >= 1")),
        (cfg.eval_iters >= 1, _("eval_iters must be >= 1")),
        (cfg.loss_on in ("all", "answers"), _("loss_on must be all or answers, got {value!r}").format(
            value=cfg.loss_on)),
        (cfg.learning_rate > 0, _("learning_rate must be > 0, got {value}").format(value=cfg.learning_rate)),
        (cfg.adamw_lr_ratio > 0, _("adamw_lr_ratio must be > 0, got {value}").format(value=cfg.adamw_lr_ratio)),
        (0.0 <= cfg.warmup_fraction < 1.0, _("warmup_fraction must be in [0, 1), got {value}").format(
            value=cfg.warmup_fraction)),
        (cfg.optimizer in ("muon", "adamw"), _("optimizer must be muon or adamw, got {value!r}").format(value=cfg.optimizer)),
        (cfg.schedule in ("wsd", "cosine"), _("schedule must be wsd or cosine, got {value!r}").format(value=cfg.schedule)),
        (0.0 < cfg.cooldown_fraction <= 1.0, _("cooldown_fraction must be in (0, 1], got {value}").format(
            value=cfg.cooldown_fraction)),
        (0.0 <= cfg.min_lr_ratio <= 1.0, _("min_lr_ratio must be in [0, 1], got {value}").format(value=cfg.min_lr_ratio)),
        (0.0 <= cfg.average_fraction <= 1.0, _("average_fraction must be in [0, 1], got {value}").format(
            value=cfg.average_fraction)),
        (cfg.weight_decay >= 0, _("weight_decay must be >= 0")),
        (cfg.grad_clip >= 0, _("grad_clip must be >= 0")),
        (cfg.grad_accum >= 1, _("grad_accum must be >= 1")),
        (cfg.time_budget >= 0, _("time_budget must be >= 0 seconds")),
        (cfg.precision in ("auto", "bf16", "fp32"), _("precision must be auto, bf16 or fp32, got {value!r}").format(
            value=cfg.precision)),
        (cfg.compile in ("auto", "true", "false"), _("compile must be auto, true or false, got {value!r}").format(value=cfg.compile)),
        (cfg.sample_tokens >= 0, _("sample_tokens must be >= 0")),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
