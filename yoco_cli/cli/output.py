"""The one output sink: data to stdout, messages and progress to stderr.

`Output` is the CLI's reporter (yoco_cli/progress.py): commands pass it down to the stages.

Modes: human (Rich tables), `--json` (one JSON document on stdout) and `--quiet`
(no messages, no progress; data still printed). Progress bars appear only when
stderr is a terminal, so pipes and CI logs stay clean. NO_COLOR is honoured by Rich.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from ..errors import join_hint


@dataclass
class Output:
    json_mode: bool = False
    quiet: bool = False
    debug: bool = False
    wrote_json: bool = False  # a --json document is on stdout already
    # emoji=False: Rich would turn `root:x:0` (a quoted line of a bad file) into `root❌0`
    out: Console = field(default_factory=lambda: Console(soft_wrap=True, emoji=False))
    err: Console = field(default_factory=lambda: Console(stderr=True, soft_wrap=True, emoji=False))

    # -- messages (stderr) -------------------------------------------------
    # Messages carry user text (refs, paths, file contents): never parse it as Rich markup,
    # or `[/x]` in a path crashes the error handler and `[cached]` silently disappears.
    def info(self, text: str) -> None:
        if not self.quiet:
            self.err.print(text, highlight=False, markup=False)

    def confirm(self, question: str) -> bool:
        """Whether to go ahead with something long or large: yes with the global --yes, else asked on a
        terminal; no elsewhere (the caller then refuses in one line naming --yes)."""
        if assume_yes:
            return True
        if not (sys.stdin.isatty() and sys.stderr.isatty()) or os.environ.get("CI"):
            return False
        import typer

        return typer.confirm(question, default=False, err=True)

    def warn(self, text: str) -> None:
        self.err.print(f"[yellow]warning:[/] {escape(_one_line(text))}", highlight=False)

    def error(self, text: str) -> None:
        self.err.print(f"[bold red]error:[/] {escape(_one_line(text))}", highlight=False, markup=True)

    def failure(self, message: str, hint: str | None, exit_code: int) -> None:
        """A failed command: one line on stderr, and under --json the error object on stdout."""
        self.error(join_hint(_one_line(message), hint))
        if self.json_mode and not self.wrote_json:  # one JSON document per run: a command that printed
            # its own (`yoco cache verify --json` lists its problems, then fails) keeps it
            doc = {"error": _one_line(message).rstrip("."), "hint": _one_line(hint) if hint else None, "exit_code": exit_code}
            sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")
            sys.stdout.flush()

    # -- data (stdout) -----------------------------------------------------
    def data(self, payload: Any, table: Table | None = None) -> None:
        """Print a result: the JSON document in --json mode, else the table (or a plain rendering)."""
        if self.json_mode:
            sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
            sys.stdout.flush()
            self.wrote_json = True
        elif table is not None:
            self.out.print(table)
        elif payload is not None:
            self.out.print(payload, highlight=False, markup=False)

    def text(self, text: str) -> None:
        """Plain data line on stdout (paths, names) regardless of mode."""
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    # -- progress (stderr) ---------------------------------------------------
    @property
    def show_progress(self) -> bool:
        return not self.quiet and not self.json_mode and self.err.is_terminal

    @contextmanager
    def progress(self, transient: bool = False, unit: str = "steps") -> Iterator[Progress]:
        """A Rich Progress on stderr; disabled (but still usable) when not wanted. `unit="bytes"`
        shows sizes and transfer speed (downloads) instead of counts; `unit="pipeline"` leaves the
        counts and the ETA to the caller's task fields `count` and `status`."""
        columns: tuple[ProgressColumn, ...]
        if unit == "bytes":
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                       TransferSpeedColumn(), TimeRemainingColumn())
        elif unit == "pipeline":  # counts and ETA are the caller's fields (see cmd_pipeline.PipelineBar)
            columns = (TextColumn("{task.description}", markup=False), BarColumn(), TextColumn("{task.fields[count]}"),
                       TaskProgressColumn(), TimeElapsedColumn(), TextColumn("{task.fields[status]}"))
        else:
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                       TextColumn("{task.fields[status]}"))
        prog = Progress(*columns, console=self.err, transient=transient, disable=not self.show_progress)
        with prog:
            yield prog


def _one_line(text: str) -> str:
    """Errors and warnings are one line each (grep-able, log-friendly), even when they quote an
    exception whose message spans several (pickle's do)."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Table:
    """A plain Rich table; numbers right-aligned."""
    t = Table(title=escape(title) if title else title, title_justify="left", header_style="bold")
    sample = rows[0] if rows else []
    for i, name in enumerate(columns):
        numeric = i < len(sample) and isinstance(sample[i], (int, float))
        t.add_column(name, justify="right" if numeric else "left")
    for row in rows:
        t.add_row(*[_cell(v) for v in row])
    return t


def _cell(v: Any) -> Text:
    """Cells hold data (names, paths, summaries): plain text, not markup."""
    if isinstance(v, float):
        return Text(f"{v:.4g}")
    return Text("" if v is None else str(v))


_current = Output()


def get() -> Output:
    return _current


def human_bytes(n: float) -> str:
    """A size for people: 512 B, 26.3 KiB, 1.2 MiB, ... (one decimal above bytes)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


assume_yes = False  # the global --yes: long runs and large downloads start without asking


def configure(json_mode: bool = False, quiet: bool = False, debug: bool = False) -> Output:
    global _current
    _current = Output(json_mode=json_mode, quiet=quiet, debug=debug)
    return _current
