"""`yoco report`: evaluation results from the store, as tables shaped like the paper's.

Tables (the shapes of docs/method.md §7.2), built only from what was measured, never filled in:
  main      rows Random, SSP, Entropy, AUM, Forgetting, EL2N, CCS, YOCO (each metric with
            the reference's default direction and balance, docs/method.md §4.2); columns IPC_F->IPC_T
  rules     the two-rules ablation: random / random balanced / LBPE easy imbalanced / YOCO
  balance   each metric imbalanced vs balanced (Table 5)
  easyhard  AUM, Forgetting, EL2N hard vs easy, plus YOCO (Table 4)
A cell is mean +- std (numpy's default ddof=0, as the reference's test.py logs it) over
every evaluation run that matches: all repeats of all pruned sets with that rule and
target, i.e. over dynamics seeds (score_run) and eval repeats; one run is "n=1", never
"+- 0.00". Beside it, the paired difference to a comparison row (YOCO by default) over the
(dynamics run, repeat) pairs both cells have, with a 95% paired-t interval (stages/paired.py,
docs/statistics.md). The best cell of a column is marked only where it is distinguishable
from the runner-up. One table per (dataset, source set, model, seed protocol): sets pruned
once per dynamics run ("per-seed", the paper's) and sets pruned with scores averaged over
runs ("mean-scores") are different methods and never share a cell. Each table carries a
note saying which LBPE window and which seed protocol produced it.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..methods import scores as score_methods
from ..store import Manifest, Store
from . import paired
from .paired import Diff


@dataclass
class EvalRecord:
    dataset: str
    source: str                 # the set that was pruned (or evaluated whole), e.g. digits/idc/ipc10
    ipc_from: int
    ipc_to: int | None          # None: the unpruned source set itself
    metric: str | None
    direction: str | None
    balance: str | None
    model: str
    best: list[float]           # per-run best top-1 accuracy, percent
    last: list[float]           # per-run last top-1 accuracy, percent
    eval_key: str = ""
    score_run: int | None = None
    protocol: str = "per-seed"  # or "mean-scores" (scores averaged over dynamics runs)
    runs: int | None = None     # dynamics runs behind the pruning
    lbpe_window: dict | None = None
    repeats: list[int] = field(default_factory=list)  # each value's evaluation seed (default: 0, 1, ...)
    dyn_run: int | None = None  # which dynamics run of its prune group the set was pruned for (j)


@dataclass(frozen=True)
class RowSpec:
    label: str
    metric: str
    direction: str | None = None  # None: any (metrics without a direction)
    balance: str | None = None    # None: any
    paper: bool = True            # a row of the paper's table: shown unmeasured too when the table is asked for

    def matches(self, r: EvalRecord) -> bool:
        return (r.metric == self.metric and (self.direction is None or r.direction == self.direction)
                and (self.balance is None or r.balance == self.balance))


def main_rows() -> list[RowSpec]:
    """The main table: one row per registered metric with its default rule (docs/method.md §4.2), the paper's
    rows first in the paper's order; a direction or balance the metric does not choose matches any."""
    rows = []
    for m in score_methods.table_order():
        direction = ("hard" if m.hard else "easy") if m.directed else None
        balance = None if m.fixed_balance else ("balanced" if m.balanced else "imbalanced")
        rows.append(RowSpec(m.row_label, m.name, direction, balance, paper=m.paper_row is not None))
    return rows


# The ablation tables are shapes of the paper's Tables 2, 4 and 5 (fixed rows); the main table
# follows the registry, so every metric has a row there.
ABLATIONS: dict[str, tuple[str, list[RowSpec]]] = {
    "rules": ("The two rules (Table 2 shape)", [
        RowSpec("Neither (random)", "random", None, "imbalanced"),
        RowSpec("Rule 2 only (random, balanced)", "random", None, "balanced"),
        RowSpec("Rule 1 only (LBPE easy, imbalanced)", "lbpe", "easy", "imbalanced"),
        RowSpec("Both (YOCO)", "lbpe", "easy", "balanced")]),
    "balance": ("Balanced vs imbalanced (Table 5 shape)", [
        RowSpec(f"{name} {bal}", metric, direction, bal)
        for name, metric, direction in [("Random", "random", None), ("SSP", "ssp", None),
                                        ("AUM", "aum", "hard"), ("Entropy", "entropy", "hard"),
                                        ("Forgetting", "forgetting", "hard"), ("EL2N", "el2n", "hard"),
                                        ("YOCO (LBPE easy)", "lbpe", "easy")]
        for bal in ("imbalanced", "balanced")]),
    "easyhard": ("Easy vs hard (Table 4 shape)", [
        *[RowSpec(f"{name} {d}", metric, d, "imbalanced")
          for name, metric in [("AUM", "aum"), ("Forgetting", "forgetting"), ("EL2N", "el2n")]
          for d in ("hard", "easy")],
        RowSpec("YOCO", "lbpe", "easy", "balanced")]),
}


class _Tables(Mapping[str, tuple[str, list[RowSpec]]]):
    """{table name: (title, rows)}: "main" read from the registry when asked, then the ablations."""

    def __getitem__(self, name: str) -> tuple[str, list[RowSpec]]:
        if name == "main":
            return "Main comparison (Table 1 shape)", main_rows()
        return ABLATIONS[name]

    def __iter__(self) -> Iterator[str]:
        return iter(["main", *ABLATIONS])

    def __len__(self) -> int:
        return 1 + len(ABLATIONS)


TABLES: Mapping[str, tuple[str, list[RowSpec]]] = _Tables()


def check_rows(metrics: list[str], tables: list[str]) -> None:
    """Refuse a metric that no row of the chosen tables shows: it would be accepted and never pruned."""
    covered = {s.metric for name in tables for s in TABLES[name][1]}
    missing = [m for m in metrics if m not in covered]
    if missing:
        raise UsageError(f"--metric {missing[0]} has no row in the table(s) {', '.join(tables)}, so nothing "
                         "would be pruned with it", "add --tables main (every metric has a row there)")


@dataclass
class Cell:
    mean: float
    std: float
    n: int
    best: bool = False
    runs: dict[str, float] = field(default_factory=dict)  # pairing key (paired.run_key) -> accuracy
    missing: list[str] = field(default_factory=list)      # keys other cells of the table have, this one not
    diff: Diff | None = None                               # paired difference to the table's `vs` row

    def text(self) -> str:
        """`mean ± std`, or `mean (n=1)` where one run measured no spread."""
        return f"{self.mean:.2f} (n=1)" if self.n == 1 else f"{self.mean:.2f} ± {self.std:.2f}"


@dataclass
class Table:
    name: str
    title: str
    dataset: str
    source: str
    model: str
    columns: list[str]
    rows: list[tuple[str, list[Cell | None]]]
    reference: Cell | None = None  # the unpruned source set
    which: str = "best"
    notes: list[str] = field(default_factory=list)
    protocol: str = "per-seed"
    vs: str | None = None       # the row every other row's paired difference is taken to
    interval: str = paired.METHOD


def cell_of(values: list[float]) -> Cell | None:
    if not values:
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return Cell(round(mean, 4), round(std, 4), len(values))


def _column(r: EvalRecord) -> str:
    return f"{r.ipc_from}→{r.ipc_to}"


def build_tables(records: list[EvalRecord], names: list[str] | None = None, which: str = "best",
                 metrics: list[str] | None = None, vs: str | None = "yoco") -> list[Table]:
    """One table per requested shape and per (dataset, source, model) that has runs for it.

    Tables asked for by name keep the paper's full shape (rows without runs say so). By default
    (`names=None`) only tables that compare at least two measured rules are shown, without their
    unmeasured rows (a note lists them), and not twice the same cells under another title; if no
    table compares two, the first with runs is shown. `vs` names the row the paired differences
    are taken to (a rule as `comparison_rule` reads it; None: no differences)."""
    rule = comparison_rule(vs)
    groups: dict[tuple[str, str, str], list[EvalRecord]] = {}
    for r in records:
        groups.setdefault((r.dataset, r.source, r.model), []).append(r)
    out = []
    for (dataset, source, model), recs in sorted(groups.items()):
        full = [v for r in recs if r.ipc_to is None for v in getattr(r, which)]
        for protocol in sorted({r.protocol for r in recs if r.ipc_to is not None}, key=PROTOCOLS.index):
            pruned = [r for r in recs if r.ipc_to is not None and r.protocol == protocol]
            shaped = []
            for t, specs in _tables_of(pruned, full, names, which, metrics, dataset, source, model, protocol):
                compare(t, specs, rule)
                shaped.append(t)
            out += shaped if names else _overview(shaped)
    return out


PROTOCOLS = ["per-seed", "mean-scores"]


def _tables_of(pruned, full, names, which, metrics, dataset, source, model, protocol) -> list[tuple[Table, list]]:
    out = []
    for name in names or list(TABLES):
        title, specs = TABLES[name]
        specs = [s for s in specs if (not metrics or s.metric in metrics)
                 and (s.paper or any(s.matches(r) for r in pruned))]  # a non-paper row only where measured
        hits = [r for r in pruned if any(s.matches(r) for s in specs)]
        if not hits:
            continue
        cols = sorted({(r.ipc_from, r.ipc_to) for r in hits}, key=lambda c: (c[0], c[1]))
        columns = [f"{a}→{b}" for a, b in cols]
        rows = []
        for s in specs:
            cells = [keyed_cell([kv for r in pruned if s.matches(r) and _column(r) == col
                                 for kv in keyed_values(r, which)]) for col in columns]
            rows.append((s.label, cells))
        out.append((Table(name, title, dataset, source, model, columns, rows, cell_of(full), which,
                          [protocol_note(hits)], protocol), specs))
    return out


def protocol_note(records: list[EvalRecord]) -> str:
    """One sentence: the LBPE window and the seed protocol behind a table's cells."""
    windows = {_window_text(r.lbpe_window) for r in records if r.metric == "lbpe" and r.lbpe_window}
    has_lbpe = any(r.metric == "lbpe" for r in records)
    lbpe = ("LBPE window: " + "; ".join(sorted(windows))) if windows else \
        ("LBPE window: not recorded with these sets" if has_lbpe else "no LBPE row")
    runs = sorted({r.runs for r in records if r.runs})
    n = "/".join(map(str, runs)) if runs else "the"
    if any(r.protocol == "mean-scores" for r in records):
        seeds = f"scores averaged over {n} dynamics runs, each set pruned once (not the paper's protocol)"
    elif runs == [1]:
        seeds = "one dynamics run"
    else:
        seeds = (f"each of {n} dynamics runs prunes with its own scores and a cell pools runs x evaluation "
                 f"repeats (the paper's protocol)")
    return f"{lbpe}; seed protocol: {seeds}."


def _window_text(w: dict) -> str:
    k, stop = w.get("k"), w.get("stop_epoch")
    by = "lowest-loss" if w.get("use_loss") else "highest-accuracy"
    how = {"scaled": "the reference's {ref} for 1000 epochs, both scaled to these dynamics",
           "unscaled": "the reference's {ref}, unscaled",
           "user": "set by --k/--stop-epoch"}.get(w.get("window") or "", "")
    ref = tuple(w.get("reference") or ())
    how = how.format(ref=f"(stop {ref[0]}, K {ref[1]})" if len(ref) == 2 else "values")
    rel = "K < stop" if k is not None and stop is not None and k < stop else "K = stop, the whole window"
    return f"the {k} {by} epoch(s) of [0, {stop}) ({rel}" + (f"; {how})" if how else ")")


def _measured(t: Table) -> int:
    return sum(1 for _, cells in t.rows if any(c is not None for c in cells))


def _overview(tables: list[Table]) -> list[Table]:
    """The default report: tables that compare something, each without its unmeasured rows."""
    keep, seen = [], set()
    for t in [t for t in tables if _measured(t) >= 2] or tables[:1]:
        same = tuple(sorted((c.mean, c.std, c.n) for _, cells in t.rows for c in cells if c is not None))
        if same not in seen:  # a table showing exactly the cells of one already shown says nothing new
            seen.add(same)
            keep.append(t)
    for t in keep:
        empty = [label for label, cells in t.rows if all(c is None for c in cells)]
        t.rows = [(label, cells) for label, cells in t.rows if any(c is not None for c in cells)]
        if empty:
            t.notes.append(f"no runs yet: {', '.join(empty)}")
        if _measured(t) < 2:
            t.notes.append("one rule measured: nothing to compare yet")
    return keep


# -- paired comparisons (docs/statistics.md) ----------------------------------------------------


def comparison_rule(text: str | None):
    """`--vs`: a rule as METRIC[-easy|-hard][-balanced|-imbalanced] (yoco = lbpe easy balanced; the
    metric's default direction and balance where left out), or None/"none" for no differences."""
    from ..errors import UsageError
    from ..methods import select

    if text is None or text.strip().lower() in ("", "none"):
        return None
    metric, *rest = text.strip().lower().split("-")
    extra = [p for p in rest if p not in ("easy", "hard", "balanced", "imbalanced")]
    known = {m.name for m in score_methods.REGISTRY.values()} | {a for m in score_methods.REGISTRY.values()
                                                                for a in m.aliases}
    if extra or metric not in known:
        raise UsageError(f"--vs {text!r}: unknown {'part ' + repr(extra[0]) if extra else 'metric ' + repr(metric)}",
                         f"name a rule as METRIC[-easy|-hard][-balanced|-imbalanced] with METRIC one of yoco, "
                         f"{', '.join(score_methods.names())}; e.g. --vs ssp, --vs random-balanced, --vs none")
    metric = score_methods.get(metric).name
    hard = True if "hard" in rest else False if "easy" in rest else None
    balanced = True if "balanced" in rest else False if "imbalanced" in rest else None
    return select.rule_for(metric, hard, balanced)


def _spec_is(spec: RowSpec, rule) -> bool:
    return (spec.metric == rule.metric and spec.direction in (None, rule.direction)
            and spec.balance in (None, rule.balance))


def keyed_values(r: EvalRecord, which: str) -> list[tuple[str, float]]:
    """A record's accuracies, each with its pairing key (dynamics run, evaluation repeat)."""
    values = getattr(r, which)
    seeds = r.repeats if len(r.repeats) == len(values) else range(len(values))
    run = r.dyn_run if r.dyn_run is not None else r.score_run
    # one dynamics run: a score rule's set says run 0, random's says nothing (it reads no scores); both
    # are the pruning of run 0, and so is every set of the mean-scores protocol (run None throughout)
    return [(paired.run_key(0 if run is None else run, s), v) for s, v in zip(seeds, values)]


def keyed_cell(kv: list[tuple[str, float]]) -> Cell | None:
    """mean ± std over every value; for pairing, one value per key (two runs under one key, e.g.
    the same set evaluated with two configurations of one model label, are averaged)."""
    cell = cell_of([v for _, v in kv])
    if cell is not None:
        groups: dict[str, list[float]] = {}
        for k, v in kv:
            groups.setdefault(k, []).append(v)
        cell.runs = {k: round(sum(vs) / len(vs), 4) for k, vs in sorted(groups.items())}
    return cell


def compare(t: Table, specs: list[RowSpec], rule) -> None:
    """Paired differences to the `rule` row, the best-cell star, and which runs cells lack."""
    vs = next((i for i, s in enumerate(specs) if rule is not None and _spec_is(s, rule)), None)
    if vs is not None and any(c is not None for c in t.rows[vs][1]):
        t.vs = t.rows[vs][0]
        for i, (_, cells) in enumerate(t.rows):
            for c, ref in zip(cells, t.rows[vs][1]):
                if i != vs and c is not None and ref is not None:
                    c.diff = paired.paired(c.runs, ref.runs, t.vs)
    _mark_best(t)
    _mark_missing(t)


def _mark_best(t: Table) -> None:
    """Star the best cell of a column only where its paired interval to the runner-up excludes 0."""
    for j, col in enumerate(t.columns):
        present = sorted(((c, label) for label, cells in t.rows if (c := cells[j]) is not None),
                         key=lambda p: -p[0].mean)
        if len(present) < 2:
            continue
        (top, a), (second, b) = present[0], present[1]
        d = paired.paired(top.runs, second.runs, b)
        if d is not None and d.lo is not None and d.lo > 0:
            top.best = True
        else:
            n = f"n={d.n}" if d is not None else "no matched runs"
            t.notes.append(f"no star at {col}: {a} and {b} are not distinguishable ({n})")


def _mark_missing(t: Table) -> None:
    """Every measured cell lists the keys that other cells of the table have and it lacks."""
    every = {k for _, cells in t.rows for c in cells if c is not None for k in c.runs}
    short = []
    for label, cells in t.rows:
        for col, c in zip(t.columns, cells):
            if c is not None:
                c.missing = sorted(every - c.runs.keys())
                if c.missing:
                    short.append(f"{label} {col} lacks {', '.join(c.missing[:3])}" + (" ..." if len(c.missing) > 3 else ""))
    if short:
        t.notes.append(f"incomplete cells ({len(every)} runs each when done): " + "; ".join(short[:4])
                       + (f"; and {len(short) - 4} more" if len(short) > 4 else ""))


# -- the pipeline's headline (docs/statistics.md "What would settle it") ----------------------------
@dataclass
class Verdict:
    """In one column of a table: the `vs` row (YOCO) against the best other row, paired."""
    column: str
    vs: str
    other: str
    lead: float                 # vs minus other, mean over pairs
    lo: float | None
    hi: float | None
    n: int
    distinguishable: bool
    pairs_needed: int | None    # pairs that would settle it if mean and spread held (None: unknown)

    def text(self, seeds: int, repeats: int) -> str:
        word = "leads" if self.lead >= 0 else "trails"
        head = f"{self.column}: {self.vs} {word} {self.other} (the best other rule) by {self.lead:+.2f}"
        if self.lo is None or self.hi is None:
            return (f"{head} with one pair (n={self.n}): no spread measured, not distinguishable; "
                    f"--seeds 3 or --repeats 3 gives 3 pairs and an interval")
        head += f" [{self.lo:+.2f}, {self.hi:+.2f}] at n={self.n}"
        if self.distinguishable:
            return f"{head}: distinguishable"
        if self.pairs_needed is None:
            return f"{head}: not distinguishable, and no affordable n would settle a difference this small"
        more = self.pairs_needed
        return (f"{head}: not distinguishable; about {more} pairs would settle it if this difference held: "
                f"--repeats {-(-more // seeds)} (at --seeds {seeds}) or --seeds {-(-more // repeats)} "
                f"(at --repeats {repeats})")


def verdicts(t: Table) -> list[Verdict]:
    """Per column, the `vs` row against the best other row that has runs there (by mean)."""
    if t.vs is None:
        return []
    rows = dict(t.rows)
    out = []
    for j, col in enumerate(t.columns):
        others = [(c.mean, c.diff, label) for label, cells in t.rows
                  if label != t.vs and (c := cells[j]) is not None and c.diff is not None]
        if rows[t.vs][j] is None or not others:
            continue
        _, d, label = max(others, key=lambda p: p[0])
        lead = paired.Diff(t.vs, -d.mean, None if d.hi is None else -d.hi, None if d.lo is None else -d.lo, d.n,
                           d.distinguishable, d.sd)
        out.append(Verdict(col, t.vs, label, lead.mean, lead.lo, lead.hi, d.n, d.distinguishable,
                           paired.pairs_to_settle(lead)))
    return out


# -- rendering ---------------------------------------------------------------------------------
NO_RUNS = "no runs"


def caption(t: Table) -> str:
    ref = ""
    if t.reference:
        ref = f"; unpruned source: {t.reference.text()}" + (f" (n={t.reference.n})" if t.reference.n > 1 else "")
    mean = ", pruned with scores averaged over dynamics runs" if t.protocol == "mean-scores" else ""
    return f"{t.title}: {t.dataset}, source {t.source}, model {t.model}{mean}, {t.which} top-1 % mean ± std{ref}"


def legend(t: Table) -> str | None:
    """What the Δ figures are, for a table that has them."""
    if t.vs is None:
        return None
    return (f"Δ: this row minus {t.vs} over the (dynamics run, repeat) pairs both cells have, with its "
            f"{t.interval} interval; ~ marks an interval that includes 0 (not distinguishable at this n); "
            f"* marks a best cell distinguishable from the runner-up")


def _diff_text(c: Cell | None) -> str:
    return c.diff.text() if c is not None and c.diff is not None else ""


def to_rich(t: Table):
    from rich.markup import escape
    from rich.table import Table as RichTable

    notes = [n for n in [legend(t), *t.notes] if n]
    rt = RichTable(title=escape(caption(t)), title_justify="left", header_style="bold",
                   caption=escape("; ".join(notes)) or None, caption_justify="left")
    rt.add_column("rule")
    for c in t.columns:
        rt.add_column(c, justify="right")
    for label, cells in t.rows:
        rt.add_row(label, *[_rich_cell(c) for c in cells])
    return rt


def _rich_cell(c: Cell | None) -> str:
    """The cell's mean ± std, and under it (dim where not distinguishable) its Δ to the `vs` row."""
    if c is None:
        return f"[dim]{NO_RUNS}[/]"
    text = "[bold green]" + c.text() + " *[/]" if c.best else c.text()
    if c.diff is not None:
        from rich.markup import escape

        d = escape(c.diff.text())
        text += "\n" + (d if c.diff.distinguishable else f"[dim]{d}[/]")
    return text


def to_markdown(t: Table) -> str:
    """The table; where it has a `vs` row, each column is followed by its Δ column."""
    cols = [c for col in t.columns for c in ([col, f"Δ {col}"] if t.vs else [col])]
    lines = [f"**{caption(t)}**", "", "| rule | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for label, cells in t.rows:
        txt = []
        for c in cells:
            txt.append((f"**{c.text()}**" if c.best else c.text()) if c else NO_RUNS)
            if t.vs:
                txt.append(_diff_text(c) or ("—" if label == t.vs else ""))
        lines.append(f"| {label} | " + " | ".join(txt) + " |")
    notes = [n for n in [legend(t), *t.notes] if n]
    lines += ["", *(f"_{n}_" for n in notes)] if notes else []
    return "\n".join(lines) + "\n"


def to_csv(tables: list[Table]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["table", "dataset", "source", "model", "which", "rule", "column", "mean", "std", "n", "best",
                "vs", "diff", "diff_lo", "diff_hi", "pairs", "distinguishable"])
    for t in tables:
        for label, cells in t.rows:
            for col, c in zip(t.columns, cells):
                d = c.diff if c is not None else None
                w.writerow([t.name, t.dataset, t.source, t.model, t.which, label, col,
                            *(["", "", 0, ""] if c is None else [c.mean, c.std, c.n, int(c.best)]),
                            *(["", "", "", "", "", ""] if d is None else
                              [d.vs, d.mean, _blank(d.lo), _blank(d.hi), d.n, int(d.distinguishable)])])
    return buf.getvalue()


def _blank(v: float | None):
    return "" if v is None else v


def to_json(tables: list[Table]) -> list[dict]:
    """The tables with their cells; accuracies are percentages here ("unit"), fractions in `yoco eval --json`."""
    return [{**asdict(t), "unit": "percent"} for t in tables]


def check_plot_support() -> None:
    """Fail before any work when --plot cannot be honoured (matplotlib missing or broken)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot
    except ImportError as e:
        from ..errors import ResourceError

        raise ResourceError(f"--plot needs matplotlib, which cannot be imported ({e})",
                            "install it: pip install 'matplotlib>=3.7' (or leave out --plot)") from None


def plot(records: list[EvalRecord], path: Path, which: str = "best") -> Path:
    """Accuracy against target IPC, one line per main-table rule, error bars = std, as a PNG."""
    import matplotlib.pyplot as plt

    fig = figure(records, which)
    from ..files import atomic_write

    # "tight" keeps the legend, which sits right of the axes, inside the picture
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return Path(path)


def figure(records: list[EvalRecord], which: str = "best"):
    """The plot's matplotlib figure: one panel per (dataset, source, model, IPC_F), legend outside the data."""
    check_plot_support()
    import matplotlib
    import matplotlib.pyplot as plt

    groups: dict[tuple, list[EvalRecord]] = {}
    full: dict[tuple, list[float]] = {}
    for r in records:
        if r.ipc_to is not None:
            groups.setdefault((r.dataset, r.source, r.model, r.ipc_from), []).append(r)
        else:
            full.setdefault((r.dataset, r.source, r.model, r.ipc_from), []).extend(getattr(r, which))
    if not groups:
        from ..errors import UsageError

        raise UsageError("no evaluation runs of pruned sets to plot", "run `yoco eval` on pruned sets first")
    fig, axes = plt.subplots(1, len(groups), figsize=(7.5 * len(groups), 4.5), squeeze=False)
    for ax, ((dataset, source, model, ipc_from), recs) in zip(axes[0], sorted(groups.items())):
        for spec in TABLES["main"][1]:
            pts = sorted({r.ipc_to for r in recs if r.ipc_to is not None and spec.matches(r)})
            cells = [(t, cell_of([v for r in recs if spec.matches(r) and r.ipc_to == t for v in getattr(r, which)]))
                     for t in pts]
            shown = [(t, c) for t, c in cells if c is not None]  # a record with no accuracies has no point
            if shown:
                yoco = spec.label == "YOCO"
                ax.errorbar([t for t, _ in shown], [c.mean for _, c in shown], yerr=[c.std for _, c in shown],
                            marker="o", capsize=3, label=spec.label, linewidth=2.4 if yoco else 1.2,
                            zorder=3 if yoco else 2, **({"color": "black"} if yoco else {}))
        ref = cell_of(full.get((dataset, source, model, ipc_from), []))
        if ref is not None:
            ax.axhline(ref.mean, color="0.55", linestyle=":", linewidth=1.2, label=f"unpruned IPC {ipc_from}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r.ipc_to for r in recs if r.ipc_to is not None}))  # groups hold pruned sets only
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel(f"target IPC (pruned from IPC {ipc_from})")
        ax.set_ylabel(f"{which} test accuracy (%)")
        ax.set_title(f"{dataset}: {source}, {model}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)  # never on a point
    fig.tight_layout()
    return fig



# -- from the store ------------------------------------------------------------------------------
def _pct(v: float) -> float:
    return 100.0 * v if v <= 1.0 else v  # eval stores fractions; accept percent too


def collect(store: Store) -> list[EvalRecord]:
    """Every evaluation of a stored set, joined with how that set was made.

    Several eval manifests can share per-repeat runs (e.g. `--repeats 3` then `--repeats 5`),
    so each repeat is counted once, by the digest of its result object.
    """
    from .sets import all_sets, set_label

    sets = {m.digest("set"): m for m in all_sets(store)}
    runs = _group_runs(store)
    seen: set[tuple[str, str]] = set()
    merged: dict[tuple[str, str], EvalRecord] = {}  # (set digest, model) -> one record
    for ev in store.all_runs("eval"):
        set_m = sets.get(ev.inputs.get("set", ""))
        if set_m is None:
            continue  # full-train-split evaluations and evals of deleted sets
        fresh = _record(store, ev, set_m, set_label)
        fresh.dyn_run = runs.get(set_m.key, fresh.score_run)
        rec = merged.setdefault((ev.inputs["set"], fresh.model), fresh)
        for rep in ev.meta.get("per_repeat", []):
            out_digest = ev.outputs.get(f"seed{rep['seed']}/result", {}).get("digest", str(rep["seed"]))
            if (ev.inputs["set"], out_digest) in seen:
                continue
            seen.add((ev.inputs["set"], out_digest))
            rec.best.append(_pct(rep["best"]))
            rec.last.append(_pct(rep["last"]))
            rec.repeats.append(int(rep["seed"]))
    return [r for r in merged.values() if r.best]


def _group_runs(store: Store) -> dict[str, int]:
    """Set key -> its index j in a prune group ("prune-group" runs list the per-run sets in order), the
    dynamics run it was pruned for: random and SSP sets record a seed, not a score run."""
    out: dict[str, int] = {}
    for g in store.all_runs("prune-group"):
        for j, key in enumerate(g.meta.get("runs") or []):
            out.setdefault(key, j)
    return out


def _record(store: Store, ev: Manifest, set_m: Manifest, set_label) -> EvalRecord:
    model = ev.meta.get("model", {})
    name = model.get("name", "?") if isinstance(model, dict) else str(model)
    model_label = f"{name}, {ev.meta.get('epochs', '?')} ep"
    pruned = set_m.meta.get("made_by", {}).get("pruned") or set_m.meta.get("pruned")
    info = set_m.meta.get("set", {})
    if pruned:
        # sets pruned before the protocol was recorded: score_run None was the mean over runs
        legacy_mean = "score_run" in pruned and pruned["score_run"] is None
        protocol = pruned.get("protocol") or ("mean-scores" if legacy_mean else "per-seed")
        return EvalRecord(info.get("dataset", "?"), pruned["parent"], int(pruned["from"]), int(pruned["to"]),
                          pruned["metric"], pruned["direction"], pruned["balance"], model_label, [], [],
                          ev.key, pruned.get("score_run"), protocol, pruned.get("runs"), pruned.get("lbpe_window"))
    return EvalRecord(info.get("dataset", "?"), set_label(store, set_m), int(info.get("ipc", 0)), None,
                      None, None, None, model_label, [], [], ev.key)


def filter_records(records: list[EvalRecord], dataset: str = "", source: str = "",
                   model: str = "") -> list[EvalRecord]:
    return [r for r in records
            if (not dataset or r.dataset == dataset) and (not source or r.source == source)
            and (not model or r.model.split(",")[0] == model)]


def results_document(tables: list[Table], command: str, settings: dict, plot_name: str | None = None) -> str:
    """A Markdown report that says how to regenerate itself; written by the tool, never by hand."""
    import platform

    from .._version import __version__

    lines = ["# yoco results", "",
             "Generated by `yoco pipeline`; do not edit by hand. Regenerate (cached steps are reused, a fresh",
             "cache recomputes everything with the same seeds) with:", "", "```bash", command, "```", ""]
    lines += [f"- {k}: {v}" for k, v in settings.items()]
    lines += [f"- yoco {__version__}, Python {platform.python_version()}, {platform.platform(terse=True)}", ""]
    whiches = [w for w in ("best", "last") if any(t.which == w for t in tables)]
    what = {"best": "best (the highest of the four validations)", "last": "last (after the final epoch)"}
    lines += [f"Cells are {' and then '.join(what[w] for w in whiches)} top-1 test accuracy (%), mean ± population",
              "std over dynamics seeds × evaluation repeats (`n=1`: a single run, no spread measured); `no runs`",
              "marks a cell that was not measured. Each `Δ` column is the row's paired difference to YOCO over the",
              "(dynamics seed, repeat) runs both cells have, with its 95% paired-t interval; `~` marks an interval",
              "that includes 0, i.e. a difference not distinguishable at that n (docs/statistics.md). The best cell",
              "of a column is in bold only where it is distinguishable from the runner-up. The lines under each",
              "table say which LBPE window and which seed protocol produced it.", ""]
    lines += [to_markdown(t) for t in tables]
    if plot_name:
        lines += [f"![accuracy vs target IPC]({plot_name})", ""]
    return "\n".join(lines)


# -- one self-contained HTML page (`yoco report --html`) ------------------------------------------
# Rendered from `to_json(tables)` alone, generically: a cell's mean ± std first, then every other field
# it carries (so columns added to the tables' JSON appear here without a change). Inline CSS, images
# as data: URIs, no script and no link outside the page: it opens offline, from a mail or an archive.
HTML_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1200px;color:#222;
padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px}h3{font-size:14px;margin:18px 0 4px}
.meta{color:#555;font-size:12px}table{border-collapse:collapse;margin:8px 0}
th,td{border:1px solid #ccc;padding:4px 8px;vertical-align:top}th{background:#f1f1f1}
td.num{text-align:right;white-space:nowrap}td.best{background:#e4f4e4;font-weight:600}
.extra{color:#555;font-size:11px;font-weight:400}.none{color:#999}ul.notes{color:#444;font-size:12px;margin:4px 0}
img{max-width:100%;border:1px solid #ddd}figure{margin:10px 0}figcaption{font-size:12px;color:#444}
"""
_TABLE_KEYS = {"name", "title", "columns", "rows", "reference", "notes", "unit"}
_CELL_KEYS = {"mean", "std", "n", "best"}


def _esc(value) -> str:
    import html

    return html.escape(str(value), quote=True)


def _num(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _field_html(key: str, value) -> str:
    """One more field of a cell: an interval-like dict (one with a mean) as `mean [lo, hi]` with its
    other fields, any other dict (e.g. per-run values) folded, a list joined."""
    if isinstance(value, dict) and not isinstance(value.get("mean"), (int, float)):
        body = ", ".join(f"{_esc(k)} {_esc(_num(v))}" for k, v in value.items())
        return f'<details class="extra"><summary>{_esc(key)} ({len(value)})</summary>{body}</details>'
    if key == "diff" and isinstance(value, dict) and "distinguishable" in value:
        return _diff_html(value)
    if isinstance(value, dict):
        head = ""
        if isinstance(value.get("mean"), (int, float)):
            head = f"{value['mean']:+.2f}"
            if isinstance(value.get("lo"), (int, float)) and isinstance(value.get("hi"), (int, float)):
                head += f" [{value['lo']:+.2f}, {value['hi']:+.2f}]"
        rest = ", ".join(f"{k}={_num(v)}" for k, v in value.items() if k not in ("mean", "lo", "hi") and v is not None)
        return f'<div class="extra">{_esc(key)} {_esc(head)}{" (" + _esc(rest) + ")" if rest else ""}</div>'
    if isinstance(value, list):
        return f'<div class="extra">{_esc(key)}: {_esc(", ".join(map(str, value)))}</div>'
    return f'<div class="extra">{_esc(key)}: {_esc(_num(value))}</div>'


def _diff_html(d: dict) -> str:
    """A cell's paired difference as the terminal table writes it: Δ mean [lo, hi] vs ROW, n; dim with ~
    where its interval includes 0."""
    text = f"Δ {d['mean']:+.2f}"
    if isinstance(d.get("lo"), (int, float)) and isinstance(d.get("hi"), (int, float)):
        text += f" [{d['lo']:+.2f}, {d['hi']:+.2f}]"
    text += f" vs {d.get('vs', '?')}, n={d.get('n')}"
    if not d.get("distinguishable"):
        return f'<div class="extra">{_esc(text)} ~</div>'
    return f'<div class="extra"><b>{_esc(text)}</b></div>'


def _cell_html(cell: dict | None) -> str:
    if cell is None:
        return f'<td class="num none">{NO_RUNS}</td>'
    n = cell.get("n")
    head = f"{cell['mean']:.2f} (n=1)" if n == 1 else f"{cell['mean']:.2f} ± {cell.get('std', 0):.2f}"
    if n and n > 1:
        head += f' <span class="extra">n={n}</span>'
    extra = "".join(_field_html(k, v) for k, v in cell.items() if k not in _CELL_KEYS and v not in (None, [], {}, ""))
    best = cell.get("best")
    return f'<td class="num{" best" if best else ""}">{head}{" ★" if best else ""}{extra}</td>'


def _table_html(t: dict) -> str:
    meta = ", ".join(f"{k} {_esc(_num(v))}" for k, v in t.items()
                     if k not in _TABLE_KEYS and isinstance(v, (str, int, float)) and v != "")
    ref = t.get("reference")
    if ref:
        meta += f"; unpruned source {ref['mean']:.2f} ± {ref.get('std', 0):.2f} (n={ref.get('n')})"
    head = "".join(f"<th>{_esc(c)}</th>" for c in t["columns"])
    body = "".join(f"<tr><th>{_esc(label)}</th>{''.join(_cell_html(c) for c in cells)}</tr>" for label, cells in t["rows"])
    notes = "".join(f"<li>{_esc(n)}</li>" for n in t.get("notes") or [])
    unit = f" (top-1 accuracy, {_esc(t['unit'])})" if t.get("unit") else ""
    return (f"<h2>{_esc(t.get('title', t.get('name', 'table')))}</h2><p class='meta'>{meta}{unit}</p>"
            f"<table><thead><tr><th>rule</th>{head}</tr></thead><tbody>{body}</tbody></table>"
            + (f"<ul class='notes'>{notes}</ul>" if notes else ""))


def _img(data: bytes, alt: str) -> str:
    import base64

    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def to_html(tables: list[dict], plot_png: bytes | None = None, pictures: list[tuple[str, bytes]] | None = None,
            heading: str = "yoco report", notes: list[str] | None = None) -> str:
    """One self-contained page: the tables (`to_json`'s dicts), the accuracy-vs-IPC plot, and
    (caption, PNG) pictures, e.g. the kept/pruned grid of each rule."""
    from .._version import __version__

    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_esc(heading)}</title>",
             f"<style>{HTML_CSS}</style></head><body><h1>{_esc(heading)}</h1>",
             (f"<p class='meta'>Written by yoco {_esc(__version__)}. Cells: mean ± std over dynamics runs × "
              f"evaluation repeats; Δ is the paired difference to the compared row (~: not distinguishable at this n); "
              f"★ marks the best cell of a column where it is distinguishable from the runner-up.</p>")]
    parts += [f"<p class='meta'>{_esc(n)}</p>" for n in notes or []]
    parts += [_table_html(t) for t in tables]
    if plot_png:
        parts.append(f"<h2>Accuracy vs target IPC</h2><figure>{_img(plot_png, 'accuracy vs target IPC')}</figure>")
    if pictures:
        parts.append("<h2>What each rule kept</h2>")
        parts += [f"<figure><figcaption>{_esc(cap)}</figcaption>{_img(png, cap)}</figure>" for cap, png in pictures]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


PICTURE_CLASSES = 10  # classes drawn per rule in the page: enough to see a rule's choice, small enough to open


def rule_pictures(store: Store, tables: list[Table], per_row: int = 20) -> list[tuple[str, bytes]]:
    """For the first main table (else the first table): per rule with runs, the picture of its pruned
    set at the table's smallest target (run 0 of a per-seed group), as (caption, PNG)."""
    from .pictures import selection
    from .sets import all_sets

    if not tables:
        return []
    t = next((t for t in tables if t.name == "main"), tables[0])
    target = min(int(c.split("→")[1]) for c in t.columns)
    specs = {s.label: s for s in TABLES[t.name][1]}
    sets = [m for m in all_sets(store) if (m.meta.get("pruned") or {}).get("parent") == t.source
            and int(m.meta["pruned"].get("to", -1)) == target and m.meta["pruned"].get("protocol", "per-seed") == t.protocol]
    out = []
    for label, cells in t.rows:
        spec = specs.get(label)
        hits = sorted((m for m in sets if spec and _spec_matches(spec, m.meta["pruned"])),
                      key=lambda m: (m.meta["pruned"].get("score_run") or 0, m.key))
        if hits and any(c is not None for c in cells):
            from ..data.preview import selection_png

            png = selection_png(selection(store, hits[0]), per_row, max_classes=PICTURE_CLASSES)
            out.append((f"{label}: {t.source} → IPC {target}", png))
    return out


def _spec_matches(spec: RowSpec, info: dict) -> bool:
    return (info.get("metric") == spec.metric and (spec.direction is None or info.get("direction") == spec.direction)
            and (spec.balance is None or info.get("balance") == spec.balance))


def html_page(store: Store, records: list[EvalRecord], tables: list[Table], which: str = "best") -> str:
    """`to_html` of these tables, with the plot (when matplotlib imports) and each rule's picture."""
    import tempfile

    from ..errors import YocoError

    plot_png, notes = None, []
    try:  # the plot is an extra: without matplotlib the page says so and still has the rest
        with tempfile.TemporaryDirectory(prefix="yoco-report-") as tmp:
            plot_png = plot(records, Path(tmp) / "plot.png", which).read_bytes()
    except YocoError as e:
        notes.append(f"no plot: {e.one_line()}")
    return to_html(to_json(tables), plot_png, rule_pictures(store, tables), notes=notes)
