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
