"""State and option types shared by every command (no torch imports here)."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..store import Store
from . import output


class _State:
    home: Path | None = None
    shared: list[Path] | None = None  # --shared; None: YOCO_SHARED
    store: Store | None = None


state = _State()


def get_store(write: bool = True) -> Store:
    """The store named by --home, YOCO_HOME or the platform's user data dir (created on demand), with
    the read-only stores of YOCO_SHARED under it. `write=False` for commands that only read: they work
    on a read-only home (a mounted volume, a group folder) and create nothing."""
    from ..store.store import lock_timeout

    lock_timeout()  # a bad YOCO_LOCK_TIMEOUT is a usage error before any work, like a bad option
    if state.store is None:
        state.store = Store(state.home, shared=state.shared)
    if write or not _could_exist(state.store.root):
        return state.store.ensure()  # a home that can never exist (a part of it is a file): ensure says so
    return state.store


def _could_exist(root: Path) -> bool:
    """Whether a home that is not there yet could be made: its nearest existing ancestor is a folder."""
    p = root
    while not p.exists() and p != p.parent:
        p = p.parent
    return p.is_dir()


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


# Checked while parsing (a YocoError from a callback reaches the CLI's error boundary as one line),
# so a typo fails at once even where the value is unused or the result is cached.
SEED_MAX = 2**32 - 1  # seeds feed 32-bit seed sequences: larger ones would alias smaller ones
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_seed(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= SEED_MAX:
        raise UsageError(f"--seed must be between 0 and {SEED_MAX}, got {value}", "e.g. --seed 0")
    return value


def check_device(value: str | None) -> str | None:
    """The spelling only (no torch here): whether CUDA exists is checked where the device is used."""
    if value is not None and not _DEVICE.fullmatch(value.strip().lower()):
        raise UsageError(f"unknown device {value!r}", "use auto, cpu, cuda or cuda:N")
    return value


# -- values an option takes, offered on TAB (cheap: they run on every TAB) ---------------------------
def complete_folder(incomplete: str) -> list[str]:
    """`folder:PATH` datasets: the folders under the typed path, each as `folder:DIR/`."""
    prefix = "folder:"
    if not incomplete.startswith(prefix):
        return [prefix] if prefix.startswith(incomplete) else []
    typed = incomplete[len(prefix):]
    head, stem = typed[:typed.rfind("/") + 1], typed[typed.rfind("/") + 1:]
    try:
        names = sorted(e.name for e in os.scandir(os.path.expanduser(head) or ".")
                       if e.is_dir() and e.name.startswith(stem))
    except OSError:
        return []
    return [f"{prefix}{head}{n}/" for n in names if not n.startswith(".") or stem.startswith(".")]


def complete_choices(*values: str):
    """A completion callback offering fixed values (an option's enumeration)."""
    def complete(incomplete: str) -> list[str]:
        return [v for v in values if v.startswith(incomplete)]

    return complete


def complete_threads(incomplete: str) -> list[str]:
    """`--threads`: auto, then 1 .. the cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return [v for v in ["auto", *map(str, range(1, cores + 1))] if v.startswith(incomplete)]


def complete_datasets(incomplete: str) -> list[str]:
    """Real dataset names, and `folder:PATH`."""
    from ..data.real import NUM_CLASSES

    return [d for d in sorted(NUM_CLASSES) if d.startswith(incomplete)] + complete_folder(incomplete)


complete_device = complete_choices("auto", "cpu", "cuda", "cuda:0")
complete_switch = complete_choices("auto", "on", "off")  # --batched, --compile
complete_executor = complete_choices("auto", "serial", "local", "ray")


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N", callback=check_device,
                                        autocompletion=complete_device)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice.", callback=check_seed)]


# -- where independent training runs execute (yoco_cli.executors; imports neither torch nor ray) ----
def check_executor(value: str | None) -> str | None:
    from ..executors import resolve_name

    if value is not None:
        resolve_name(value)
    return value


def check_max_parallel(value: int | None) -> int | None:
    from ..executors import check_max_parallel as check
    from ..executors.local import usable_cores

    check(value)
    cores = usable_cores()
    if value is not None and value > cores:  # honoured (a cluster has more CPUs), but said aloud
        output.get().warn(f"--max-parallel {value} is more than this machine's {cores} usable cores: local worker "
                          f"processes would share them (at most one starts per run, and at most 64)")
    return value


RUN_PANEL = "Where runs execute"
ExecutorOpt = Annotated[str | None, typer.Option(
    "--executor", help="auto | serial | local | ray: auto = one worker process per core (one thread each) when "
                       "there is enough training, else one run at a time. Env: YOCO_EXECUTOR.",
    callback=check_executor, autocompletion=complete_executor, show_default=False,
    rich_help_panel=RUN_PANEL)]
AddressOpt = Annotated[str | None, typer.Option(
    "--address", help="Ray cluster to use (HOST:PORT, auto, ray://HOST:10001; implies --executor ray); without it "
                      "ray starts a private local cluster. Env: YOCO_RAY_ADDRESS. See docs/ray.md.",
    show_default=False, rich_help_panel=RUN_PANEL)]
MaxParallelOpt = Annotated[int | None, typer.Option(
    "--max-parallel", help="Run at most N training runs at once (default: every core, or the cluster's CPUs).",
    callback=check_max_parallel, show_default=False, rich_help_panel=RUN_PANEL)]


def where_summary(result: dict) -> str | None:
    """'N run(s) on local (...): 40 on host pid 1, 37 on host pid 2', or None when nothing ran."""
    where = result.get("where") or {}
    if not where:
        return None
    places = ", ".join(f"{n} on {w}" for w, n in where.items())
    return f"{sum(where.values())} run(s) on {result.get('executor') or 'this machine'}: {places}"


def say_where(o, result: dict) -> None:
    """Tell where the runs ran (`where_summary`), when any did."""
    line = where_summary(result)
    if line:
        o.info(line)


# -- shell completion helpers (run on every TAB: keep them cheap, no torch) ----------
def _stored_refs() -> dict[str, tuple[str, str]]:
    from ..store import Store

    try:
        return Store(state.home).refs()
    except OSError:
        return {}


def complete_refs(incomplete: str) -> list[str]:
    """Stored artifact names, read straight from the refs folder."""
    return [n for n in _stored_refs() if n.startswith(incomplete)]


SET_STAGES = {"import", "condense", "prune", "fetch"}  # the stages whose output is a condensed set


def complete_set_refs(incomplete: str) -> list[str]:
    return [n for n, (stage, _) in _stored_refs().items() if stage in SET_STAGES and n.startswith(incomplete)]


def complete_methods(incomplete: str) -> list[str]:
    """Every condensation method (condensation/__init__.py)."""
    from ..condensation import METHODS

    return [m for m in METHODS if m.startswith(incomplete)]


def method_help() -> str:
    """`--method`'s help, read from the condensation methods' registration."""
    from ..condensation import help_text

    return help_text()


def complete_sets_or_folder(incomplete: str) -> list[str]:
    """What `eval` takes: stored sets and prune groups (the per-run sets of one rule, pooled), or a
    dataset as `folder:PATH`."""
    sets = [n for n, (stage, _) in _stored_refs().items()
            if stage in SET_STAGES | {"prune-group"} and n.startswith(incomplete)]
    return sorted(sets) + (complete_folder(incomplete) if incomplete else [])


def complete_metrics(incomplete: str) -> list[str]:
    """Every registered metric (methods/scores.py), aliases left out."""
    from ..methods import scores

    return [m for m in scores.names() if m.startswith(incomplete)]


def metric_help(default: str | None = "lbpe") -> str:
    """`--metric`'s help, read from the registry when the command is defined."""
    from ..methods import scores

    return scores.choices_text(default)


# -- several targets: `--to 1 2 5` -------------------------------------------------------
_INT = re.compile(r"^\d+(,\d+)*$")


def expand_targets(args: list[str]) -> list[str]:
    """`--to 1 2 5` as people type it -> `--to 1 --to 2 --to 5` (click options take one value each).

    Only bare integers right after a --to value are taken as more targets, so name the set
    before the options (or by a non-numeric ref) when its name is a number.
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return out + args[i:]
        out.append(a)
        if a == "--to" or a.startswith("--to="):
            if a == "--to" and i + 1 < len(args):
                i += 1
                out.append(args[i])
            while i + 1 < len(args) and _INT.match(args[i + 1]):
                i += 1
                out += ["--to", args[i]]
        i += 1
    return out


class MultiTargetCommand(typer.core.TyperCommand):
    """A command whose --to takes several values as typed: `--to 1 2 5`."""

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, expand_targets(list(args)))


def parse_targets(values: list[str]) -> list[int]:
    out: list[int] = []
    for v in values:
        for part in str(v).split(","):
            if not part.strip().isdigit():
                raise UsageError(f"--to {v!r} is not a whole number", "e.g. --to 1 2 5")
            out.append(int(part))
    return sorted(set(out))


# -- asking for what is missing (only on a terminal; see interactive()) -------------------------------
def prompt_choice(question: str, labels: list[str], notes: list[str] | None = None) -> int:
    """Show a numbered list on stderr and ask until one is picked; returns the 0-based index."""
    o = output.get()
    for i, lab in enumerate(labels, 1):
        note = f"  ({notes[i - 1]})" if notes and notes[i - 1] else ""
        o.err.print(f"  {i}. {lab}{note}", highlight=False)
    while True:
        pick = typer.prompt(f"{question} (1-{len(labels)})", type=int, err=True)
        if 1 <= pick <= len(labels):
            return pick - 1
        o.warn(f"{pick} is not in the list")


def prompt_targets(ipc_from: int) -> list[int]:
    """Ask for target IPCs below the source IPC, e.g. `1 2 5`."""
    o = output.get()
    while True:
        raw = typer.prompt(f"target IPC(s), from 1 to {ipc_from - 1} (e.g. 1 2 5)", err=True)
        try:
            targets = parse_targets(raw.replace(" ", ",").strip(",").split(",") if raw.strip() else [])
        except UsageError as e:
            o.warn(e.one_line())
            continue
        if targets and all(1 <= t < ipc_from for t in targets):
            return targets
        o.warn(f"give whole numbers from 1 to {ipc_from - 1}")
