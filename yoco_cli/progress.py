"""How library code talks to a person: a reporter the caller passes down.

Stages, downloads and readers never reach for the CLI's output object; they take a
`reporter` argument whose default says nothing. The CLI passes its `Output` (which has the
same three methods); a notebook or a script can pass `Reporter()` subclasses of its own.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class NullProgress:
    """The subset of rich.progress.Progress that library code uses, doing nothing."""

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        return 0

    def advance(self, task: int, advance: float = 1) -> None:
        pass

    def update(self, task: int, **kwargs: Any) -> None:
        pass


class Reporter:
    """Notes, warnings and progress bars; this base class drops them all."""

    def info(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        pass

    @contextmanager
    def progress(self, transient: bool = False, unit: str = "steps") -> Iterator[Any]:
        """A progress display; `unit="bytes"` asks for download columns (size, speed)."""
        yield NullProgress()


SILENT = Reporter()
