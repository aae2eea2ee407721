"""How much memory a size declared by an input (a file, an option) may make yoco allocate.

Sizes that come from outside (a tensor shape in a pickle, an epoch number in a record, --epochs)
are checked *before* anything is allocated: a typo or a hostile file gets a one-line error instead
of a MemoryError or an allocator crash halfway through. The limit is half the machine's physical
memory unless the environment variable YOCO_MAX_MEMORY says otherwise (bytes, or with a K/M/G/T
suffix, powers of 1024: `YOCO_MAX_MEMORY=48G`).
"""
from __future__ import annotations

import os
import re

from .errors import UsageError

ENV = "YOCO_MAX_MEMORY"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return 1 << 40


def parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise UsageError(f"{ENV}={text!r} is not a size", f"use bytes or a K/M/G/T suffix, e.g. {ENV}=16G")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def explicit_limit() -> int | None:
    """The limit the user set with YOCO_MAX_MEMORY, or None."""
    text = os.environ.get(ENV, "").strip()
    return parse_bytes(text) if text else None


def memory_limit() -> int:
    limit = explicit_limit()
    return limit if limit is not None else physical_memory() // 2


def human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"


def check_allocation(nbytes: int, what: str, fix: str = "") -> None:
    """Refuse (exit 2) to allocate `nbytes` for `what` beyond the limit."""
    limit = memory_limit()
    if nbytes > limit:
        source = f"{ENV}" if explicit_limit() is not None else f"half of this machine's {human(physical_memory())}"
        raise_it = f"raise the limit ({source}) if the machine can hold it, e.g. {ENV}={-(-nbytes // (1 << 30))}G"
        raise UsageError(f"{what} would need {human(nbytes)} of memory, above the limit of {human(limit)}",
                         f"{fix}, or {raise_it}" if fix else raise_it)
