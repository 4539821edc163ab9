"""How the weights move: the optimizers, one training step, the learning-rate schedule and the
weight average.

The speedrun (docs/speedrun.md) lives here, so that train.py's loop reads like day 4's:
  make_optimizer   Muon for the blocks' weight matrices and AdamW for the rest (or AdamW alone)
  Muon             torch.optim.Muon, its Newton-Schulz iteration in the dtype this machine is fast in
  Optimizers       the two acting as one, with one learning rate to set
  train_step       forward, backward, clip, step
  learning_rate    warmup, then a flat peak and a cooldown (wsd) or a cosine
  WeightAverage    the mean of the weights over the run's last few percent
"""

import math
from contextlib import nullcontext

import torch
from torch.optim.swa_utils import AveragedModel

from device import resolve_precision
from i18n import _


# ----------------------------------------------------------------------------------------------
# The optimizers


def make_optimizer(model, cfg, device, blocks=None):
    """The optimizer(s) for a model. Weight decay applies to weight matrices and embeddings only.

    optimizer "adamw": AdamW for every parameter. "muon": Muon for the transformer blocks' weight
    matrices (attention and MLP), AdamW for the rest (embeddings, head, biases, LayerNorms). Muon
    replaces each update matrix by the nearest orthogonal one, so every direction of the matrix
    learns at the same speed instead of a few dominating; at equal time it learns fastest here.
    blocks: the transformer blocks (default model.blocks; bench.py passes nanoGPT's).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    use_muon = cfg.optimizer == "muon"
    if use_muon and not hasattr(torch.optim, "Muon"):
        print(_("note: torch {version} has no torch.optim.Muon (it arrived in torch 2.9); training with AdamW for "
                "every parameter instead").format(version=torch.__version__))
        use_muon = False
    blocks = model.blocks if blocks is None else blocks
    hidden = [p for block in blocks for p in block.parameters() if p.dim() == 2] if use_muon else []
    taken = {id(p) for p in hidden}
    rest = [p for p in params if id(p) not in taken]
    def groups():  # new dicts for each try: a failed AdamW(...) has already written its defaults into them
        return [
            {"params": [p for p in rest if p.dim() >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
        ]

    try:
        # The fused kernel updates every parameter in one pass: faster on CUDA and CPU.
        adamw = torch.optim.AdamW(groups(), lr=cfg.learning_rate, betas=(0.9, 0.99), fused=True)
    except RuntimeError:  # this torch has no fused AdamW for this device (CPU needs torch >= 2.4)
        adamw = torch.optim.AdamW(groups(), lr=cfg.learning_rate, betas=(0.9, 0.99))
    if not hidden:
        return Optimizers(adamw)
    # "match_rms_adamw" scales Muon's steps to the size AdamW's would have, so one learning rate
    # and weight decay serve both optimizers.
    muon = Muon(hidden, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, adjust_lr_fn="match_rms_adamw",
                ns_dtype=torch.bfloat16 if resolve_precision(device) == "bf16" else torch.float32)
    return Optimizers(muon, adamw, ratios=[1.0, cfg.adamw_lr_ratio])  # AdamW's rate relative to Muon's


class Muon(getattr(torch.optim, "Muon", torch.optim.Optimizer)):  # torch < 2.9: no Muon, never built
    """torch.optim.Muon, with its Newton-Schulz iteration in a dtype of our choosing (ns_dtype).

    PyTorch's always iterates in bf16, which is quick on GPUs and on CPUs that multiply bf16 in hardware.
    Most laptop CPUs don't: there PyTorch emulates bf16, and on an AVX2-only 2-core EPYC the optimizer
    took 580 ms of a 790 ms default step. make_optimizer picks bf16 where the hardware has it, fp32
    elsewhere. Same arguments, same state (a momentum buffer per matrix) and the same update, so
    checkpoints move freely between the two classes.
    """

    def __init__(self, params, ns_dtype=torch.bfloat16, **kwargs):
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            updates = []
            for p in params:
                buffer = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
                buffer.lerp_(p.grad, 1 - group["momentum"])  # momentum: a running mean of the gradients
                updates.append(p.grad.lerp(buffer, group["momentum"]) if group["nesterov"] else buffer)
            shapes = {}
            for i, update in enumerate(updates):
                shapes.setdefault(update.shape, []).append(i)
            for indices in shapes.values():  # matrices of one shape are orthogonalised together, in one batch
                ortho = orthogonalize(torch.stack([updates[i] for i in indices]), group["ns_coefficients"],
                                      group["ns_steps"], group["eps"], self.ns_dtype)
                for i, update in zip(indices, ortho):
                    params[i].mul_(1 - group["lr"] * group["weight_decay"])  # decoupled weight decay
                    params[i].add_(update, alpha=-group["lr"] * muon_lr_scale(group["adjust_lr_fn"], params[i].shape))


def orthogonalize(matrices, coefficients, steps, eps, dtype):
    """Newton-Schulz: move every singular value of each matrix towards 1, keeping its singular vectors.

    matrices: (N, rows, cols), N matrices of one shape. Returns the same shape, in `dtype`. Each pass maps
    X to a*X + (b*XX^T + c*(XX^T)^2) X, which applies one odd polynomial to every singular value and leaves the
    singular vectors alone. The coefficients are tuned so that five passes bring every singular value that is
    not tiny close to 1 (0.68 to 1.13 for random 128 x 384 matrices): not exact, but only 15 matmuls.
    """
    a, b, c = coefficients
    x = matrices.to(dtype)
    wide = x.size(-2) <= x.size(-1)
    if not wide:
        x = x.mT  # work on the side where X @ X^T is the smaller matrix
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # singular values <= the Frobenius norm: now <= 1
    for _pass in range(steps):
        gram = x @ x.mT  # (N, r, r), r = the smaller side
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x if wide else x.mT


def muon_lr_scale(adjust_lr_fn, shape):
    """torch.optim.Muon's learning-rate scale for a matrix of this shape (its adjust_lr_fn argument)."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        # An orthogonal update's RMS is 1/sqrt(the longer side); this brings it to the ~0.2 of AdamW's updates.
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))  # "original" (Keller Jordan's): taller matrices take larger steps


class Optimizers:
    """Several optimizers that act as one: step, zero_grad, set_lr, param_groups and (load_)state_dict.

    Each optimizer comes with its learning-rate ratio: set_lr(lr) gives Muon lr and AdamW lr * its ratio
    (config.py's adamw_lr_ratio), so the training loop sets one learning rate. The ratios live here,
    not in the param groups, so loading a saved state can't change them.
    """

    def __init__(self, *optimizers, ratios=None):
        self.optimizers = optimizers
        self.ratios = ratios or [1.0] * len(optimizers)

    @property
    def param_groups(self):
        return [group for opt in self.optimizers for group in opt.param_groups]

    def set_lr(self, lr):
        for opt, ratio in zip(self.optimizers, self.ratios):
            for group in opt.param_groups:
                group["lr"] = lr * ratio

    def step(self):
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none=True):
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        states = [opt.state_dict() for opt in self.optimizers]
        return states[0] if len(states) == 1 else {"optimizers": states}  # one optimizer: its own format

    def load_state_dict(self, state):
        states = state["optimizers"] if "optimizers" in state else [state]
        if len(states) != len(self.optimizers):
            raise ValueError(_("it was saved by a different optimizer (see --optimizer)"))
        for opt, saved in zip(self.optimizers, states):
            opt.load_state_dict(saved)


class WeightAverage:
    """The mean of the weights over a run's last `fraction` (torch.optim.swa_utils.AveragedModel).

    Late in the run the learning rate is low, and each step still nudges the weights a little this way and
    that, after the last few batches it saw. The mean of those weights sits between the nudges: it fits
    the text it has not seen better than any single one of them (docs/speedrun.md, row 13).
    """

    def __init__(self, model, fraction):
        self.fraction = fraction
        self.averaged = AveragedModel(model)  # a second copy of the weights

    def update(self, model, done):
        """After a step, with `done` of the run behind it (0..1): add model's weights once in the last fraction."""
        if done >= 1.0 - self.fraction:
            self.averaged.update_parameters(model)  # the first call copies, later ones keep a running mean

    def model_or(self, model):
        """The averaged model once averaging has begun, else `model` itself."""
        return self.averaged.module if self.averaged.n_averaged > 0 else model

    def state_dict(self):
        return self.averaged.state_dict()

    def load_state_dict(self, state):
        self.averaged.load_state_dict(state)


# ----------------------------------------------------------------------------------------------
# One step


def train_step(model, optimizer, cfg, autocast, world_size, next_batch):
    """One optimizer step: day 4's four lines, with the gradient clipped. Over cfg.grad_accum micro-batches
    their gradients add up (so the step sees one big batch), and the old ones are cleared before the first.

    next_batch() returns (xb, yb). Returns the last micro-batch's loss (a tensor, to avoid a GPU sync).
    """
    for micro in range(cfg.grad_accum):
        xb, yb = next_batch()
        # DDP averages gradients across processes on backward; only do it on the last micro-batch.
        sync = nullcontext() if world_size == 1 or micro == cfg.grad_accum - 1 else model.no_sync()
        with sync:
            with autocast:
                _, loss = model(xb, yb)  # 1. forward: how wrong are the predictions?
            if micro == 0:
                optimizer.zero_grad(set_to_none=True)  # 2. clear last step's gradients
            (loss / cfg.grad_accum).backward()  # 3. backward: which way should each weight move? (n means / n)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)  # no step larger than grad_clip
    optimizer.step()  # 4. update the weights a little
    return loss


# ----------------------------------------------------------------------------------------------
# The learning-rate schedule


def learning_rate(cfg, step, seconds):
    """The schedule (lr_at) at the point of the run that `step` steps and `seconds` reach."""
    done = progress(step, seconds, cfg.max_iters, cfg.time_budget)
    return lr_at(done, cfg.learning_rate, cfg.warmup_fraction, cfg.min_lr_ratio, cfg.schedule, cfg.cooldown_fraction)


def progress(step, seconds, max_iters, time_budget):
    """How much of a run is done, from 0 to 1: by steps or by the clock, whichever is further along.

    time_budget 0 means no clock, so the run (and its schedule) is the same on every machine.
    """
    by_steps = step / max(max_iters, 1)
    by_clock = seconds / time_budget if time_budget else 0.0
    return min(max(by_steps, by_clock), 1.0)


def lr_at(progress, base_lr, warmup, min_lr_ratio=0.1, schedule="cosine", cooldown=0.3):
    """Learning rate at a point of the run: a linear warmup, then a decay to base_lr * min_lr_ratio.

    progress: how much of the run is done, 0..1 (see progress()); warmup: the fraction of the run spent
    warming up. Both are measured on the same axis, so the schedule has the same shape whether steps
    or the clock end the run, and on a fast machine or a slow one. Warmup avoids large, badly aimed
    first updates while the optimizer's statistics are still empty; the decay lets the model settle.

    schedule "cosine": decay along half a cosine from the end of warmup to the end of the run.
    schedule "wsd" (warmup-stable-decay): stay at the peak, then decay linearly over the last
    `cooldown` fraction of the run. A long time at the peak learns fastest; the short cooldown at
    the end collects most of the gain that a slow decay would.
    """
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return base_lr * progress / warmup
    if schedule == "wsd":
        start = max(1.0 - cooldown, warmup)  # when the cooldown begins
        decay = (progress - start) / (1.0 - start) if progress > start else 0.0  # 0 -> 1 during the cooldown
        return base_lr * (1.0 - (1.0 - min_lr_ratio) * decay)
    decay = (progress - warmup) / (1.0 - warmup) if warmup < 1.0 else 1.0  # 0 -> 1 after warmup
    cosine = 0.5 * (1.0 + math.cos(math.pi * decay))  # 1 -> 0
    return base_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)
