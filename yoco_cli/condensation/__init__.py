"""Condensation methods: IDC (gradient matching), DM (distribution matching) and real-image baselines.

Each method module exposes NAME, ITERATIVE, `preset(dataset) -> dict` (its default
parameters for a dataset; every one can be overridden) and `run(job) -> Outcome`.
Modules are imported on demand so listing the methods costs nothing.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from types import ModuleType

from ..errors import UsageError


@dataclass(frozen=True)
class Method:
    module: str   # the module in this package
    summary: str  # a few words for `--method`'s help


# The one list of methods: `--method` choices, help and completion (condense, pipeline) read it.
METHODS: dict[str, Method] = {
    "idc": Method("idc", "gradient matching"),        # Kim et al. ICML'22, multi-formation (docs/method.md §6.1)
    "dm": Method("dm", "distribution matching"),      # Zhao & Bilen WACV'23, multi-formation (docs/method.md §6.2)
    "random": Method("random_subset", "a seeded real subset"),  # same layout: the baseline
    "herding": Method("herding", "a herded real subset"),       # deterministic, pixel-space herding
}


def help_text() -> str:
    """`--method`'s help: "idc (gradient matching) | dm (distribution matching) | ..."."""
    return " | ".join(f"{name} ({m.summary})" for name, m in METHODS.items())


def get(name: str) -> ModuleType:
    if name not in METHODS:
        import difflib

        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f"did you mean {close[0]}?" if close else f"use one of {', '.join(METHODS)}"
        raise UsageError(f"unknown condensation method {name!r}", hint)
    return importlib.import_module(f"{__name__}.{METHODS[name].module}")


def resolve_params(name: str, dataset: str, overrides: dict | None, base: dict | None = None) -> dict:
    """The method's preset for the dataset (or `base`, a preset fitted to it) with the user's
    overrides applied (unknown keys refused)."""
    base = base if base is not None else get(name).preset(dataset)
    out = dict(base)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in base:
            known = ", ".join(sorted(base)) or "none"
            raise UsageError(f"--method {name} has no setting {key!r}", f"its settings: {known}")
        out[key] = _coerce(key, value, base[key])
        if isinstance(out[key], float) and not math.isfinite(out[key]):
            raise UsageError(f"setting {key} must be a finite number, got {out[key]}")
    return out


def _coerce(key: str, value, default):
    """Overrides arrive as strings from `--set KEY=VALUE`; give them the preset's type."""
    if isinstance(value, str) and not isinstance(default, str):
        try:
            if isinstance(default, bool):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            if isinstance(default, int):
                return int(value)
            if isinstance(default, float):
                return float(value)
        except ValueError:
            kind = {bool: "true or false", int: "an integer", float: "a number"}[type(default)]
            raise UsageError(f"setting {key} needs {kind}, got {value!r}") from None
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
