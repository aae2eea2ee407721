"""`yoco pipeline`: the whole workflow on one dataset, every step cached."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from .common import (
    AddressOpt,
    DeviceOpt,
    ExecutorOpt,
    JsonOpt,
    MaxParallelOpt,
    MultiTargetCommand,
    complete_datasets,
    complete_methods,
    complete_metrics,
    complete_set_refs,
    get_store,
    method_help,
    metric_help,
    parse_targets,
    say_where,
    set_json,
)


def register(app: typer.Typer) -> None:
    app.command("pipeline", cls=MultiTargetCommand)(pipeline_cmd)


def pipeline_cmd(
    dataset: Annotated[str, typer.Argument(
        metavar="DATASET", help="Real dataset to condense (digits, cifar10, folder:PATH, ...).",
        autocompletion=complete_datasets)] = "digits",
    set_ref: Annotated[str | None, typer.Option(
        "--set", help="Start from this stored set (name, key or file) instead of condensing.",
        autocompletion=complete_set_refs, show_default=False)] = None,
    method: Annotated[str, typer.Option("--method", help="Condensation method when no --set: " + method_help()
                                        + ". dm here (minutes on a CPU); `yoco condense` defaults to idc, the "
                                          "paper's source sets.", autocompletion=complete_methods)] = "dm",
    ipc: Annotated[int, typer.Option("--ipc", help="Source IPC (condensed, then pruned from).")] = 10,
    factor: Annotated[int | None, typer.Option("--factor", help="Multi-formation factor (default: preset).",
                                                  show_default=False)] = None,
    to: Annotated[list[str], typer.Option("--to", metavar="IPC", help="Target IPCs: --to 1 2 5 or --to 1,2,5.")] = ["1", "2", "5"],  # noqa: B006  typer shows it, never mutates it
    metrics: Annotated[list[str] | None, typer.Option(
        "--metric", "--metrics", "-m", help="Metrics to compare (repeatable; default: every row of the paper's "
        "table): " + metric_help(None),
        autocompletion=complete_metrics, show_default=False)] = None,
    tables: Annotated[list[str] | None, typer.Option(
        "--tables", help="Report tables to fill: main (default), rules, balance, easyhard or all (repeatable).",
        show_default=False)] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Dynamics seeds; each prunes with its own scores.")] = 3,
    repeats: Annotated[int, typer.Option("--repeats", help="Evaluation repeats per pruned set.")] = 1,
    mean_scores: Annotated[bool, typer.Option(
        "--mean-scores", help="Prune once with scores averaged over seeds instead of once per seed.")] = False,
    condense_iterations: Annotated[int | None, typer.Option("--condense-iterations", show_default=False,
                                                               help="Override the preset's iterations.")] = None,
    dynamics_epochs: Annotated[int | None, typer.Option("--dynamics-epochs", show_default=False,
                                                           help="Override the preset's dynamics epochs.")] = None,
    eval_epochs: Annotated[int | None, typer.Option("--eval-epochs", show_default=False,
                                                       help="Override the preset's evaluation epochs.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write accuracy vs target IPC to this PNG.")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Also write the report as Markdown here.")] = None,
    ccs_beta: Annotated[float | None, typer.Option(
        "--ccs-beta", help="CCS's hard-cut ratio (default: the reference's table; CIFAR-10's for digits).",
        show_default=False)] = None,
    device: DeviceOpt = "auto",
    executor: ExecutorOpt = None,
    address: AddressOpt = None,
    max_parallel: MaxParallelOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the condensation.")] = 0,
    json_: JsonOpt = False,
) -> None:
    """Condense, record dynamics, score, prune to every target with every metric, evaluate, report.

    Each step goes through the cache: a second run trains nothing and prints the same report.

    Example: `yoco pipeline digits --to 1 2 5 --seeds 3 --repeats 1 --plot digits.png`
    """
    import time

    from ..stages import pipeline as pipeline_stage
    from ..stages import report as rep

    o = set_json(json_)
    store = get_store()
    req = pipeline_stage.PipelineRequest(dataset=dataset, set_ref=set_ref, method=method, ipc=ipc, factor=factor,
                            targets=parse_targets(to), metrics=metrics or list(pipeline_stage.MAIN_METRICS),
                            tables=tables or ["main"], seeds=seeds,
                            repeats=repeats, per_seed=not mean_scores, condense_iterations=condense_iterations,
                            dynamics_epochs=dynamics_epochs, eval_epochs=eval_epochs, ccs_beta=ccs_beta,
                            device=device, seed=seed)
    from ..executors import Setting
    from ..stages.sweep import Pool

    setting = Setting.parse(executor, address, max_parallel)  # validated once, before any work
    req.check(o)
    from ..files import check_output_file

    for path in (plot, markdown):
        if path is not None:
            check_output_file(path)
    if plot is not None:
        rep.check_plot_support()  # before hours of training, not after
    t0, trained0 = time.perf_counter(), pipeline_stage.training_runs(store)
    with o.progress(transient=True, unit="pipeline") as prog, Pool(setting) as pool:
        bar = PipelineBar(prog)
        result = pipeline_stage.run(store, req, bar.on_step, reporter=o, on_stage=bar.on_stage, pool=pool)
    trained = pipeline_stage.training_runs(store) - trained0
    records = rep.filter_records(rep.collect(store), result["dataset"], result["source"])
    protocol = "per-seed" if req.per_seed else "mean-scores"  # sets of the other protocol are other methods
    records = [r for r in records if r.ipc_to is None or (r.ipc_to in req.targets and r.protocol == protocol)]
    best = rep.build_tables(records, req.tables, "best", req.metrics)
    verdicts = next((found for t in best if (found := rep.verdicts(t))), [])
    payload = {**result, "trained_now": trained, "seconds": round(time.perf_counter() - t0, 1),
               "tables": rep.to_json(best), "verdicts": [asdict(v) for v in verdicts]}
    if o.json_mode:
        o.data(payload)
    else:
        for t in best:
            o.out.print(rep.to_rich(t))
        for v in verdicts:  # the headline: does YOCO's lead or deficit hold at this n?
            o.out.print(v.text(req.seeds, req.repeats), markup=False, highlight=False)
    if plot is not None:
        rep.plot(records, plot)
        o.info(f"wrote {plot}")
    if markdown is not None:
        last = rep.build_tables(records, req.tables, "last", req.metrics)
        _write_document(rep, req, best + last, result, trained, payload["seconds"], markdown, plot)
        o.info(f"wrote {markdown}")
    o.info("more tables (rules, balance, easyhard) and formats: `yoco report --help`")
    say_where(o, result)
    o.info(f"pipeline done in {payload['seconds']} s; {trained} training run(s) now"
           + (" (everything came from the cache)" if trained == 0 else ""))


def _write_document(rep, req, tables, result, trained, seconds, path: Path, plot: Path | None) -> None:
    import os

    from ..errors import IntegrityError

    dyn = get_store().load_run("dynamics", result["dynamics"])
    if dyn is None:  # stored by the run that just ended: only a concurrent `yoco gc` or `rm` removes it
        raise IntegrityError(f"the dynamics {result['dynamics'][:12]} left the store before the report was written",
                             "run the same `yoco pipeline` again: it recomputes only what is missing")
    settings = {
        "source set": f"{result['source']} (IPC {req.ipc})",
        "dynamics": f"{req.seeds} seed(s), {dyn.meta.get('epochs', '?')} epochs, "
                    f"model {dyn.meta.get('model', {}).get('name', '?')}",
        "evaluation": f"{req.repeats} repeat(s) per pruned set, pruning "
                      + ("once per dynamics seed with its own scores" if req.per_seed else "with the mean scores"),
        "this run": f"{seconds} s, {trained} training run(s) (0 = everything from the cache)",
    }
    plot_name = os.path.relpath(plot, path.parent) if plot is not None else None
    command = req.command_line(markdown=path, plot=plot)
    text = rep.results_document(tables, command, settings, plot_name)
    from ..files import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


class PipelineBar:
    """Two rows: the pipeline (the running step's label, a bar and an ETA weighted by each step's
    expected cost) and the running stage's own bar, shown only while a stage reports progress.

    Steps run one at a time, except a sweep's (the evaluations): all its steps start together and
    each ends when its set is in, in any order, so the bar counts finished sets. The rate is wall
    seconds per unit of cost on steps that computed (cached ones finish at once and are not speed),
    measured per kind of step: during a sweep its own measured rate prices what is left, before its
    first result the rate of the steps before it. Between two measurements the ETA counts down with
    the clock, so it neither freezes nor climbs while runs are in flight; a partly cached rerun errs
    long, never short."""

    def __init__(self, prog: Progress, clock: Callable[[], float] | None = None) -> None:
        import time

        self.prog, self.clock = prog, clock or time.perf_counter
        self.main = prog.add_task("planning the pipeline", total=None, count="", status="")
        self.stage = prog.add_task("", total=None, count="", status="", visible=False)
        self.total = self.done = 0.0
        self.spent: dict[str, float] = {}     # kind -> wall seconds of its computing steps
        self.computed: dict[str, float] = {}  # kind -> cost of its computing steps
        self.running: dict[int, tuple] = {}   # step index -> (step, start time)
        self.shared = False                   # steps running together (a sweep) since the bar was last idle
        self.mark = 0.0                       # wall time accounted up to (parallel steps share it)
        self.fraction = 0.0                   # of the one running step, from its own stage bar
        self.estimate: tuple[float, float] | None = None  # (seconds left, when measured)

    @property
    def step(self):
        """The running step when it runs alone (its stage bar is its own progress), else None; the
        last set of a sweep still shares the sweep's bar, which counts every set's runs."""
        return next(iter(self.running.values()))[0] if len(self.running) == 1 and not self.shared else None

    def on_step(self, step) -> None:
        now = self.clock()
        self.total = float(step.plan_weight)
        if step.cached is None:  # starting
            if not self.running:
                self.mark = now
            self.shared = bool(self.running)
            self.running[step.index] = (step, now)
            self.fraction = 0.0
            self.prog.update(self.stage, visible=False, completed=0, total=None, description="", count="",
                             status="")
        else:  # finished
            _, started = self.running.pop(step.index, (step, now))
            if not step.cached:
                self.spent[step.kind] = self.spent.get(step.kind, 0.0) + now - max(self.mark, started)
                self.computed[step.kind] = self.computed.get(step.kind, 0.0) + step.weight
                self.mark = now
            self.done += step.weight
            self.fraction = 0.0
            if not self.running:
                self.shared = False
                self.prog.update(self.stage, visible=False)
        self.prog.update(self.main, description=self._label())
        self._measure(now)

    def _label(self) -> str:
        if not self.running:
            return "planning the pipeline" if not self.done else "finishing"
        steps = sorted(self.running.values(), key=lambda p: p[0].index)
        first = steps[0][0]
        if len(steps) == 1:
            return f"step {first.index}/{first.count}: {first.label}"
        return f"steps {first.index}-{steps[-1][0].index}/{first.count}: {len(steps)} {first.kind} steps left"

    def on_stage(self, done, total, status: str = "") -> None:
        if not total or not self.running:
            return
        kind = next(iter(self.running.values()))[0].kind
        if self.step is not None:
            self.fraction = min(1.0, float(done) / float(total))
        self.prog.update(self.stage, visible=True, total=total, completed=done, description=f"  {kind}",
                         count=f"{done:g}/{total:g}", status=status)
        self._measure(self.clock())

    def _rate(self) -> float | None:
        """Seconds per unit of cost: the running kind's own, else every computed step's."""
        kinds = {s.kind for s, _ in self.running.values()}
        kind = kinds.pop() if len(kinds) == 1 else None
        if kind is not None and self.computed.get(kind):
            return self.spent[kind] / self.computed[kind]
        cost = sum(self.computed.values())
        return sum(self.spent.values()) / cost if cost > 0 else None

    def _measure(self, now: float) -> None:
        """A fresh estimate from what is known now; `eta` counts it down until the next one."""
        step = self.step
        left = self.total - self.done - (step.weight * self.fraction if step is not None else 0.0)
        rate = self._rate()
        if rate is None and step is not None and self.fraction > 0 and now > self.running[step.index][1]:
            rate = (now - self.running[step.index][1]) / (step.weight * self.fraction)  # inside the first step
        self.estimate = (max(0.0, left) * rate, now) if rate is not None else None
        self._refresh()

    def eta(self) -> float | None:
        """Seconds left, or None before anything was timed."""
        if self.estimate is None:
            return None
        seconds, at = self.estimate
        return max(0.0, seconds - (self.clock() - at))

    def _refresh(self) -> None:
        from ..nn.estimate import duration

        step = self.step
        done = self.done + (step.weight * self.fraction if step is not None else 0.0)
        eta = self.eta()
        self.prog.update(self.main, total=self.total or None, completed=done,
                         status=f"ETA {duration(eta)}" if eta is not None else "")
