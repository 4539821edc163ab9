"""What a training run needs besides learning: several processes, Ctrl-C, and its output folder.

train.py uses these so that its own loop can read like day 4's:
  setup_distributed          join torchrun's processes (DDP), on the device --device names
  agree_on_clock_and_ctrl_c  rank 0's clock and Ctrl-C decide for every process
  check_in_sync              the processes really ended with the same weights
  StopRequest                the first Ctrl-C stops between two steps, so saved state is whole
  OutDirLock                 one run at a time writes to an output folder
  progress_bar, show_progress  the tqdm bar: steps, or seconds under a time budget
"""

import math
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from cli import UserError
from device import get_device
from i18n import _


def setup_distributed(device_flag):
    """Under torchrun (RANK is set), join the process group; returns (rank, world_size, device).

    --device is checked as in one process: asking for a device that isn't there is a clear error.
    With CUDA (cuda or cuda:N), each process drives the GPU torchrun gives it, cuda:LOCAL_RANK.
    """
    if "RANK" not in os.environ:
        return 0, 1, get_device(device_flag)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = get_device(device_flag)
    if device == "mps":
        if device_flag != "auto":
            raise UserError(_("torchrun can't share Apple's MPS between processes; use --device cpu"))
        device = "cpu"
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")  # gloo: CPU processes
    return rank, world_size, device


class OutDirLock:
    """Only one training run writes to an out_dir at a time: a second one is refused, clearly.

    The lock is the operating system's (flock, or msvcrt on Windows) on out_dir/.lock, so it goes
    away with its process however that ends: a killed run never leaves a lock that blocks the next.
    Creating out_dir here also checks, before any training, that it is a folder we can write to.
    """

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)
        self.file = None

    def __enter__(self):
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise UserError(_("--out_dir {path} is a file, not a folder; give a folder name (it is created if "
                              "missing)").format(path=self.out_dir))
        self.created = not self.out_dir.exists()  # a folder this run makes, it removes again if it writes nothing
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.file = open(self.out_dir / ".lock", "a+")
        except OSError as e:
            raise UserError(_("can't write to --out_dir {path} ({reason}); choose a folder you can write "
                              "to").format(path=self.out_dir, reason=e.strerror)) from None
        try:
            lock_file(self.file)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip()
            self.file.close()
            raise UserError(_("another training run (process {pid}) is writing to {path}; wait for it to finish, "
                              "or use another --out_dir").format(pid=holder or "?", path=self.out_dir)) from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()
        return self

    def __exit__(self, *exc):
        if self.created and [p.name for p in self.out_dir.iterdir()] == [".lock"]:
            # The run failed before it saved anything (a bad flag, a text too short): leave no empty folder behind.
            # The lock is still held while its file goes, so no other run can have taken it (Windows can't
            # delete an open file, so there it is released first).
            if os.name == "nt":
                self.file.close()
            (self.out_dir / ".lock").unlink()
            self.out_dir.rmdir()
        self.file.close()  # closing the file releases the lock


def lock_file(file):
    """Take an exclusive lock on an open file without waiting; OSError if another process holds it."""
    file.seek(0)  # msvcrt locks bytes from the current position
    if os.name == "nt":
        import msvcrt

        msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def agree_on_clock_and_ctrl_c(start, ctrl_c, world_size, device):
    """(seconds trained, Ctrl-C pressed), as rank 0 sees them, the same on every process.

    Each process has its own clock and may see Ctrl-C at a different moment. The time budget and the
    learning rate follow the clock, so if each process read its own, they would stop at different
    steps or update with slightly different learning rates and end with different weights.
    """
    seconds, stop = time.perf_counter() - start, ctrl_c.requested
    if world_size > 1:
        shared = torch.tensor([seconds, float(stop)], dtype=torch.float64, device=device)
        dist.broadcast(shared, src=0)
        seconds, stop = shared[0].item(), bool(shared[1].item())
    return seconds, stop


def check_in_sync(model, world_size, master):
    """DDP keeps every process's weights identical; check it at the end instead of trusting it."""
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    everyone = [torch.zeros_like(flat) for _ in range(world_size)]
    dist.all_gather(everyone, flat)
    if not all(torch.equal(everyone[0], other) for other in everyone[1:]):
        raise RuntimeError("DDP processes ended with different weights; this is a bug, please report it")
    if master:
        print(_("all {n} processes hold identical weights").format(n=world_size))


class StopRequest:
    """The first Ctrl-C asks the loop to stop at the end of the current step, so the state saved to
    last.pt is always whole; a second Ctrl-C stops at once, as usual."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: keep Python's usual Ctrl-C
            self.previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


# ----------------------------------------------------------------------------------------------
# Sharing the CPU with other programs
#
# PyTorch splits each matrix multiply over one thread per core, and the threads wait for each other at the
# end of it. When other programs hold the cores, one thread is often descheduled and the rest wait for it:
# on a 2-core machine running a second training, 30 s made 46 steps with two threads and 131 with one
# (docs/speed.md, "A busy CPU"). So a run that finds the cores busy trains with fewer threads, and a run that
# was slowed down says so at the end.


class CpuMeter:
    """How many cores other programs kept busy, on average, since the last reading (Linux: /proc/stat minus
    this process's own time; None elsewhere)."""

    def __init__(self):
        self.last = self.read()

    @staticmethod
    def read():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
            with open("/proc/self/stat") as f:
                own = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except (OSError, ValueError, IndexError):
            return None
        busy = sum(fields[:3]) + sum(fields[5:8])  # user nice system, irq softirq steal (not idle, iowait)
        total = busy + fields[3] + fields[4]
        return busy, total, int(own[11]) + int(own[12])  # utime + stime of every thread of this process

    def others(self):
        """Cores busy with other programs since the last call (e.g. 1.8 of 2), or None when unknown."""
        now = self.read()
        last, self.last = self.last, now
        if now is None or last is None or now[1] <= last[1]:
            return None
        cores = os.cpu_count() or 1
        return max(0.0, (now[0] - last[0]) - (now[2] - last[2])) / (now[1] - last[1]) * cores


def threads_for(cores, others_busy, current):
    """Compute threads for a CPU run: one per core that other programs leave free (at least one)."""
    if others_busy is None:
        return current
    return max(1, min(current, cores - round(others_busy)))


def choose_threads(device, world_size, sample_seconds=0.2):
    """On a CPU, in one process, with OMP_NUM_THREADS not set: fewer threads when the cores are busy.
    Returns (threads before, threads now, cores others kept busy)."""
    before = torch.get_num_threads()
    if device != "cpu" or world_size > 1 or before == 1 or "OMP_NUM_THREADS" in os.environ:
        return before, before, None
    meter = CpuMeter()
    time.sleep(sample_seconds)
    busy = meter.others()
    threads = threads_for(os.cpu_count() or 1, busy, before)
    if threads != before:
        torch.set_num_threads(threads)
    return before, threads, busy


def slow_run_note(steps, seconds, best_rate, others_busy, threads):
    """One line when a time-budgeted run shared the CPU with other programs for much of it, or made far fewer
    steps than its own best pace; else None. best_rate: its fastest stretch, in steps per second."""
    crowded = others_busy is not None and others_busy >= 0.5
    share = steps / (best_rate * seconds) if best_rate and seconds else 1.0
    if crowded:
        cause = _("other programs kept {busy:.1f} of this computer's {cores} cores busy during this run, so it made "
                  "fewer steps than it could have ({steps:,} in {seconds:.0f} s)").format(
            busy=others_busy, cores=os.cpu_count(), steps=steps, seconds=seconds)
    elif share < 0.5:
        cause = _("this run made {steps:,} steps in {seconds:.0f} s, {share:.0%} of what its own fastest stretch "
                  "would have made: something else took the CPU for part of it").format(
            steps=steps, seconds=seconds, share=share)
    else:
        return None
    fix = _("close other programs (or stop a second training) and run again") if threads == 1 else _(
        "close other programs (or stop a second training) and run again, or try OMP_NUM_THREADS=1")
    return _("note: {cause}. To get this tutorial's results, {fix}; see TUTORIAL.md, 常见错误").format(
        cause=cause, fix=fix)


class Pace:
    """A run's fastest stretch of WINDOW steps, in steps per second (the first stretch, which warms up, aside)."""
    WINDOW = 50

    def __init__(self, step, seconds):
        self.first_step, self.first_seconds = step, seconds  # where this session of the run began
        self.mark, self.windows, self.best = (step, time.perf_counter()), 0, 0.0

    def update(self, step):
        if step - self.mark[0] >= self.WINDOW:
            now = time.perf_counter()
            if self.windows > 0:
                self.best = max(self.best, (step - self.mark[0]) / max(now - self.mark[1], 1e-9))
            self.mark, self.windows = (step, now), self.windows + 1


def progress_bar(cfg, state, master):
    """A tqdm bar that counts steps, or whole seconds under a time budget (rank 0 only)."""
    if cfg.time_budget:
        return tqdm(total=math.ceil(cfg.time_budget), initial=int(state.seconds), desc=_("training"), unit="s",
                    dynamic_ncols=True, disable=not master,
                    bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt}s [{elapsed}<{remaining}{postfix}]")
    return tqdm(total=cfg.max_iters, initial=state.step, desc=_("training"), unit=_("step"), dynamic_ncols=True,
                disable=not master)


def show_progress(bar, step, loss, lr, time_budget, start):
    """After a step: the loss and lr every ten steps, and the bar moved on (by a step, or to the clock)."""
    if step % 10 == 0:  # reading the loss waits for the GPU, so not every step
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(step)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.1e}")
    if time_budget:
        bar.update(min(int(time.perf_counter() - start), bar.total) - bar.n)
    else:
        bar.update(1)
