"""`yoco report`: the paper's tables (and a plot) from the evaluations in the store."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from .common import complete_choices, complete_metrics, get_store, set_json

TABLE_NAMES = ["main", "rules", "balance", "easyhard"]
FORMATS = ["table", "markdown", "csv", "json"]


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)


def _complete_tables(incomplete: str) -> list[str]:
    return [t for t in TABLE_NAMES if t.startswith(incomplete)]


def report_cmd(
    table: Annotated[list[str] | None, typer.Option(
        "--table", help="Which tables: main, rules, balance, easyhard (repeatable; default all with runs).",
        autocompletion=_complete_tables)] = None,
    dataset: Annotated[str, typer.Option("--dataset", help="Only this dataset.")] = "",
    source: Annotated[str, typer.Option("--source", help="Only pruned sets of this source set (a name).")] = "",
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", help="Only these metrics (repeatable).", autocompletion=complete_metrics)] = None,
    model: Annotated[str, typer.Option("--model", help="Only evaluations with this model (e.g. convnet).")] = "",
    which: Annotated[str, typer.Option("--which", help="best (max over validations) or last (final epoch).",
                                       autocompletion=complete_choices("best", "last"))] = "best",
    vs: Annotated[str, typer.Option(
        "--vs", metavar="RULE", help="Paired differences to this row: METRIC[-easy|-hard][-balanced|-imbalanced] "
                                     "(yoco = lbpe-easy-balanced), or none.")] = "yoco",
    fmt: Annotated[str, typer.Option("--format", help="table | markdown | csv | json",
                                     autocompletion=complete_choices(*FORMATS))] = "table",
    plot: Annotated[Path | None, typer.Option("--plot", help="Also write accuracy vs target IPC to this PNG.")] = None,
    out_file: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report to a file instead of stdout.")] = None,
    html: Annotated[Path | None, typer.Option(
        "--html", help="Also write one self-contained page (opens offline): the tables, the plot and, per rule, "
                       "which images it kept.", show_default=False)] = None,
    json_: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """Tables shaped like the paper's, from the evaluations in the store.

    Cells are mean ± std over dynamics seeds and eval repeats, each with its paired difference to YOCO
    (or --vs RULE) and a 95% interval; the best cell of a column is marked only where it is
    distinguishable from the runner-up. Cells without runs say so; cells short of runs say which
    (docs/statistics.md).

    Example: `yoco report --dataset digits --format markdown --plot digits.png --html report.html`
    """
    from ..files import atomic_write, check_output_file
    from ..stages import report as rep

    o = set_json(json_)
    if o.json_mode:
        fmt = "json"
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    if which not in ("best", "last"):
        raise UsageError(f"--which must be best or last, got {which!r}")
    bad = [t for t in table or [] if t not in TABLE_NAMES]
    if bad:
        raise UsageError(f"unknown table {bad[0]!r}", f"use one of {', '.join(TABLE_NAMES)}")
    for path in (out_file, plot, html):
        if path is not None:
            check_output_file(path)
    rep.comparison_rule(vs)  # a bad --vs fails before the store is read
    if plot is not None:
        rep.check_plot_support()
    from ..methods import scores

    metric = [scores.get(m).name for m in metric or []]  # aliases (yoco); an unknown name: one line
    records = rep.filter_records(rep.collect(get_store(write=False)), dataset, source, model)
    tables = rep.build_tables(records, table or None, which, metric or None, vs)
    if not tables:
        raise UsageError("no evaluations of pruned sets match", "run `yoco prune ...` then `yoco eval ...`, "
                         "or `yoco pipeline` for the whole workflow")
    text = _render(rep, tables, fmt, o, to_file=out_file is not None)
    if out_file is not None:
        assert text is not None  # to_file: every format comes back as text
        atomic_write(out_file, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        o.info(f"wrote {out_file}")
    elif text is not None:
        o.text(text.rstrip("\n"))
    if plot is not None:
        rep.plot(records, plot, which)
        o.info(f"wrote {plot}")
    if html is not None:
        page = rep.html_page(get_store(write=False), records, tables, which)
        atomic_write(html, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
        o.info(f"wrote {html}")


def _render(rep, tables, fmt: str, o, to_file: bool = False) -> str | None:
    """Markdown/CSV/JSON as text; Rich tables printed directly (None), or as plain text for a file."""
    import io
    import json

    from rich.console import Console

    if fmt == "markdown":
        return "\n".join(rep.to_markdown(t) for t in tables)
    if fmt == "csv":
        return rep.to_csv(tables)
    if fmt == "json":
        return json.dumps(rep.to_json(tables), indent=2)
    if to_file:
        buf = io.StringIO()
        console = Console(file=buf, width=200, no_color=True, emoji=False)
        for t in tables:
            console.print(rep.to_rich(t))
        return buf.getvalue()
    for t in tables:
        o.out.print(rep.to_rich(t))
    return None
