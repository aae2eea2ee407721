"""Stage "prune": a condensed set + scores -> the kept decoded images, as a new stored set.

The pruning unit is the decoded image (docs/method.md §4.1). The output set holds the kept decoded
images themselves (factor 1; meta["pruned"] records the source factor, parent, rule and
from/to; `origin` = kept decoded indices in the parent) and is named
`<parent-ref>@<metric>-<easy|hard>-<balanced|imbalanced>-ipc<to>`. Its nominal IPC is the
target IPC: "IPC 1" of an f=2 set means 4 decoded images per class, the paper's budget.
A second output, "indices", is the JSON `{"indices": [...], "stored": [...]}` of the kept
decoded indices and the stored images they were cut from.

Inputs of the key: the set's digest, plus the scores' digest (score-based metrics) or the
dynamics' digests (ssp, which runs k-means on the final model's features); random needs
neither. Only the options a metric uses enter its params, so `--seed` does not split the
cache of a deterministic rule.

The paper's protocol (`prune_runs`, the default of `yoco prune`): with several dynamics runs,
prune once per run with that run's own scores (the reference's reproduce_1..3 score files;
random and k-means draw with seed + run), name those sets `<name>-run<j>`, and commit a
"prune-group" manifest named `<name>` whose outputs `run<j>/set` are those sets, so that eval
and report pool accuracies over them. `mean_scores=True` prunes once with the scores averaged
over runs instead, a different method named as such: `<parent>@<rule>-meanscores-ipc<to>`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..files import atomic_write, check_output_file
from ..methods import presets, select
from ..methods.scores import REGISTRY, ScoreOptions
from ..progress import SILENT, Reporter
from ..store import Manifest, StageResult, Store, run_cached
from . import space
from .sets import set_label, set_result

STAGE = "prune"
VERSION = 2  # 2: meta records the protocol and LBPE's window (issue 11)
GROUP_STAGE, GROUP_VERSION = "prune-group", 1
PER_SEED, MEAN_SCORES = "per-seed", "mean-scores"


@dataclass
class PruneOptions:
    seed: int = 0
    score_run: int | None = None      # None: mean over dynamics runs
    ccs_beta: float | None = None     # None: the reference's table (docs/method.md §3.8)
    ccs_strata: int = presets.CCS_STRATA
    ccs_random: bool = False          # reference: first in pool order (docs/method.md §9.7)
    ssp_duplicates: str = "fill"      # "keep": the reference's list with repeats
    ssp_run: int = 0                  # whose final model gives ssp's features
    device: str = "auto"


    def check(self) -> None:
        """The option values themselves, before anything is read or trained."""
        if self.ssp_duplicates not in ("fill", "keep"):
            raise UsageError(f"ssp duplicates {self.ssp_duplicates!r} (--ssp-duplicates)", "use fill or keep")
        if self.ccs_strata < 1:
            raise UsageError("ccs strata must be at least 1 (--ccs-strata)")


@dataclass
class PruneRequest:
    """Everything one `yoco prune` / `yoco_cli.prune()` asks for, beyond the set itself."""
    rule: select.Rule
    targets: list[int]
    options: PruneOptions = field(default_factory=PruneOptions)
    score_options: ScoreOptions = field(default_factory=ScoreOptions)
    scores_ref: str | None = None     # a stored score artifact to use instead of the set's own
    dynamics_ref: str | None = None   # a stored dynamics artifact to use instead of the set's own
    dynamics: dict = field(default_factory=dict)  # training overrides for dynamics computed on the way
    mean_scores: bool = False         # once with the scores averaged over runs, not once per run


@dataclass(frozen=True)
class Source:
    """The set being pruned and what its rule reads: a score table (stages.score.ScoreTable) and/or
    a dynamics manifest (ssp's final models), either None when the rule does not read it."""
    set_m: Manifest
    cset: Any
    scores: Any = None
    dyn_m: Manifest | None = None


@dataclass(frozen=True)
class _Plan:
    """One pruned set to make: the target, the rule and options, and what enters its key and meta."""
    ipc_to: int
    rule: select.Rule
    opts: PruneOptions
    params: dict
    source: str  # "set", "scores" or "model" (see `needs`)
    context: dict


def check(cset, req: PruneRequest) -> None:
    """Every check that needs no computation, so a bad request fails before any training starts."""
    req.options.check()
    if req.mean_scores and req.options.score_run is not None:
        raise UsageError("mean scores and a single score run choose different scores (--mean-scores, --score-run)",
                         "give one of them")
    for t in req.targets:
        select.keep_counts(cset.ipc, t, cset.unit, cset.decoded_count)
        if req.rule.metric == "ccs":
            beta = req.options.ccs_beta
            presets.cut_count(beta if beta is not None else ccs_beta(cset, t)[0], 1)


def ccs_beta(cset, ipc_to: int) -> tuple[float, str | None]:
    """The reference's CCS cut ratio for the set, or its twin dataset's (with a note; docs/method.md §3.8)."""
    return presets.ccs_beta_for(cset.dataset, cset.num_classes, cset.ipc, ipc_to)


def run(store: Store, set_m: Manifest, cset, req: PruneRequest, *, reporter: Reporter = SILENT) -> list[Pruned]:
    """The one orchestration of pruning, for the CLI and the API alike: check, find or compute what the
    rule reads (scores, dynamics), then prune every target; one `Pruned` per target, in order."""
    check(cset, req)
    rule, opts = req.rule, req.options
    if rule.metric == "ccs" and opts.ccs_beta is None:  # a borrowed ratio is said aloud, as the pipeline does
        for note in dict.fromkeys(n for t in req.targets if (n := ccs_beta(cset, t)[1])):
            reporter.warn(note)
    table, dyn_m = upstream(store, set_m, cset, rule, req.targets, req.score_options, scores_ref=req.scores_ref,
                            dyn_ref=req.dynamics_ref, device=opts.device, dynamics=req.dynamics, reporter=reporter)
    if table is not None and rule.metric == "lbpe":  # K == stop, or a window past the lr drop: say so once
        for w in dict.fromkeys(w for info in (table.manifest.meta.get("info") or {}).get("lbpe", [])
                               for w in info.get("warnings", [])):
            reporter.warn(w)
    src, out = Source(set_m, cset, table, dyn_m), []
    for t in req.targets:
        with reporter.progress(transient=True) as prog:
            prog.add_task(f"pruning to IPC {t}", total=None, status=rule.label)
            if opts.score_run is not None:
                out.append(prune_one_run(store, src, t, rule, opts))
            else:
                out.append(prune_runs(store, src, t, rule, opts, req.mean_scores))
    return out


def needs(rule: select.Rule, scores=None, ipc_to: int | None = None) -> str:
    """What a rule reads: "set" (random), "scores", or "model" (ssp without a usable stored list)."""
    if rule.metric == "random":
        return "set"
    if rule.metric == "ssp":
        if scores is not None and ipc_to is not None and scores.ssp_list(_ssp_key(rule, ipc_to)) is not None:
            return "scores"
        return "model"
    return "scores"


def _ssp_key(rule: select.Rule, ipc_to: int) -> str:
    return f"kmeans_{ipc_to}" if rule.balanced else f"imbalance_kmeans_{ipc_to}"


def plan(cset, ipc_to: int, rule: select.Rule, opts: PruneOptions, source: str) -> dict:
    """The params of the cache key: the rule and only the options it uses."""
    params = {"from": cset.ipc, "to": ipc_to, "metric": rule.metric, "hard": rule.hard,
              "balanced": rule.balanced, "unit": cset.unit}
    if rule.metric in ("random",) or (rule.metric == "ccs" and opts.ccs_random) or source == "model":
        params["seed"] = opts.seed
    if source == "scores" and rule.metric != "ssp":
        params["score_run"] = opts.score_run
    if rule.metric == "ccs":
        beta = opts.ccs_beta if opts.ccs_beta is not None else ccs_beta(cset, ipc_to)[0]
        presets.cut_count(beta, 1)  # validates the range
        params.update(ccs_beta=beta, ccs_strata=opts.ccs_strata, ccs_random=opts.ccs_random)
    if rule.metric == "ssp":
        params["ssp_duplicates"] = opts.ssp_duplicates
        if source == "model":
            params["ssp_run"] = opts.ssp_run
    return params


def ref_for(store: Store, set_m: Manifest, rule: select.Rule, ipc_to: int, protocol: str = PER_SEED,
            run: int | None = None) -> str:
    """`<parent>@<rule>-ipc<to>`; one run of several: `...-run<j>`; mean scores: `<parent>@<rule>-meanscores-ipc<to>`."""
    mean = "-meanscores" if protocol == MEAN_SCORES else ""
    tail = f"-run{run}" if run is not None else ""
    return f"{set_label(store, set_m)}@{rule.label}{mean}-ipc{ipc_to}{tail}"


def run_count(rule: select.Rule, scores=None, dyn_m: Manifest | None = None) -> int:
    """How many dynamics runs the rule's inputs hold (1 for random without dynamics)."""
    if scores is not None:
        return scores.runs
    if dyn_m is not None:
        return len(dyn_m.meta.get("seeds", [0]))
    return 1


@dataclass
class Pruned:
    """One target of `prune_runs`: the name to use, the per-run sets and whether all were cached."""
    ref: str
    manifest: Manifest            # the group (several runs) or the one set
    sets: list[Manifest]
    cached: bool
    protocol: str

    @property
    def runs(self) -> int:
        return len(self.sets)


def prune_runs(store: Store, src: Source, ipc_to: int, rule: select.Rule, opts: PruneOptions,
               mean_scores: bool = False) -> Pruned:
    """The paper's protocol: one pruned set per dynamics run (its own scores), grouped under one name.

    mean_scores=True (or a single run) gives one set. Run j uses score_run j, ssp_run j and
    seed opts.seed + j, which is what `yoco pipeline` does, so both share their cache entries.
    """
    from dataclasses import replace

    n = run_count(rule, src.scores, src.dyn_m)
    if n == 1:  # one run: its scores are the mean, and there is nothing to pool
        one = replace(opts, score_run=0 if src.scores is not None else opts.score_run)
        m, cached = prune(store, src, ipc_to, rule, one, protocol=PER_SEED, runs=1)
        return Pruned(set_label(store, m), m, [m], cached, PER_SEED)
    if mean_scores:
        m, cached = prune(store, src, ipc_to, rule, replace(opts, score_run=None), protocol=MEAN_SCORES, runs=n)
        return Pruned(set_label(store, m), m, [m], cached, MEAN_SCORES)
    sets, all_cached = [], True
    for j in range(n):
        opts_j = replace(opts, score_run=j, ssp_run=j, seed=opts.seed + j)
        m, cached = prune(store, src, ipc_to, rule, opts_j, protocol=PER_SEED, runs=n,
                          ref=ref_for(store, src.set_m, rule, ipc_to, PER_SEED, j))
        sets.append(m)
        all_cached = all_cached and cached
    group, cached = _group(store, src.set_m, rule, ipc_to, sets)
    return Pruned(set_label(store, group), group, sets, all_cached and cached, PER_SEED)


def prune_one_run(store: Store, src: Source, ipc_to: int, rule: select.Rule, opts: PruneOptions) -> Pruned:
    """`--score-run I`: run I's own set alone (the same cache entry and name as in `prune_runs`' group)."""
    n = run_count(rule, src.scores, src.dyn_m)
    run = opts.score_run
    if run is None:
        raise UsageError("pruning one run needs its number", "give --score-run I")
    if src.scores is not None and not 0 <= run < src.scores.runs:
        raise UsageError(f"--score-run {run}: the scores hold runs 0..{src.scores.runs - 1}")
    name = ref_for(store, src.set_m, rule, ipc_to, PER_SEED, run if n > 1 else None)
    m, cached = prune(store, src, ipc_to, rule, opts, protocol=PER_SEED, runs=n, ref=name)
    return Pruned(set_label(store, m), m, [m], cached, PER_SEED)


def _group(store: Store, set_m: Manifest, rule: select.Rule, ipc_to: int, sets: list[Manifest]):
    """The "prune-group" manifest: outputs run<j>/set and run<j>/indices are the per-run objects."""
    import shutil

    first = sets[0].meta.get("pruned", {})

    def compute(tmp: Path, key: str) -> StageResult:
        outputs = {}
        for j, m in enumerate(sets):
            for name in ("set", "indices"):
                dest = tmp / f"run{j}-{name}"
                shutil.copyfile(store.object_file(m.digest(name)), dest)  # same bytes -> same object
                outputs[f"run{j}/{name}"] = dest
        info = {k: v for k, v in first.items() if k not in ("score_run", "seed", "ssp_run")}
        return StageResult(outputs=outputs, meta={
            "pruned_group": {**info, "protocol": PER_SEED, "runs": len(sets)},
            "runs": [m.key for m in sets], "per_class": sets[0].meta.get("per_class"),
            "kept": sets[0].meta.get("kept"), "total": sets[0].meta.get("total"),
            "summary": f"{first.get('parent')} ipc{first.get('from')} -> ipc{ipc_to} by {rule.label}, "
                       f"pruned once per dynamics run ({len(sets)} sets)"})

    params = {"from": first.get("from"), "to": ipc_to, "rule": rule.label, "runs": [m.key for m in sets]}
    return run_cached(store, GROUP_STAGE, GROUP_VERSION, params,
                      {f"run{j}": m.digest("set") for j, m in enumerate(sets)}, compute,
                      ref=ref_for(store, set_m, rule, ipc_to))


def group_sets(store: Store, m: Manifest) -> list[Manifest]:
    """The per-run set manifests of a prune group (in run order)."""
    out = []
    for key in m.meta.get("runs", []):
        run = store.load_run(STAGE, key)
        if run is None:
            from ..errors import IntegrityError

            raise IntegrityError(f"the prune group {m.short} names a pruned set {key[:12]} that is not in the store",
                                 "prune again to recreate it")
        out.append(run)
    return out


def dynamics_for(store: Store, set_m: Manifest, cset, ref: str | None, device: str = "auto",
                 overrides: dict | None = None, reporter: Reporter = SILENT, needs_model: bool = False) -> Manifest:
    """The dynamics named `ref`, else what the store holds for the set when it fits, else the
    preset's, trained now (see dynamics.dynamics_for_set); one line says which."""
    if ref:
        m = store.resolve(ref, stage="dynamics", what="dynamics artifact")
        reporter.info(f"dynamics: {set_label(store, m)} ({m.meta.get('summary', '')}), as given")
        return m
    from .dynamics import dynamics_for_set

    return dynamics_for_set(store, set_m, cset, device=device, overrides=overrides, needs_model=needs_model,
                            reporter=reporter)


def upstream(store: Store, set_m: Manifest, cset, rule: select.Rule, targets: list[int], sopts, *,
             scores_ref: str | None = None, dyn_ref: str | None = None, device: str = "auto",
             dynamics: dict | None = None, reporter: Reporter = SILENT):
    """(score table or None, dynamics manifest or None) that `rule` reads for `targets`: the named
    artifacts, else the set's own, computed on the way when missing. Random needs neither."""
    from .score import load_scores, scores_for_set

    if scores_ref:
        sm = store.resolve(scores_ref, stage="score", what="score artifact")
        dyn_m = dynamics_for(store, set_m, cset, dyn_ref, device, dynamics, reporter) if dyn_ref else None
        return load_scores(store, sm), dyn_m
    if all(needs(rule, None, t) == "set" for t in targets):
        return None, None
    if not dyn_ref:  # the score options, against the epochs about to be recorded: before training them
        from .score import check_options

        check_options(cset, sopts, dynamics=dynamics)
    dyn_m = dynamics_for(store, set_m, cset, dyn_ref, device, dynamics, reporter, REGISTRY[rule.metric].needs_model)
    if all(needs(rule, None, t) == "model" for t in targets):
        return None, dyn_m
    sm, cached, _ = scores_for_set(store, set_m, cset, sopts, dyn_m=dyn_m, device=device, reporter=reporter)
    reporter.info(f"scores: {sm.short}" + (" (cached)" if cached else " (computed)"))
    return load_scores(store, sm), dyn_m


def prune(store: Store, src: Source, ipc_to: int, rule: select.Rule, opts: PruneOptions, *,
          protocol: str | None = None, runs: int | None = None, ref: str | None = None) -> tuple[Manifest, bool]:
    """Prune (or find in the cache) one target IPC with one set of options.

    `protocol`/`runs` are recorded in the set's meta (which protocol it belongs to); `ref`
    overrides its name (default: `ref_for` of the protocol)."""
    set_m, cset, scores, dyn_m = src.set_m, src.cset, src.scores, src.dyn_m
    source = needs(rule, scores, ipc_to)
    if source == "scores" and scores is None:
        raise UsageError(f"--metric {rule.metric} needs scores", "give --scores REF or --dynamics REF")
    if source == "model" and dyn_m is None:
        raise UsageError("ssp needs the final model of a dynamics run for this target",
                         "give --dynamics REF (reference score files only hold kmeans lists for IPC 1, 2, 5, 10)")
    select.keep_counts(cset.ipc, ipc_to, cset.unit, cset.decoded_count)  # fail before any work
    params = plan(cset, ipc_to, rule, opts, source)
    inputs = {"set": set_m.digest("set")}
    if source == "scores":
        inputs["scores"] = scores.manifest.digest("scores")
    elif source == "model" and dyn_m is not None:  # (a missing one was refused above)
        inputs.update({f"dynamics.{k}": o["digest"] for k, o in sorted(dyn_m.outputs.items())})

    if protocol is None:
        protocol = MEAN_SCORES if source == "scores" and opts.score_run is None and scores.runs > 1 else PER_SEED
    context = {"protocol": protocol, "runs": runs if runs is not None else run_count(rule, scores, dyn_m),
               **_lbpe_window(rule, scores, opts.score_run)}

    plan_ = _Plan(ipc_to, rule, opts, params, source, context)

    def make(tmp: Path, key: str) -> StageResult:
        return _compute(store, tmp, src, plan_)

    return run_cached(store, STAGE, VERSION, params, inputs, make,
                      ref=ref or ref_for(store, set_m, rule, ipc_to, protocol))


def _lbpe_window(rule: select.Rule, scores, run: int | None) -> dict:
    """For LBPE rules: the window the scores used (K, stop, chosen epochs, scaled/unscaled/user)."""
    if rule.metric != "lbpe" or scores is None:
        return {}
    infos = (scores.manifest.meta.get("info") or {}).get("lbpe") or []
    if not infos:
        return {}
    info = infos[run if run is not None and run < len(infos) else 0]
    keep = ("k", "stop_epoch", "window", "use_loss")
    out = {k: info.get(k) for k in keep if k in info}
    out["reference"] = (info.get("preset") or {}).get("reference")
    if run is not None:
        out["epochs"] = info.get("epochs")
    return {"lbpe_window": out}


def _choose(store: Store, src: Source, labels, p: _Plan):
    """(kept decoded indices, the score vector they were chosen by or None)."""
    import numpy as np

    cset, scores, ipc_to, rule, opts, source = src.cset, src.scores, p.ipc_to, p.rule, p.opts, p.source

    per_class, total = select.keep_counts(cset.ipc, ipc_to, cset.unit, len(labels))
    lab = labels.numpy()
    if rule.metric == "random":
        return select.random_select(lab, per_class, total, rule.balanced, opts.seed), None
    if source == "scores":
        _check_targets(scores, lab)
    if rule.metric == "ssp":
        if source == "scores":
            return np.sort(scores.ssp_list(_ssp_key(rule, ipc_to))), None
        feats = _features(store, cset, src.dyn_m, opts)
        return select.kmeans_select(feats, lab, per_class, total, rule.balanced, opts.seed, opts.ssp_duplicates), None
    values = scores.values(rule.metric, opts.score_run)
    if rule.metric == "ccs":
        cut = presets.cut_count(p.params["ccs_beta"], len(values))
        return select.ccs_select(values, total, cut, opts.ccs_strata, opts.ccs_random, opts.seed), values
    return select.select_by_score(values, lab, rule, per_class, total, REGISTRY[rule.metric].high_is_hard), values


def _check_targets(scores, labels) -> None:
    """Scores index decoded images: they must be this set's, in this set's decoded order."""
    import numpy as np

    t = scores.targets.numpy()
    if len(t) != len(labels):
        raise UsageError(f"the scores cover {len(t)} images but the set decodes to {len(labels)}",
                         "score this set's own dynamics (or use the reference file of this set and IPC)")
    if not np.array_equal(t, labels):
        bad = int((t != labels).sum())
        raise UsageError(f"the scores' labels differ from the set's decoded labels at {bad} of {len(t)} positions",
                         "these scores were made for another set")


def _features(store: Store, cset, dyn_m: Manifest | None, opts: PruneOptions):
    from ..nn.device import resolve_device
    from ..nn.engine import eval_features
    from .dynamics import load_dynamics

    if dyn_m is None:
        raise UsageError("ssp needs the final model of a dynamics run for this target", "give --dynamics REF")
    runs = load_dynamics(store, dyn_m)
    if not 0 <= opts.ssp_run < len(runs):
        raise UsageError(f"--ssp-run {opts.ssp_run}: the dynamics hold runs 0..{len(runs) - 1}")
    model = runs[opts.ssp_run][1]
    if model is None:
        raise UsageError("these dynamics carry no final model weights; ssp needs them",
                         "record dynamics with yoco (reference pickles hold no weights)")
    x = space.model_input(cset, cset.decoded()[0])
    return eval_features(model, x, resolve_device(opts.device)).numpy()


def _compute(store: Store, tmp: Path, src: Source, p: _Plan) -> StageResult:
    import numpy as np
    import torch

    from ..data.condensed import CondensedSet

    set_m, cset, ipc_to, rule, params, context = src.set_m, src.cset, p.ipc_to, p.rule, p.params, p.context
    images, labels, stored = cset.decoded()
    kept, values = _choose(store, src, labels, p)
    kept_t = torch.as_tensor(np.asarray(kept, dtype=np.int64))
    parent = set_label(store, set_m)
    info = {"parent": parent, "parent_key": set_m.key, "source_factor": int(cset.unit ** 0.5),
            "metric": rule.metric, "key": rule.key, "direction": rule.direction, "balance": rule.balance,
            "from": cset.ipc, "to": ipc_to, "condense_key": cset.condense_key, **context, **{
                k: v for k, v in params.items() if k not in ("from", "to", "metric", "hard", "balanced")}}
    out = CondensedSet(images=images[kept_t].contiguous(), labels=labels[kept_t].contiguous(),
                       dataset=cset.dataset, num_classes=cset.num_classes, factor=1,
                       value_space=cset.value_space, ipc=ipc_to, meta={"pruned": info}, origin=kept_t)
    per_class = torch.bincount(out.labels, minlength=cset.num_classes).tolist()
    extra = {"pruned": info, "per_class": per_class, "kept": len(kept_t), "total": len(labels),
             "score_range": _ranges(values, kept_t.numpy()) if values is not None else None}
    (tmp / "indices.json").write_text(json.dumps(
        {"indices": kept_t.tolist(), "stored": stored[kept_t].tolist()}, separators=(",", ":")) + "\n")
    summary = f"{parent} ipc{cset.ipc} -> ipc{ipc_to} by {rule.label}: {len(kept_t)} of {len(labels)} decoded images"
    res = set_result(tmp, out, summary, extra)
    res.outputs["indices"] = tmp / "indices.json"
    return res


def _ranges(values, kept) -> dict:
    import numpy as np

    mask = np.zeros(len(values), dtype=bool)
    mask[kept] = True
    part = lambda v: [float(v.min()), float(v.max())] if len(v) else None
    return {"kept": part(values[mask]), "dropped": part(values[~mask])}


# -- outputs outside the store ----------------------------------------------------------------------------
def write_indices(store: Store, m: Manifest, path: Path) -> None:
    check_output_file(path)
    data = store.read_output(m, "indices").data
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def export(store: Store, m: Manifest, path: Path, fmt: str = "idc") -> list[str]:
    """The pruned set in a published layout (IDC's [data, targets] by default); returns notes."""
    from ..data import formats
    from .sets import load_set

    return formats.export(load_set(store, m), path, fmt)
