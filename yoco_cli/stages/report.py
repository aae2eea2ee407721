"""`yoco report`: evaluation results from the store, as tables shaped like the paper's.

Tables (the shapes of docs/method.md §7.2), built only from what was measured, never filled in:
  main      rows Random, SSP, Entropy, AUM, Forgetting, EL2N, CCS, YOCO (each metric with
            the reference's default direction and balance, docs/method.md §4.2); columns IPC_F->IPC_T
  rules     the two-rules ablation: random / random balanced / LBPE easy imbalanced / YOCO
  balance   each metric imbalanced vs balanced (Table 5)
  easyhard  AUM, Forgetting, EL2N hard vs easy, plus YOCO (Table 4)
A cell is mean +- std (numpy's default ddof=0, as the reference's test.py logs it) over
every evaluation run that matches: all repeats of all pruned sets with that rule and
target, i.e. over dynamics seeds (score_run) and eval repeats. The best cell of each
column is marked. One table per (dataset, source set, model, seed protocol): sets pruned
once per dynamics run ("per-seed", the paper's) and sets pruned with scores averaged over
runs ("mean-scores") are different methods and never share a cell. Each table carries a
note saying which LBPE window and which seed protocol produced it.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..store import Manifest, Store


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


@dataclass(frozen=True)
class RowSpec:
    label: str
    metric: str
    direction: str | None = None  # None: any (metrics without a direction)
    balance: str | None = None    # None: any

    def matches(self, r: EvalRecord) -> bool:
        return (r.metric == self.metric and (self.direction is None or r.direction == self.direction)
                and (self.balance is None or r.balance == self.balance))


TABLES: dict[str, tuple[str, list[RowSpec]]] = {
    "main": ("Main comparison (Table 1 shape)", [
        RowSpec("Random", "random", None, "imbalanced"), RowSpec("SSP", "ssp", None, "imbalanced"),
        RowSpec("Entropy", "entropy", "hard", "imbalanced"), RowSpec("AUM", "aum", "hard", "imbalanced"),
        RowSpec("Forgetting", "forgetting", "hard", "imbalanced"), RowSpec("EL2N", "el2n", "hard", "imbalanced"),
        RowSpec("CCS", "ccs"), RowSpec("YOCO", "lbpe", "easy", "balanced")]),
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


@dataclass
class Cell:
    mean: float
    std: float
    n: int
    best: bool = False

    def text(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}"


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


def cell_of(values: list[float]) -> Cell | None:
    if not values:
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return Cell(round(mean, 4), round(std, 4), len(values))


def _column(r: EvalRecord) -> str:
    return f"{r.ipc_from}→{r.ipc_to}"


def build_tables(records: list[EvalRecord], names: list[str] | None = None, which: str = "best",
                 metrics: list[str] | None = None) -> list[Table]:
    """One table per requested shape and per (dataset, source, model) that has runs for it.

    Tables asked for by name keep the paper's full shape (rows without runs say so). By default
    (`names=None`) only tables that compare at least two measured rules are shown, without their
    unmeasured rows (a note lists them), and not twice the same cells under another title; if no
    table compares two, the first with runs is shown."""
    groups: dict[tuple[str, str, str], list[EvalRecord]] = {}
    for r in records:
        groups.setdefault((r.dataset, r.source, r.model), []).append(r)
    out = []
    for (dataset, source, model), recs in sorted(groups.items()):
        full = [v for r in recs if r.ipc_to is None for v in getattr(r, which)]
        for protocol in sorted({r.protocol for r in recs if r.ipc_to is not None}, key=PROTOCOLS.index):
            pruned = [r for r in recs if r.ipc_to is not None and r.protocol == protocol]
            shaped = _tables_of(pruned, full, names, which, metrics, dataset, source, model, protocol)
            out += shaped if names else _overview(shaped)
    return out


PROTOCOLS = ["per-seed", "mean-scores"]


def _tables_of(pruned, full, names, which, metrics, dataset, source, model, protocol) -> list[Table]:
    out = []
    for name in names or list(TABLES):
        title, specs = TABLES[name]
        specs = [s for s in specs if not metrics or s.metric in metrics]
        hits = [r for r in pruned if any(s.matches(r) for s in specs)]
        if not hits:
            continue
        cols = sorted({(r.ipc_from, r.ipc_to) for r in hits}, key=lambda c: (c[0], c[1]))
        columns = [f"{a}→{b}" for a, b in cols]
        rows = []
        for s in specs:
            cells = [cell_of([v for r in pruned if s.matches(r) and _column(r) == col
                              for v in getattr(r, which)]) for col in columns]
            rows.append((s.label, cells))
        _mark_best(rows)
        out.append(Table(name, title, dataset, source, model, columns, rows, cell_of(full), which,
                         [protocol_note(hits)], protocol))
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


def _mark_best(rows) -> None:
    """Mark the best cell of each column, where there are at least two to compare."""
    for j in range(len(rows[0][1]) if rows else 0):
        present = [cells[j] for _, cells in rows if cells[j] is not None]
        if len(present) >= 2:
            top = max(c.mean for c in present)
            for c in present:
                c.best = c.mean == top


# -- rendering ---------------------------------------------------------------------------------
NO_RUNS = "no runs"


def caption(t: Table) -> str:
    ref = f"; unpruned source: {t.reference.text()} (n={t.reference.n})" if t.reference else ""
    mean = ", pruned with scores averaged over dynamics runs" if t.protocol == "mean-scores" else ""
    return f"{t.title}: {t.dataset}, source {t.source}, model {t.model}{mean}, {t.which} top-1 % mean ± std{ref}"


def to_rich(t: Table):
    from rich.table import Table as RichTable

    rt = RichTable(title=caption(t), title_justify="left", header_style="bold",
                   caption="; ".join(t.notes) or None, caption_justify="left")
    rt.add_column("rule")
    for c in t.columns:
        rt.add_column(c, justify="right")
    for label, cells in t.rows:
        rt.add_row(label, *[("[bold green]" + c.text() + " *[/]" if c.best else c.text()) if c else
                            f"[dim]{NO_RUNS}[/]" for c in cells])
    return rt


def to_markdown(t: Table) -> str:
    lines = [f"**{caption(t)}**", "", "| rule | " + " | ".join(t.columns) + " |",
             "|---|" + "---:|" * len(t.columns)]
    for label, cells in t.rows:
        txt = [(f"**{c.text()}**" if c.best else c.text()) if c else NO_RUNS for c in cells]
        lines.append(f"| {label} | " + " | ".join(txt) + " |")
    lines += ["", *(f"_{n}_" for n in t.notes)] if t.notes else []
    return "\n".join(lines) + "\n"


def to_csv(tables: list[Table]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["table", "dataset", "source", "model", "which", "rule", "column", "mean", "std", "n", "best"])
    for t in tables:
        for label, cells in t.rows:
            for col, c in zip(t.columns, cells):
                w.writerow([t.name, t.dataset, t.source, t.model, t.which, label, col,
                            *(["", "", 0, ""] if c is None else [c.mean, c.std, c.n, int(c.best)])])
    return buf.getvalue()


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
    """Accuracy against target IPC, one line per main-table rule, error bars = std."""
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
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.5), squeeze=False)
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
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    from ..files import atomic_write

    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return Path(path)



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
    seen: set[tuple[str, str]] = set()
    merged: dict[tuple[str, str], EvalRecord] = {}  # (set digest, model) -> one record
    for ev in store.all_runs("eval"):
        set_m = sets.get(ev.inputs.get("set", ""))
        if set_m is None:
            continue  # full-train-split evaluations and evals of deleted sets
        fresh = _record(store, ev, set_m, set_label)
        rec = merged.setdefault((ev.inputs["set"], fresh.model), fresh)
        for rep in ev.meta.get("per_repeat", []):
            out_digest = ev.outputs.get(f"seed{rep['seed']}/result", {}).get("digest", str(rep["seed"]))
            if (ev.inputs["set"], out_digest) in seen:
                continue
            seen.add((ev.inputs["set"], out_digest))
            rec.best.append(_pct(rep["best"]))
            rec.last.append(_pct(rep["last"]))
    return [r for r in merged.values() if r.best]


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
              "std over dynamics seeds × evaluation repeats; the best cell of each column is in bold; `no runs` marks",
              "a cell that was not measured. The line under each table says which LBPE window and which seed",
              "protocol produced it.", ""]
    lines += [to_markdown(t) for t in tables]
    if plot_name:
        lines += [f"![accuracy vs target IPC]({plot_name})", ""]
    return "\n".join(lines)
