"""`yoco pipeline`: condense (or take a stored set) -> dynamics -> scores -> prune -> eval -> report.

Every step is an ordinary stage through the store, so a rerun trains nothing and a changed
parameter recomputes only what depends on it. As in the paper, which averages the results of
the three published score files (reproduce_1..3), each dynamics seed s prunes with its own
scores (`score_run=s`; random and k-means draw with seed s) and every pruned set is evaluated
`repeats` times: a report cell pools seeds x repeats. The unpruned source set is evaluated
with the same protocol as the reference line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import UsageError
from ..progress import SILENT, Reporter
from ..store import Manifest, Store

# the main table's rows, in its order; "lbpe" with its defaults (easy, balanced) is YOCO
MAIN_METRICS = ["random", "ssp", "entropy", "aum", "forgetting", "el2n", "ccs", "lbpe"]
ALIASES = {"yoco": "lbpe", "accumulated_margin": "aum", "kmeans": "ssp"}


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
        self.metrics = [ALIASES.get(m, m) for m in self.metrics]
        if self.ccs_beta is not None and "ccs" not in self.metrics:
            reporter.warn("--ccs-beta has no effect without the ccs metric")
        bad = [m for m in self.metrics if m not in MAIN_METRICS + ["loss"]]
        if bad:
            raise UsageError(f"unknown metric {bad[0]!r}", f"use any of {', '.join(MAIN_METRICS)} (lbpe = yoco)")
        from .report import TABLES

        self.tables = list(TABLES) if "all" in self.tables else self.tables
        unknown = [t for t in self.tables if t not in TABLES]
        if unknown:
            raise UsageError(f"unknown table {unknown[0]!r}", f"use any of {', '.join(TABLES)} or all")
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
    """One unit of work, for the progress display."""
    kind: str
    label: str
    cached: bool | None = None


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


def plan_size(req: PipelineRequest) -> int:
    runs = req.seeds if req.per_seed else 1
    pruned = len(rules(req)) * len(req.targets) * runs
    return 1 + 1 + 1 + pruned + pruned + 1  # source, dynamics, scores, prunes, evals, source eval


def run(store: Store, req: PipelineRequest, on_step: Callable[[Step], None] | None = None,
        reporter: Reporter = SILENT) -> dict:
    """Run (or find in the cache) every stage; returns what the report needs to filter on."""
    req.check(reporter)
    tell = on_step or (lambda s: None)
    set_m, cset, label = _source(store, req, tell)
    if req.ipc != cset.ipc:
        raise UsageError(f"the source set has IPC {cset.ipc}, not {req.ipc}", f"pass --ipc {cset.ipc}")
    betas = ccs_betas(req, cset, reporter)  # every check that needs no training, before any training
    dyn_m, table = _dynamics_and_scores(store, req, set_m, cset, tell)
    pruned = _prune_all(store, req, set_m, cset, table, dyn_m, tell, betas)
    evals = [_evaluate(store, req, m, tell) for m in [set_m] + pruned]
    return {"dataset": cset.dataset, "source": label, "set": set_m.key, "dynamics": dyn_m.key,
            "pruned": [m.key for m in pruned], "evals": [m.key for m in evals]}


def _source(store: Store, req: PipelineRequest, tell) -> tuple[Manifest, object, str]:
    from . import condense
    from .sets import load_set, resolve_set, set_label

    if req.set_ref:
        m, cset = resolve_set(store, req.set_ref)
        tell(Step("source", f"using {set_label(store, m)}", True))
        return m, cset, set_label(store, m)
    overrides = {"iterations": req.condense_iterations} if req.condense_iterations else {}
    res = condense.run(store, condense.Request(dataset=req.dataset, method=req.method, ipc=req.ipc,
                                               factor=req.factor, seed=req.seed, device=req.device,
                                               overrides=overrides))
    tell(Step("condense", f"condensed {res.ref}", res.cached))
    return res.manifest, load_set(store, res.manifest), res.ref


def _dynamics_and_scores(store, req, set_m, cset, tell):
    from ..methods.scores import ScoreOptions
    from .dynamics import dynamics_for_set
    from .score import load_scores, scores_for_set

    # the defaults take what the store holds for the set (with enough seeds); options ask exactly
    over = {"epochs": req.dynamics_epochs} if req.dynamics_epochs else {}
    if over or req.seeds != PipelineRequest.seeds:
        over["seeds"] = req.seeds
    before = training_runs(store)
    dyn_m = dynamics_for_set(store, set_m, cset, device=req.device, overrides=over, min_seeds=req.seeds,
                             needs_model=bool({"entropy", "loss", "ssp"} & set(req.metrics)), reporter=reporter)
    tell(Step("dynamics", f"dynamics x{req.seeds}", training_runs(store) == before))
    score_m, cached, _ = scores_for_set(store, set_m, cset, ScoreOptions(), dyn_m=dyn_m, device=req.device)
    tell(Step("scores", "scores", cached))
    return dyn_m, load_scores(store, score_m)


def ccs_betas(req: PipelineRequest, cset, reporter: Reporter = SILENT) -> dict[int, float]:
    """CCS's hard-cut ratio per target: --ccs-beta, else the reference's table. The table has no
    digits row; digits (10 classes, like CIFAR-10) borrows CIFAR-10's ratio for the same IPCs."""
    from ..methods import presets

    if "ccs" not in req.metrics:
        return {}
    if req.ccs_beta is not None:
        return {t: req.ccs_beta for t in req.targets}
    out = {}
    for t in req.targets:
        try:
            out[t] = presets.ccs_beta(cset.dataset, cset.ipc, t)
        except UsageError:
            if cset.dataset != "digits":
                raise
            out[t] = presets.ccs_beta("cifar10", cset.ipc, t)
            reporter.warn(f"no CCS cut ratio for digits {cset.ipc}->{t} in the reference; "
                              f"using CIFAR-10's ({out[t]}), or pass --ccs-beta")
    return out


def _prune_all(store, req, set_m, cset, table, dyn_m, tell, betas) -> list[Manifest]:
    from . import prune as prune_stage

    out = []
    runs = range(req.seeds) if req.per_seed else [None]
    for rule in rules(req):
        for run_ in runs:
            s = run_ if run_ is not None else req.seed
            for t in req.targets:
                opts = prune_stage.PruneOptions(seed=s, score_run=run_, ssp_run=run_ or 0, device=req.device,
                                      ccs_beta=betas.get(t))
                m, cached = prune_stage.prune(store, set_m, cset, t, rule, opts, table, dyn_m)
                tell(Step("prune", f"{rule.label} ipc{t}" + (f" run {run_}" if run_ is not None else ""), cached))
                out.append(m)
    return out


def _evaluate(store, req, m: Manifest, tell) -> Manifest:
    from .evaluate import evaluate_set
    from .sets import load_set, set_label

    over = {"epochs": req.eval_epochs} if req.eval_epochs else {}
    ev = evaluate_set(store, m, load_set(store, m), repeats=req.repeats, device=req.device, **over)
    tell(Step("eval", f"eval {set_label(store, m)}"))
    return ev


TRAINING_STAGES = ("condense", "dynamics-run", "eval-run")


def training_runs(store: Store) -> int:
    """How many trained artifacts the store holds: the pipeline's before/after difference is
    exactly the training it did (0 on a rerun)."""
    return sum(len(list((store.runs / s).glob("*.json"))) for s in TRAINING_STAGES if (store.runs / s).is_dir())
