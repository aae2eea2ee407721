"""Choosing the device, and the process-wide CPU levers the engine pulls once.

`resolve_device("auto" | "cpu" | "cuda" | "cuda:N")`: "auto" is the first GPU when one is
usable, else the CPU. Asking for CUDA where there is none is a usage error (exit 2), not a
silent fallback: a user who typed `--device cuda` wants to know.

`tune_malloc()`: glibc serves every allocation above its mmap threshold (at most 32 MiB)
with a fresh mmap and returns it to the kernel on free, so each 64x128x32x32 activation
(33.5 MB) costs page faults and zeroing on every step. Turning mmap off for the heap and
raising the trim threshold keeps those pages in the process (measured in
benchmarks/train_throughput.py). It is a no-op off glibc.
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


def resolve_device(spec: str = "auto") -> "torch.device":
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


def describe(device: "torch.device") -> str:
    """A short human label recorded in provenance (e.g. 'cpu (2 threads)', 'cuda:0 NVIDIA H100')."""
    import torch

    if device.type == "cuda":
        return f"cuda:{device.index or 0} {torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads)"


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
