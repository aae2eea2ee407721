"""State and option types shared by every command (no torch imports here)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..store import Store
from . import output


class _State:
    home: Optional[Path] = None
    store: Optional[Store] = None


state = _State()


def get_store() -> Store:
    """The store named by --home, YOCO_HOME or the platform's user data dir (created on demand)."""
    if state.store is None:
        state.store = Store(state.home)
    return state.store.ensure()


def out() -> output.Output:
    return output.get()


def set_json(flag: bool) -> output.Output:
    """Commands take --json too; either place switches the sink to JSON."""
    o = output.get()
    if flag and not o.json_mode:
        o = output.configure(json_mode=True, quiet=o.quiet, debug=o.debug)
    return o


def interactive() -> bool:
    """Prompt only when a person is at the keyboard (stdin and stderr are terminals)."""
    return sys.stdin.isatty() and sys.stderr.isatty() and not os.environ.get("CI")


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice.")]


# -- shell completion helpers (run on every TAB: keep them cheap, no torch) ----------
def complete_refs(incomplete: str) -> list[str]:
    """Stored artifact names, read straight from the refs folder."""
    from ..store import Store

    try:
        names = Store(state.home).refs()
    except OSError:
        return []
    return [n for n in names if n.startswith(incomplete)]


def complete_set_refs(incomplete: str) -> list[str]:
    from ..store import Store

    try:
        names = Store(state.home).refs()
    except OSError:
        return []
    set_stages = {"import", "condense", "prune", "fetch"}
    return [n for n, (stage, _) in names.items() if stage in set_stages and n.startswith(incomplete)]


METRICS = ["lbpe", "el2n", "forgetting", "aum", "entropy", "loss", "ssp", "ccs", "random"]


def complete_metrics(incomplete: str) -> list[str]:
    return [m for m in METRICS if m.startswith(incomplete)]
