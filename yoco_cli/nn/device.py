"""Choosing the device, and the process-wide CPU levers the engine pulls once.

`resolve_device("auto" | "cpu" | "cuda" | "cuda:N")`: "auto" is the first GPU when one is
usable, else the CPU. Asking for CUDA where there is none is a usage error (exit 2), not a
silent fallback: a user who typed `--device cuda` wants to know.

`tune_malloc()`: glibc serves every allocation above its mmap threshold (at most 32 MiB)
with a fresh mmap and returns it to the kernel on free, so each 64x128x32x32 activation
(33.5 MB) costs page faults and zeroing on every step. Turning mmap off for the heap and
raising the trim threshold keeps those pages in the process (measured in
benchmarks/train_throughput.py). It is a no-op off glibc.

Threads (`configure_threads`, `use_threads`): torch's intra-op pool has one thread per core
and, under OpenMP's default wait policy, spins at every barrier. On tiny work (8x8 digits,
batches of 64) a second thread never pays, and on a busy machine the spinning threads fight
the other processes for the cores: `yoco condense digits --method dm --iterations 5` took
57 s with two busy loops on the 2 cores against 14 s on one thread (benchmarks/threads.py).
So the CLI picks a count per workload: one thread below MULTI_THREAD_MACS of work per
training step, else the cores that are free when the stage starts; `--threads N` (or
YOCO_THREADS, or OMP_NUM_THREADS) pins it. The CLI also sets OMP_WAIT_POLICY=PASSIVE before
torch loads, so idle workers sleep instead of spinning. Library callers get none of this
unless they call `configure_threads` (process-wide settings are the caller's choice).

Determinism: the same seed gives the same bytes on the same device with the same thread
count; a different count changes the rounding of parallel reductions (measured: a few SGD
steps of ConvNet differ in the last bits). `auto` depends on the work and on the free cores,
so pin the count when you compare bytes across machines or loads.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    import torch

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_malloc_tuned: bool | None = None

# One training step's multiply-adds (see `step_macs`) above which a second thread pays on an
# idle machine; below it the per-op fork/join costs more than the split saves (benchmarks/threads.py).
MULTI_THREAD_MACS = 2e9
THREADS_ENV = "YOCO_THREADS"
_policy: ThreadPolicy | None = None


def resolve_device(spec: str = "auto") -> torch.device:
    import torch

    text = (spec or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not m:
        raise UsageError(f"unknown device {spec!r}", "use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {spec} asked for a GPU, but CUDA is not available here",
                         "use --device cpu (or auto)")
    index = int(m.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise UsageError(f"--device {spec}: there are only {count} CUDA device(s)",
                         f"use cuda:0..cuda:{count - 1}")
    return torch.device("cuda", index)


def describe(device: torch.device) -> str:
    """A short human label recorded in provenance (e.g. 'cpu (2 threads)', 'cuda:0 NVIDIA H100')."""
    import torch

    if device.type == "cuda":
        return f"cuda:{device.index or 0} {torch.cuda.get_device_name(device)}"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n != 1 else ''})"


def tune_malloc() -> bool:
    """Keep large activations in the heap (see module doc). Idempotent; YOCO_NO_MALLOPT=1 disables."""
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    _malloc_tuned = False
    if os.environ.get("YOCO_NO_MALLOPT"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (macOS, musl): nothing to do
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1 and ok
    ok = mallopt(_M_TOP_PAD, 64 << 20) == 1 and ok
    _malloc_tuned = bool(ok)
    return _malloc_tuned


def step_macs(channels: int, image_size: int, width: int = 128, depth: int = 3, batch: int = 64) -> float:
    """Multiply-adds of one ConvNet training step (forward + backward ~ 3x the forward's convolutions)."""
    total, size, cin = 0.0, int(image_size), int(channels)
    for _ in range(int(depth)):
        total += size * size * cin * width * 9
        cin, size = width, max(1, size // 2)
    return 3.0 * batch * total


# -- threads ----------------------------------------------------------------------------------------

class ThreadPolicy:
    """`auto` (per workload, see module doc) or a fixed count; `source` says who chose it."""

    def __init__(self, fixed: int | None, source: str):
        self.fixed, self.source = fixed, source
        self.wait_policy_set = False  # whether yoco set OMP_WAIT_POLICY (the user had not)

    def choose(self, macs: float | None, device: torch.device | None = None) -> int:
        if self.fixed is not None:
            return self.fixed
        if device is not None and getattr(device, "type", "cpu") != "cpu":
            return 1  # the GPU does the work; more CPU threads only spin while it runs
        if macs is not None and macs < MULTI_THREAD_MACS:
            return 1
        return free_cores()


def parse_threads(text: str | int | None, where: str = "--threads") -> int | None:
    """'auto' (None) or a positive count; anything else is a usage error naming `where`."""
    if text is None:
        return None
    value = str(text).strip().lower()
    if value in ("", "auto"):
        return None
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"{where} {text!r} is not a thread count", "use auto or a whole number >= 1, e.g. --threads 1")
    return int(value)


def configure_threads(spec: str | int | None = None) -> ThreadPolicy:
    """Adopt a thread policy for this process: spec > YOCO_THREADS > OMP_NUM_THREADS > auto.

    Also asks OpenMP for passive waiting when torch has not loaded yet and the user did not set
    OMP_WAIT_POLICY (it is read once, when torch's OpenMP runtime starts)."""
    global _policy
    import sys

    if spec is not None and str(spec).strip():
        _policy = ThreadPolicy(parse_threads(spec), "--threads")
    elif os.environ.get(THREADS_ENV, "").strip():
        _policy = ThreadPolicy(parse_threads(os.environ[THREADS_ENV], THREADS_ENV), THREADS_ENV)
    elif os.environ.get("OMP_NUM_THREADS", "").strip().isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        _policy = ThreadPolicy(int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS")
    else:
        _policy = ThreadPolicy(None, "auto")
    if "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        _policy.wait_policy_set = True
    return _policy


def thread_policy() -> ThreadPolicy | None:
    """The policy `configure_threads` adopted for this process (None: none, the library default)."""
    return _policy


def use_threads(macs: float | None, device: torch.device | None = None) -> int:
    """Apply the policy to one workload of `macs` multiply-adds per step; returns torch's thread count.

    Without a configured policy this changes nothing (a library caller keeps its own settings)."""
    import torch

    if _policy is not None:
        n = _policy.choose(macs, device)
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    return torch.get_num_threads()


def free_cores() -> int:
    """The cores this process may use minus those other processes keep busy right now (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores - busy_elsewhere())


def busy_elsewhere() -> int:
    """Runnable threads of other processes: the median of a few instant samples of /proc/loadavg's
    running count (minus this thread), else the 1-minute load average (which lags by a minute)."""
    import time

    samples = []
    for i in range(5):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                samples.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            break
        if i < 4:
            time.sleep(0.005)
    if samples:
        return max(0, sorted(samples)[len(samples) // 2])
    try:
        return round(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0


def model_step_macs(spec: dict, batch: int) -> float | None:
    """`step_macs` for a model spec: ConvNets exactly; other models (ResNets, DenseNet, torchvision)
    are at least as heavy as a ConvNet-3 of width 128 on the same images, so they are sized as one."""
    options = spec.get("options", {}) or {}
    try:
        channels, size = int(spec["channels"]), int(spec["image_size"])
    except (KeyError, TypeError, ValueError):
        return None
    if spec.get("name") == "convnet":
        return step_macs(channels, size, int(options.get("width", 128)), int(options.get("depth", 3)), batch)
    return step_macs(channels, size, 128, 3, batch)
