"""`yoco pipeline`: condense (or take a stored set) -> dynamics -> scores -> prune -> eval -> report.

Every step is an ordinary stage through the store, so a rerun trains nothing and a changed
parameter recomputes only what depends on it. As in the paper, which averages the results of
the three published score files (reproduce_1..3), each dynamics seed s prunes with its own
scores (`stages.prune.prune_runs`: score_run=s; random and k-means draw with seed s) and every
pruned set is evaluated `repeats` times: a report cell pools seeds x repeats. The unpruned source set is evaluated
with the same protocol as the reference line.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..data.condensed import CondensedSet
from ..errors import UsageError
from ..methods import scores as score_methods
from ..progress import SILENT, Reporter
from ..store import Manifest, Store
from . import training
from .sweep import Pool

# the paper's main table's rows, in its order; "lbpe" with its defaults (easy, balanced) is YOCO
MAIN_METRICS = score_methods.paper_metrics()


@dataclass
class PipelineRequest:
    dataset: str = "digits"
    set_ref: str | None = None          # use a stored set instead of condensing
    method: str = "dm"
    ipc: int = 10
    factor: int | None = None
    targets: list[int] = field(default_factory=lambda: [1, 2, 5])
    metrics: list[str] = field(default_factory=lambda: list(MAIN_METRICS))
    tables: list[str] = field(default_factory=lambda: ["main"])  # which report tables to fill
    seeds: int = 3                      # dynamics seeds (the paper's three runs)
    repeats: int = 1                    # eval repeats per pruned set
    per_seed: bool = True               # prune with each run's own scores (paper); else the mean over runs
    condense_iterations: int | None = None
    dynamics_epochs: int | None = None
    eval_epochs: int | None = None
    ccs_beta: float | None = None       # None: the reference's table (CIFAR-10's row for digits)
    device: str = "auto"
    seed: int = 0

    def command_line(self, **outputs) -> str:
        """The `yoco pipeline` invocation that reproduces this request (options that differ from the defaults)."""
        d = PipelineRequest()
        parts = ["yoco pipeline", self.dataset] if not self.set_ref else ["yoco pipeline --set", self.set_ref]
        flags = [("method", "--method"), ("ipc", "--ipc"), ("factor", "--factor"), ("seeds", "--seeds"),
                 ("repeats", "--repeats"), ("condense_iterations", "--condense-iterations"),
                 ("dynamics_epochs", "--dynamics-epochs"), ("eval_epochs", "--eval-epochs"),
                 ("ccs_beta", "--ccs-beta"), ("device", "--device"), ("seed", "--seed")]
        parts += ["--to", " ".join(map(str, self.targets))]
        parts += [f"{flag} {getattr(self, name)}" for name, flag in flags if getattr(self, name) != getattr(d, name)]
        if self.tables != d.tables:
            parts += [f"--tables {t}" for t in self.tables]
        if sorted(self.metrics) != sorted(d.metrics):
            parts += [f"--metrics {m}" for m in self.metrics]
        if not self.per_seed:
            parts.append("--mean-scores")
        parts += [f"--{k} {v}" for k, v in outputs.items() if v]
        return " ".join(parts)

    def check(self, reporter: Reporter = SILENT) -> None:
        self.metrics = [score_methods.get(m).name for m in self.metrics]  # aliases; unknown: one line
        if self.ccs_beta is not None and "ccs" not in self.metrics:
            reporter.warn("--ccs-beta has no effect without the ccs metric")
        from .report import TABLES, check_rows

        self.tables = list(TABLES) if "all" in self.tables else self.tables
        unknown = [t for t in self.tables if t not in TABLES]
        if unknown:
            raise UsageError(f"unknown table {unknown[0]!r}", f"use any of {', '.join(TABLES)} or all")
        if sorted(self.metrics) != sorted(MAIN_METRICS):  # the default fills what rows the tables have
            check_rows(self.metrics, self.tables)
        if self.ipc < 2:
            raise UsageError(f"--ipc must be at least 2 to prune from, got {self.ipc}")
        if not self.targets or any(t < 1 or t >= self.ipc for t in self.targets):
            raise UsageError(f"--to must be between 1 and {self.ipc - 1} (below the source IPC {self.ipc})")
        for name in ("seeds", "repeats"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be at least 1")
        for name in ("condense_iterations", "dynamics_epochs", "eval_epochs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


@dataclass
class Step:
    """One unit of work, for the progress display: told when it starts (`cached` None) and when
    it ends (`cached` True when nothing was computed). `weight` is its expected cost (see
    `plan_steps`), so a display can weigh its bar and its ETA by what is left to compute."""
    kind: str
    label: str
    cached: bool | None = None
    weight: float = 1.0
    index: int = 0  # 1-based position in the plan
    count: int = 0  # steps in the plan
    plan_weight: float = 0.0  # the whole plan's cost (the sum of every step's weight)


# The fixed cost of one optimizer step (dispatch, fork/join) in multiply-adds of convolution:
# a ConvNet-2 step on 8x8 digits (0.12 GMAC) took ~27 ms and a ConvNet-3 step on CIFAR (9.7 GMAC)
# ~600 ms on the 2-core dev CPU, i.e. ~20 ms + 0.06 ms per MMAC (benchmarks/threads.py).
STEP_OVERHEAD_MACS = 3.3e8


def rules(req: PipelineRequest) -> list:
    """The pruning rules that fill the requested report tables (their rows), for the chosen metrics."""
    from ..methods import select
    from .report import TABLES

    out = []
    for name in req.tables:
        for spec in TABLES[name][1]:
            if spec.metric not in req.metrics:
                continue
            hard = None if spec.direction is None else spec.direction == "hard"
            balanced = None if spec.balance is None else spec.balance == "balanced"
            rule = select.rule_for(spec.metric, hard, balanced)
            if rule not in out:
                out.append(rule)
    return out


@dataclass
class _Shape:
    """What the plan needs to know of the source set before it exists."""
    dataset: str
    label: str
    num_classes: int
    channels: int
    size: int
    ipc: int
    factor: int
    condense_weight: float


def plan_steps(store: Store, req: PipelineRequest) -> list[Step]:
    """Every step `run` will tell, in order, with its expected cost: optimizer steps x (their
    multiply-adds + STEP_OVERHEAD_MACS). Cheap: reads the source's shape, trains nothing."""
    from ..nn.device import model_step_macs
    from ..nn.engine import iterations_per_epoch
    from . import evaluate, training

    shape = _source_shape(store, req)

    def cost(spec: dict, batch: int) -> float:
        return (model_step_macs(spec, batch) or 0.0) + STEP_OVERHEAD_MACS

    from .fitted import DataShape

    fit = DataShape(shape.channels, shape.size, shape.num_classes)
    dspec, dcfg = training.plan(training.preset("dynamics", shape.dataset, fit), num_classes=shape.num_classes,
                                channels=shape.channels, image_size=shape.size, schedule="iteration",
                                epochs=req.dynamics_epochs)
    n_source = shape.ipc * shape.num_classes * shape.factor ** 2
    steps = [Step("condense" if not req.set_ref else "source", shape.label, weight=shape.condense_weight),
             Step("dynamics", f"dynamics, {req.seeds} seed(s) x {dcfg.epochs} epochs",
                  weight=req.seeds * dcfg.epochs * iterations_per_epoch(n_source, dcfg.batch_size) * cost(dspec, dcfg.batch_size)),
             Step("scores", "scores", weight=req.seeds * cost(dspec, 128) * (n_source / 128 + 1) / 3)]
    runs = range(req.seeds) if req.per_seed else [None]
    pruned = [(rule, r, t) for rule in rules(req) for t in req.targets for r in runs]  # _prune_all's order
    for rule, r, t in pruned:
        steps.append(Step("prune", f"prune {rule.label} to IPC {t}" + (f", run {r}" if r is not None else ""),
                          weight=STEP_OVERHEAD_MACS))

    def eval_step(label: str, n: int) -> Step:
        espec, ecfg = evaluate.plan(shape.dataset, shape.num_classes, shape.channels, shape.size, shape.ipc,
                                    shape.factor, epochs=req.eval_epochs)
        w = req.repeats * ecfg.epochs * iterations_per_epoch(n, ecfg.batch_size) * cost(espec, ecfg.batch_size)
        return Step("eval", label, weight=w)

    steps.append(eval_step(f"eval {shape.label.split(' ', 1)[-1]}", n_source))
    for rule, r, t in pruned:
        steps.append(eval_step(f"eval {rule.label} IPC {t}" + (f", run {r}" if r is not None else ""),
                               t * shape.factor ** 2 * shape.num_classes))
    total = sum(step.weight for step in steps)
    for i, step in enumerate(steps, 1):
        step.index, step.count, step.plan_weight = i, len(steps), total
    return steps


def _source_shape(store: Store, req: PipelineRequest) -> _Shape:
    from . import condense
    from .datasets import load_real
    from .importing import resolve_set
    from .sets import set_label

    if req.set_ref:
        m, cset = resolve_set(store, req.set_ref)
        c, size = int(cset.images.shape[1]), int(cset.images.shape[-1])
        return _Shape(cset.dataset, f"source {set_label(store, m)}", cset.num_classes, c, size, req.ipc,
                      cset.factor, STEP_OVERHEAD_MACS)  # req.ipc: run() refuses a source of another IPC
    real = load_real(req.dataset, store)
    params, _ = condense.plan(_condense_request(req), real)
    ref = condense.default_ref(real.name, req.method, req.ipc)
    return _Shape(real.name, f"condense {ref}", real.num_classes, real.channels, real.image_size, req.ipc,
                  params["factor"], condense.work(req.method, params, real, STEP_OVERHEAD_MACS))


def _condense_request(req: PipelineRequest):
    from . import condense

    overrides = training.overrides(iterations=req.condense_iterations or None)
    return condense.Request(dataset=req.dataset, method=req.method, ipc=req.ipc, factor=req.factor,
                            seed=req.seed, device=req.device, overrides=overrides)


class _Teller:
    """Numbers the planned steps as they start and end, and forwards each stage's own progress."""

    def __init__(self, plan: list[Step], on_step, on_stage):
        self.plan, self.i = plan, 0
        self.on_step = on_step or (lambda step: None)
        self.on_stage = on_stage or (lambda done, total, status="": None)

    def start(self) -> Step:
        step = self.plan[self.i]
        self.i += 1
        self.on_step(step)
        return step

    def end(self, step: Step, cached: bool) -> None:
        step.cached = bool(cached)
        self.on_step(step)


class _StageReporter(Reporter):
    """The caller's reporter for messages; a stage's progress bars become the pipeline's stage row."""

    def __init__(self, reporter: Reporter, on_stage):
        self.reporter, self.on_stage = reporter, on_stage

    def info(self, text: str) -> None:
        self.reporter.info(text)

    def warn(self, text: str) -> None:
        self.reporter.warn(text)

    @contextmanager
    def progress(self, transient: bool = False, unit: str = "steps"):
        yield _StageBar(self.on_stage)


class _StageBar:
    """rich.progress.Progress's add_task/update/advance, mapped onto on_stage(done, total, status)."""

    def __init__(self, on_stage):
        self.on_stage, self.total, self.done, self.status = on_stage, None, 0.0, ""

    def add_task(self, description: str, total: float | None = None, **fields) -> int:
        self.total, self.done, self.status = total, 0.0, fields.get("status", "")
        return 0

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def update(self, task: int, **kw) -> None:
        self.total = kw.get("total", self.total)
        self.done = kw.get("completed", self.done) + kw.get("advance", 0)
        self.status = kw.get("status", self.status)
        if self.total:
            self.on_stage(self.done, self.total, self.status)


def run(store: Store, req: PipelineRequest, on_step: Callable[[Step], None] | None = None,
        reporter: Reporter = SILENT, on_stage: Callable[..., None] | None = None, pool: Pool | None = None) -> dict:
    """Run (or find in the cache) every stage; returns what the report needs to filter on.

    `on_step(step)` hears each planned step when it starts and again when it ends (`plan_steps`
    says them all up front); `on_stage(done, total, status)` is the running stage's own progress."""
    req.check(reporter)
    tell = _Teller(plan_steps(store, req), on_step, on_stage)
    inner = _StageReporter(reporter, tell.on_stage)
    set_m, cset, label = _source(store, req, tell, inner)
    if req.ipc != cset.ipc:
        raise UsageError(f"the source set has IPC {cset.ipc}, not {req.ipc}", f"pass --ipc {cset.ipc}")
    betas = ccs_betas(req, cset, reporter)  # every check that needs no training, before any training
    own = pool is None
    pool = pool or Pool()  # workers start once, for both sweeps
    try:
        dyn_m, table = _dynamics_and_scores(store, req, set_m, cset, tell, inner, pool)
        pruned = _prune_all(store, req, set_m, cset, table, dyn_m, tell, betas)
        evals = _evaluate_all(store, req, [set_m] + pruned, tell, inner, pool)
    finally:
        if own:
            pool.close()
    return {"dataset": cset.dataset, "source": label, "set": set_m.key, "dynamics": dyn_m.key,
            "pruned": [m.key for m in pruned], "evals": [m.key for m in evals], **pool.summary()}


def _source(store: Store, req: PipelineRequest, tell: _Teller, inner: Reporter) -> tuple[Manifest, CondensedSet, str]:
    from . import condense
    from .importing import resolve_set
    from .sets import load_set, set_label

    step = tell.start()
    if req.set_ref:
        m, cset = resolve_set(store, req.set_ref)
        tell.end(step, True)
        return m, cset, set_label(store, m)
    res = condense.run(store, _condense_request(req), reporter=inner,
                       on_iteration=lambda done, total, loss: tell.on_stage(done, total, f"loss {loss:.4g}"))
    tell.end(step, res.cached)
    return res.manifest, load_set(store, res.manifest), res.ref


def _dynamics_and_scores(store, req, set_m, cset, tell: _Teller, inner: Reporter, pool: Pool):
    from ..methods.scores import ScoreOptions
    from .dynamics import dynamics_for_set
    from .score import load_scores, scores_for_set

    # the defaults take what the store holds for the set (with enough seeds); options ask exactly
    over = training.overrides(epochs=req.dynamics_epochs or None)
    if over or req.seeds != PipelineRequest.seeds:
        over["seeds"] = req.seeds
    step = tell.start()
    before = training_runs(store)
    dyn_m = dynamics_for_set(store, set_m, cset, device=req.device, overrides=over, min_seeds=req.seeds,
                             needs_model=score_methods.needs_model(req.metrics), reporter=inner,
                             pool=pool)
    tell.end(step, training_runs(store) == before)
    step = tell.start()
    score_m, cached, _ = scores_for_set(store, set_m, cset, ScoreOptions(), dyn_m=dyn_m, device=req.device,
                                        reporter=inner)
    tell.end(step, cached)
    return dyn_m, load_scores(store, score_m)


def ccs_betas(req: PipelineRequest, cset, reporter: Reporter = SILENT) -> dict[int, float]:
    """CCS's hard-cut ratio per target: --ccs-beta, else the reference's table, where a dataset it
    never ran borrows the row of its dataset with as many classes (digits: CIFAR-10's), said aloud;
    the same rule as `yoco prune` (stages.prune.ccs_beta), so both make the same sets."""
    from .prune import ccs_beta

    if "ccs" not in req.metrics:
        return {}
    if req.ccs_beta is not None:
        return {t: req.ccs_beta for t in req.targets}
    out = {}
    for t in req.targets:
        out[t], note = ccs_beta(cset, t)
        if note:
            reporter.warn(note)
    return out


def _prune_all(store, req, set_m, cset, table, dyn_m, tell: _Teller, betas) -> list[Manifest]:
    """Every rule x target through `prune_runs`: one set per dynamics run named <name>-run<j> under a
    group <name> (the paper's protocol, the same cache entries `yoco prune` makes), or with
    --mean-scores one set from the averaged scores (<parent>@<rule>-meanscores-ipc<to>)."""
    from . import prune as prune_stage

    out = []
    for rule in rules(req):
        for t in req.targets:
            steps = [tell.start() for _ in range(req.seeds if req.per_seed else 1)]
            opts = prune_stage.PruneOptions(seed=0 if req.per_seed else req.seed, device=req.device,
                                            ccs_beta=betas.get(t))
            pruned = prune_stage.prune_runs(store, prune_stage.Source(set_m, cset, table, dyn_m), t, rule, opts,
                                            mean_scores=not req.per_seed)
            for step in steps:
                tell.end(step, pruned.cached)
            out.extend(pruned.sets)
    return out


def _evaluate_all(store, req, sets: list[Manifest], tell: _Teller, inner: Reporter, pool: Pool) -> list[Manifest]:
    """Every set's evaluation runs as one sweep (the source and all pruned sets, longest first). Each
    set's evaluation group is committed as soon as its last run is in, so `yoco report` shows the
    finished cells while the sweep runs and after an interruption. The stage row shows the sweep's
    done / running / queued / failed runs. Every set's step starts with the sweep and ends when its
    runs are in, in whatever order (the display counts finished sets and times the sweep's own rate);
    a line before it says how many runs and about how long (stages/estimates.announce_sweep)."""
    from .evaluate import finish_eval, plan_eval, set_target

    over = training.overrides(epochs=req.eval_epochs or None)
    tests: dict = {}  # every set tests on the same split: load and prepare it once
    plans = [plan_eval(store, set_target(store, m), repeats=req.repeats, device=req.device, reporter=inner,
                       tests=tests, **over) for m in sets]
    owner = {r.key: i for i, p in enumerate(plans) for j in p.jobs for r in j.runs}
    left = [sum(len(j.runs) for j in p.jobs) for p in plans]
    fresh = [False] * len(plans)
    groups: list[Manifest | None] = [None] * len(plans)
    finished: set[str] = set()
    jobs = [j for p in plans for j in p.jobs]
    _announce_sweep(store, req, inner, pool, plans, jobs)
    steps = [tell.start() for _ in plans]  # one sweep runs every set: their steps all start now

    def on_status(st) -> None:
        tell.on_stage(st.done + st.cached, st.total, f"{st.done} done, {st.running} running, {st.queued} queued, "
                                                     f"{st.failed} failed")

    def on_run(key: str, computed: bool) -> None:
        if key in finished:
            return
        finished.add(key)
        i = owner[key]
        left[i] -= 1
        fresh[i] = fresh[i] or computed
        if left[i] == 0:  # sets finish in any order: commit the set's group, then say so
            groups[i] = _finish_now(store, plans[i])
            tell.end(steps[i], not fresh[i])

    report = pool.run(store, jobs, plans[0].device_type, on_status, on_run=on_run)
    return [g if g is not None else finish_eval(store, p, report)[0] for g, p in zip(groups, plans)]


def _announce_sweep(store: Store, req: PipelineRequest, reporter: Reporter, pool: Pool, plans, jobs) -> None:
    """The line before the evaluation sweep: how many runs are left, and about how long on the pool's workers."""
    from ..nn.device import resolve_device
    from .estimates import announce_sweep

    sizes = [int(p.target.x.shape[0]) for p in plans for j in p.jobs for r in j.runs
             if store.load_run(r.stage, r.key) is None]
    if sizes:
        workers = pool.get(store, jobs, plans[0].device_type).slots()
        announce_sweep(reporter, plans[0].spec, plans[0].cfg, sizes, resolve_device(req.device), workers,
                       plans[0].test_images)


def _finish_now(store: Store, plan) -> Manifest:
    """A set's evaluation group from its runs in the store (all committed), while the sweep goes on."""
    from .evaluate import finish_eval
    from .sweep import Report

    found = {r.key: store.load_run(r.stage, r.key) for j in plan.jobs for r in j.runs}
    return finish_eval(store, plan, Report(manifests={k: m for k, m in found.items() if m is not None}))[0]


TRAINING_STAGES = ("condense", "dynamics-run", "eval-run")


def training_runs(store: Store) -> int:
    """How many trained artifacts the store holds: the pipeline's before/after difference is
    exactly the training it did (0 on a rerun)."""
    return sum(len(list((store.runs / s).glob("*.json"))) for s in TRAINING_STAGES if (store.runs / s).is_dir())
