"""progress.Reporter is a protocol with do-nothing defaults: SILENT and subclasses keep working."""
from __future__ import annotations

import io

from rich.console import Console

from yoco_cli import progress
from yoco_cli.cli.output import Output


def _drive(reporter: progress.Reporter) -> int:
    """What a stage does with its reporter: a note, a warning and one progress bar."""
    reporter.info("note")
    reporter.warn("careful")
    with reporter.progress(unit="bytes") as bars:
        task = bars.add_task("download", total=4)
        bars.advance(task, 2)
        bars.update(task, completed=4)
    return task


def test_silent_drops_everything_and_its_bars_accept_rich_calls():
    assert _drive(progress.SILENT) == 0


def test_a_subclass_overrides_only_what_it_wants():
    class Notes(progress.Reporter):
        def __init__(self):
            self.seen: list[str] = []

        def info(self, text: str) -> None:
            self.seen.append(text)

    notes = Notes()
    assert _drive(notes) == 0 and notes.seen == ["note"]  # warn and progress: the silent defaults


def test_the_cli_output_is_a_reporter_without_inheriting():
    err = io.StringIO()
    out = Output(err=Console(file=err, soft_wrap=True, emoji=False))
    assert progress.Reporter not in type(out).__mro__  # structural: mypy checks it where Output is passed
    _drive(out)
    assert err.getvalue().splitlines() == ["note", "warning: careful"]
