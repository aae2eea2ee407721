"""yoco from Python: the whole workflow as plain functions, the same stages and cache as the CLI.

Every function takes plain arguments (a ref name, a key prefix, a file path or a result object
for a set; keywords named like the CLI's options) and returns a small result object with what
a script needs: tensors, kept indices, accuracies, and the ref and key of what it stored.
The same arguments give the same artifacts as the CLI, from the same cache (`home=`, else
YOCO_HOME, else the user data folder).

Nothing here touches the host process's settings: call `tune_process()` to apply what the
CLI applies (glibc malloc tuning; a torch thread count). Progress and notes are dropped
unless you pass a `reporter` (see yoco_cli/progress.py).

    >>> import yoco_cli as yoco
    >>> src = yoco.condense("digits", ipc=10, method="random")          # doctest: +SKIP
    >>> small = yoco.prune(src, to=1, metric="lbpe", balanced=True)      # doctest: +SKIP
    >>> yoco.evaluate(small[0], repeats=1).best_mean                     # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .progress import SILENT, Reporter


# -- results ----------------------------------------------------------------------------------
@dataclass
class SetResult:
    """A stored condensed (or pruned) set: `set` holds its tensors (`set.decoded()` for images)."""
    ref: str | None
    key: str
    set: Any  # data.condensed.CondensedSet
    cached: bool = False
    indices: list[int] | None = None  # pruned sets: kept decoded indices in the parent


@dataclass
class DynamicsResult:
    """Recorded training dynamics: one `data.dynamics.Dynamics` per seed (per-epoch statistics)."""
    ref: str | None
    key: str
    runs: list
    seeds: list[int]
    computed: list[int] = field(default_factory=list)  # the seeds trained by this call


@dataclass
class ScoreResult:
    """Every score of a set: `scores[metric]` is the per-sample score (mean over runs), and
    `per_run[metric]` one tensor per dynamics run."""
    ref: str | None
    key: str
    scores: dict
    per_run: dict
    cached: bool = False


@dataclass
class EvalResult:
    """Test accuracy (fractions, not percent) of fresh networks trained on a set, over repeats."""
    key: str
    best_mean: float
    best_std: float
    last_mean: float
    last_std: float
    per_repeat: list
    cached: bool = False


@dataclass
class FetchResult:
    name: str
    kind: str
    key: str
    cached: bool
    summary: str


SetLike = str | Path | SetResult


# -- helpers ------------------------------------------------------------------------------------
def _store(home: str | Path | None):
    from .store import Store

    return Store(Path(home).expanduser() if home is not None else None).ensure()


def _ref_of(value: Any, param: str, *results: type[SetResult | DynamicsResult | ScoreResult]) -> str:
    """A ref name, key prefix or path: given as text, a Path, or one of the API's own result objects.
    Anything else is a UsageError naming the parameter and what it takes (never a repr of tensors)."""
    if isinstance(value, (str, Path)):
        return str(value)
    if results and isinstance(value, results):
        return value.key
    took = ", ".join(["a ref name", "a key prefix", "a path"] + [r.__name__ for r in results])
    raise UsageError(f"{param}: a {type(value).__name__} is not something yoco can name",
                     f"{param} takes {took}")


def _set(store, target: SetLike, param: str = "target"):
    """(manifest, CondensedSet) of a ref, key prefix, file path or SetResult."""
    from .stages.importing import resolve_set

    return resolve_set(store, _ref_of(target, param, SetResult))


def _pool(executor: str | None, address: str | None, max_parallel: int | None):
    """Where this call's training runs go (as the CLI's --executor/--address/--max-parallel)."""
    from .executors import Setting
    from .stages.sweep import Pool

    return Pool(Setting.parse(executor, address, max_parallel))


def _ref(store, m) -> str | None:
    names = store.refs_to(m.stage, m.key)
    return names[0] if names else None


def tune_process(threads: int | str | None = None) -> None:
    """Apply the process-wide settings the CLI applies: glibc malloc tuning (large activations stay
    in the heap) and its thread policy: `threads=N` pins torch's intra-op threads, `"auto"` or None
    (then YOCO_THREADS or OMP_NUM_THREADS if set) picks per workload, one thread for small models on
    small images (yoco_cli/nn/device.py). The library never does this itself."""
    from .nn.device import configure_threads, tune_malloc

    tune_malloc()
    policy = configure_threads(threads)
    if policy.fixed is not None:
        import torch

        torch.set_num_threads(policy.fixed)


# -- the workflow -------------------------------------------------------------------------------
def load_set(target: SetLike, *, home=None) -> SetResult:
    """A condensed set by ref (`digits/random/ipc10`), key prefix or file (imported on the way).

    >>> import yoco_cli as yoco
    >>> s = yoco.load_set("digits/random/ipc10")                         # doctest: +SKIP
    >>> images, labels = s.set.decoded()                                 # doctest: +SKIP
    """
    store = _store(home)
    m, cset = _set(store, target)
    return SetResult(_ref(store, m), m.key, cset)


def fetch(*names: str, home=None, offline: bool | None = None, timeout: float = 60.0, retries: int = 3,
          reporter: Reporter = SILENT) -> list[FetchResult]:
    """Download published sets, dynamics or datasets into the store (verified, resumable).

    >>> import yoco_cli as yoco
    >>> yoco.fetch("idc", "cifar10")                                     # doctest: +SKIP
    """
    from .remote import registry
    from .stages import downloads, fetching

    store = _store(home)
    hubs = [n for n in names if n.startswith("hf:")]  # Hugging Face repos: fetch_hub, below
    # None and False alike leave the choice to YOCO_OFFLINE (downloads.offline_requested)
    opts = downloads.Options(offline=bool(offline), timeout=timeout, retries=retries)
    rest = [n for n in names if n not in hubs]
    outcomes = fetching.fetch(store, registry.load().select(rest), opts, reporter=reporter) if rest else []
    return [FetchResult(o.name, o.kind, o.key, o.cached, o.summary) for o in outcomes] + \
        [fetch_hub(n, home=home, offline=bool(offline), reporter=reporter) for n in hubs]


def condense(dataset: str = "digits", *, ipc: int = 10, method: str = "idc", factor: int | None = None,
             seed: int = 0, iterations: int | None = None, name: str | None = None, device: str = "auto",
             home=None) -> SetResult:
    """Condense a real dataset (idc, dm, random, herding) into `ipc` images per class.

    >>> import yoco_cli as yoco
    >>> src = yoco.condense("digits", ipc=10, method="random", seed=0)   # doctest: +SKIP
    >>> src.ref                                                          # doctest: +SKIP
    'digits/random/ipc10'
    """
    from .stages import condense as condense_stage
    from .stages.sets import load_set as load

    store = _store(home)
    overrides = {"iterations": iterations} if iterations is not None else {}
    res = condense_stage.run(store, condense_stage.Request(dataset=dataset, method=method, ipc=ipc, factor=factor,
                                                           seed=seed, device=device, overrides=overrides,
                                                           name=name))
    return SetResult(res.ref, res.manifest.key, load(store, res.manifest), res.cached)


def dynamics(target: SetLike, *, seeds: int = 3, epochs: int | None = None, batch_size: int | None = None,
             lr: float | None = None, model: str | None = None, aug: str | None = None,
             cutmix: float | None = None, test_every: int | None = None, records: bool = False,
             batched: str = "auto", compile: str = "auto", device: str = "auto", name: str | None = None,
             executor: str | None = None, address: str | None = None, max_parallel: int | None = None,
             home=None, reporter: Reporter = SILENT) -> DynamicsResult:
    """Train `seeds` models on a set and record their per-epoch, per-sample statistics
    (`records=True` also keeps per-class log-probabilities; `executor`, `address`, `max_parallel`
    say where the runs go, as the CLI's options do).

    >>> import yoco_cli as yoco
    >>> d = yoco.dynamics("digits/random/ipc10", seeds=1, epochs=20)     # doctest: +SKIP
    >>> d.runs[0].epochs                                             # doctest: +SKIP
    20
    """
    from .stages import dynamics as dynamics_stage
    from .stages import training

    training.check_switches(batched=batched, compile=compile)
    store = _store(home)
    set_m, cset = _set(store, target)
    over = training.overrides(epochs=epochs, batch_size=batch_size, lr=lr, model=model, aug=aug, cutmix=cutmix,
                              test_every=test_every)
    with _pool(executor, address, max_parallel) as pool:
        group, info = dynamics_stage.compute_dynamics(store, set_m, cset, seeds=seeds, device=device, ref=name,
                                                      batched=batched, compile=compile, records=records,
                                                      reporter=reporter, pool=pool, **over)
    runs = [dyn for dyn, _model, _spec in dynamics_stage.load_dynamics(store, group)]
    return DynamicsResult(_ref(store, group), group.key, runs, list(group.meta["seeds"]),
                          sorted(info.get("computed") or []))


def score(target: SetLike | DynamicsResult, *, k: int | None = None, stop_epoch: int | None = None,
          use_loss: bool = False, el2n_window: tuple[int, int] = (0, 10), never_learned: str = "zero",
          aum_mean: bool = False, seed: int = 0, dynamics_epochs: int | None = None,
          dynamics_seeds: int | None = None, device: str = "auto", home=None,
          reporter: Reporter = SILENT) -> ScoreResult:
    """Every score (lbpe, el2n, forgetting, aum, entropy, loss, random) of a set's dynamics,
    computing the dynamics with the preset first when the set has none.

    >>> import yoco_cli as yoco
    >>> s = yoco.score("digits/random/ipc10", dynamics_epochs=20)        # doctest: +SKIP
    >>> s.scores["lbpe"].shape                                           # doctest: +SKIP
    torch.Size([100])
    """
    from .methods.scores import ScoreOptions
    from .stages import training
    from .stages.score import find_set, load_scores, scores_for_set
    from .stages.sets import load_set as load

    if len(el2n_window) != 2:
        raise UsageError(f"el2n_window takes two epochs, got {len(el2n_window)}", "e.g. el2n_window=(0, 10)")
    start, end = el2n_window
    store = _store(home)
    opts = ScoreOptions(k=k, stop_epoch=stop_epoch, use_loss=use_loss, el2n_window=(start, end),
                        never_learned=never_learned, aum_mean=aum_mean, seed=seed)
    dyn_m = None
    if isinstance(target, DynamicsResult):
        dyn_m = store.resolve(target.key, stage="dynamics", what="dynamics artifact")
        if not dyn_m.inputs:
            raise UsageError(f"the dynamics {target.key[:12]} name no set", "score the set itself")
        set_m = next((s for d in sorted(set(dyn_m.inputs.values())) if (s := find_set(store, d)) is not None), None)
        if set_m is None:
            raise UsageError(f"the set of the dynamics {target.key[:12]} is not in this store",
                             "import or condense that set again, or score a set directly")
        cset = load(store, set_m)
    else:
        set_m, cset = _set(store, target)
    over = training.overrides(epochs=dynamics_epochs, seeds=dynamics_seeds)
    m, cached, _ = scores_for_set(store, set_m, cset, opts, dyn_m=dyn_m, device=device, dynamics=over,
                                  reporter=reporter)
    table = load_scores(store, m)
    mean = {name: table.tensors[f"{name}/mean"] for name in table.metrics if f"{name}/mean" in table.tensors}
    per_run = {name: [table.tensors[f"{name}/seed{r}"] for r in range(table.runs)
                      if f"{name}/seed{r}" in table.tensors] for name in mean}
    return ScoreResult(_ref(store, m), m.key, mean, per_run, cached)


def prune(target: SetLike, *, to: int | list[int], metric: str = "lbpe", hard: bool | None = None,
          balanced: bool | None = None, key: str | None = None, seed: int = 0,
          score_run: int | None = None, mean_scores: bool = False, k: int | None = None,
          stop_epoch: int | None = None, scores: str | ScoreResult | None = None,
          dynamics: str | DynamicsResult | None = None,
          dynamics_epochs: int | None = None, dynamics_seeds: int | None = None,
          ccs_beta: float | None = None, ccs_strata: int = 50, ccs_random: bool = False,
          ssp_duplicates: str = "fill", ssp_run: int = 0, device: str = "auto", home=None,
          reporter: Reporter = SILENT) -> list[SetResult]:
    """Prune a set to smaller IPCs with one of the paper's rules (YOCO: metric="lbpe", easy,
    balanced; `key="forgetting_easy_balance"` names a rule the reference's way). As in the paper,
    each dynamics run prunes with its own scores: one result per target and run (refs
    `...-ipcN-run<j>` when there are several), each with the kept decoded indices.
    `score_run=j` keeps run j only; `mean_scores=True` prunes once per target with the scores
    averaged over runs (a different method, named `...-meanscores-ipcN`). CCS (`ccs_beta`,
    `ccs_strata`, `ccs_random`) and SSP (`ssp_duplicates`, `ssp_run`) take the CLI's options;
    the CLI and this function run the same stage entry point (stages/prune.run).

    >>> import yoco_cli as yoco
    >>> [one] = yoco.prune("digits/random/ipc10", to=1, metric="lbpe", balanced=True)  # doctest: +SKIP
    >>> len(one.indices)                                                 # doctest: +SKIP
    10
    """
    from .methods import select
    from .methods.scores import ScoreOptions
    from .stages import prune as prune_stage
    from .stages import training
    from .stages.sets import load_set as load

    store = _store(home)
    set_m, cset = _set(store, target)
    rule = select.parse_key(key) if key else select.rule_for(metric, hard, balanced)
    opts = prune_stage.PruneOptions(seed=seed, score_run=score_run, ccs_beta=ccs_beta, ccs_strata=ccs_strata,
                                    ccs_random=ccs_random, ssp_duplicates=ssp_duplicates, ssp_run=ssp_run,
                                    device=device)
    scores_ref = _ref_of(scores, "scores", ScoreResult) if scores is not None else None
    dyn_ref = _ref_of(dynamics, "dynamics", DynamicsResult) if dynamics is not None else None
    req = prune_stage.PruneRequest(rule, [to] if isinstance(to, int) else list(to), opts,
                                   ScoreOptions(k=k, stop_epoch=stop_epoch), scores_ref=scores_ref, dynamics_ref=dyn_ref,
                                   dynamics=training.overrides(epochs=dynamics_epochs, seeds=dynamics_seeds),
                                   mean_scores=mean_scores)
    out = []
    for group in prune_stage.run(store, set_m, cset, req, reporter=reporter):
        for m in group.sets:
            pruned = load(store, m)
            kept = [int(i) for i in pruned.origin.tolist()] if pruned.origin is not None else None
            out.append(SetResult(_ref(store, m), m.key, pruned, group.cached, kept))
    return out


def evaluate(target: SetLike | list[SetResult], *, repeats: int = 3, model: str | None = None,
             epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
             aug: str | None = None, cutmix: float | None = None, full: bool = False, batched: str = "auto",
             compile: str = "auto", device: str = "auto", executor: str | None = None,
             address: str | None = None, max_parallel: int | None = None, home=None,
             reporter: Reporter = SILENT) -> Any:
    """The paper's evaluation (docs/method.md §5): train `repeats` fresh networks on the set, test on the real
    test split. `full=True` (or a dataset name such as "digits") evaluates the whole training split.
    A list of sets (what `prune` returns: one per dynamics run) gives a list of results, in order.

    >>> import yoco_cli as yoco
    >>> r = yoco.evaluate("digits/random/ipc10", repeats=1, epochs=20)   # doctest: +SKIP
    >>> 0.0 <= r.best_mean <= 1.0                                        # doctest: +SKIP
    True
    """
    from .stages import training
    from .stages.datasets import known

    training.check_switches(batched=batched, compile=compile)
    store = _store(home)
    params = training.overrides(model=model, epochs=epochs, batch_size=batch_size, lr=lr, aug=aug, cutmix=cutmix)
    params.update(batched=batched, compile=compile)
    targets = list(target) if isinstance(target, (list, tuple)) else [target]
    resolved: list[tuple[Any, Any, str | None]] = []  # (set manifest, set, None) or (None, None, dataset)
    for i, t in enumerate(targets):  # every name resolves before any training starts
        if isinstance(t, str) and (t in known() or t.startswith("folder:")):
            resolved.append((None, None, t))
            continue
        set_m, cset = _set(store, t, "target" if t is target else f"target[{i}]")
        resolved.append((None, None, cset.dataset) if full else (set_m, cset, None))
    with _pool(executor, address, max_parallel) as pool:
        out = [_evaluate_one(store, r, pool, reporter, repeats=repeats, device=device, **params) for r in resolved]
    return out if isinstance(target, (list, tuple)) else out[0]


def _evaluate_one(store, resolved: tuple, pool, reporter: Reporter, **params) -> EvalResult:
    from .stages import evaluate as eval_stage

    set_m, cset, dataset = resolved
    m, info = eval_stage.run_eval(store, set_m, cset, dataset, pool=pool, reporter=reporter, **params)
    meta = m.meta
    return EvalResult(m.key, meta["best_mean"], meta["best_std"], meta["last_mean"], meta["last_std"],
                      list(meta["per_repeat"]), not info.get("computed"))


def report(*, table: list[str] | None = None, which: str = "best", dataset: str = "", source: str = "",
           model: str = "", vs: str | None = "yoco", home=None) -> list:
    """The paper's tables from every evaluation in the store: `stages.report.Table` objects
    (`to_markdown(t)`, `to_json([t])` there render them). Each cell carries its paired difference
    to the `vs` row (`yoco report --vs`; None: none), docs/statistics.md.

    >>> import yoco_cli as yoco
    >>> tables = yoco.report(table=["main"])                             # doctest: +SKIP
    """
    from .stages import report as report_stage

    records = report_stage.filter_records(report_stage.collect(_store(home)), dataset, source, model)
    return report_stage.build_tables(records, table or None, which, vs=vs)


# -- the Hugging Face Hub (docs/hub.md) ----------------------------------------------------------
def fetch_hub(spec: str, *, name: str | None = None, dataset: str | None = None, yes: bool = False,
              offline: bool = False, home=None, reporter: Reporter = SILENT) -> FetchResult:
    """A Hub dataset repo (`hf:OWNER/NAME[@REVISION]`) as a stored set, named `hf/OWNER/NAME`;
    `yes=True` fetches repos over 1 GB (refused otherwise). `fetch("hf:...")` calls this.

    >>> import yoco_cli as yoco
    >>> yoco.fetch("hf:he-yang/2025-rethinkdc-imagenet-sre2l-ipc-10", yes=True)  # doctest: +SKIP
    """
    from .stages import hub_sets

    f = hub_sets.fetch(_store(home), spec,
                       hub_sets.FetchOptions(offline=offline, yes=yes, name=name, dataset=dataset), reporter=reporter)
    return FetchResult(f.name, "set", f.manifest.key, f.cached, f.summary)


def publish(target: SetLike, to: str | None = None, *, folder: str | Path | None = None, private: bool = False,
            revision: str | None = None, create_pr: bool = False, license: str = "mit", home=None,
            reporter: Reporter = SILENT):
    """Publish a set as a Hugging Face dataset repo (`to="hf:OWNER/NAME"`) or into a new local
    `folder` (no network); returns `stages.hub.Published` (files, url, card metadata).

    >>> import yoco_cli as yoco
    >>> yoco.publish("digits/random/ipc10", folder="out/digits-ipc10")   # doctest: +SKIP
    """
    from .stages import hub

    store = _store(home)
    ref = target.key if isinstance(target, SetResult) else str(target)
    return hub.publish(store, ref, to, Path(folder) if folder is not None else None, private=private,
                       revision=revision, create_pr=create_pr, license_=license, reporter=reporter)
