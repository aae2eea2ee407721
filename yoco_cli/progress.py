"""How library code talks to a person: a reporter the caller passes down.

Stages, downloads and readers never reach for the CLI's output object; they take a
`reporter` argument whose default (`SILENT`) says nothing. `Reporter` is a protocol: any object
with its three methods is one (the CLI's `Output` is, without inheriting from it); a notebook or a
script can also subclass `Reporter`, inherit its do-nothing defaults and override what it wants.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol


class NullProgress:
    """The subset of rich.progress.Progress that library code uses, doing nothing."""

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        return 0

    def advance(self, task: int, advance: float = 1) -> None:
        pass

    def update(self, task: int, **kwargs: Any) -> None:
        pass


@contextmanager
def _no_progress() -> Iterator[Any]:
    yield NullProgress()


class Reporter(Protocol):
    """Notes, warnings and progress bars. The bodies are the defaults a subclass inherits: they drop
    everything (each says `return`, or type checkers would take them for abstract methods)."""

    def info(self, text: str) -> None:
        return

    def warn(self, text: str) -> None:
        return

    def progress(self, transient: bool = False, unit: str = "steps") -> AbstractContextManager[Any]:
        """A progress display (a context manager yielding an object with rich.progress.Progress's
        `add_task`, `advance` and `update`); `unit="bytes"` asks for download columns (size, speed)."""
        return _no_progress()


class _Silent(Reporter):
    """The default reporter: every method is Reporter's do-nothing default."""


SILENT: Reporter = _Silent()
