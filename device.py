"""Where a run computes, and in what: the device, the precision, and whether to compile.

The question "does this CPU multiply bfloat16 in hardware?" is answered here once
(cpu_has_fast_bf16); the precision a run uses, the attention kernel and Muon's iteration all ask it.
"""

import functools
import os
import platform
from contextlib import nullcontext

import torch

from cli import UserError
from i18n import _


def get_device(name="auto"):
    """'auto' picks cuda, then Apple's mps, then cpu; 'cpu', 'cuda', 'cuda:1' or 'mps' force one."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if mps_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(_("--device {name} was asked for, but PyTorch sees no CUDA GPU; use --device cpu or "
                          "auto").format(name=name))
    if name == "mps" and not mps_available():
        raise UserError(_("--device mps was asked for, but Apple's MPS is not available here; use --device cpu or "
                          "auto"))
    if name != "cpu" and not name.startswith(("cuda", "mps")):
        raise UserError(_("unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps").format(name=name))
    return name


def mps_available():
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's feature flags as Linux lists them (an empty set elsewhere)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:  # not Linux: no cheap, reliable way to tell
        pass
    return set()


def cpu_has_fast_bf16(cpuinfo=None):
    """True if this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX, as Linux reports them).

    There bf16 matmuls run several times faster than fp32 (4.4x on the 2-core AMD EPYC of
    docs/speedrun.md); elsewhere PyTorch emulates them and fp32 is faster, so "auto" keeps fp32.
    cpuinfo: a file to read instead of this machine's /proc/cpuinfo (for tests). This machine's
    answer is read once per process: the attention kernel asks on every call.
    """
    if cpuinfo is None:
        return this_cpu_has_fast_bf16()
    flags = cpu_flags(cpuinfo)
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.lru_cache(maxsize=None)
def this_cpu_has_fast_bf16():
    return cpu_has_fast_bf16("/proc/cpuinfo")


def cpu_name():
    """The processor's marketing name where the OS tells it (Linux), else the architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def resolve_precision(device, precision="auto"):
    """ "bf16" or "fp32": what a run computes in. auto = bf16 on CUDA GPUs that support it and on CPUs
    with hardware bf16, fp32 elsewhere (Apple MPS always runs fp32)."""
    device = str(device)
    if precision == "auto":
        if device.startswith("cuda"):
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if device == "cpu" and cpu_has_fast_bf16() else "fp32"
    return "fp32" if device.startswith("mps") else precision


def autocast_context(device, precision="auto"):
    """The context training runs its forward pass in: bfloat16 autocast or plain fp32 (see resolve_precision).

    Under bf16 autocast the matrix multiplies run in bfloat16 (fp32's range, fewer digits) while the
    weights, the optimizer and the loss stay fp32.
    """
    if resolve_precision(device, precision) == "bf16":
        return torch.autocast("cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)
    return nullcontext()


def should_compile(compile, device):
    """Whether to torch.compile the model, for config.py's `compile` field (auto, true or false)."""
    if compile == "auto":
        # On CPU and MPS, measured here, compiling costs more start-up time than it saves.
        return device.startswith("cuda") and os.name != "nt" and hasattr(torch, "compile")
    if compile == "true" and (os.name == "nt" or device == "mps"):
        print(_("note: torch.compile is not supported on Windows or MPS; running without it"))
        return False
    return compile == "true"

