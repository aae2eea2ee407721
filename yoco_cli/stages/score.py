"""Stage "score": dynamics (and the set they were recorded on) -> every score, in one artifact.

Output "scores" is one safetensors file:
    targets                int64 [N]   decoded labels the scores refer to
    <metric>/seed<j>       float32 [N] the score of dynamics run j
    <metric>/mean          float32 [N] the average over runs (what pruning uses by default)
    ssp/kmeans_<k>, ssp/imbalance_kmeans_<k>   int64 index lists (only from reference pickles)
Metrics: every registered one (`methods.scores.REGISTRY`) whose source is "dynamics" (lbpe,
el2n, forgetting, aum, random: the statistics of every run) or "model" (entropy, loss: every
run's final model, eval mode, decoded images in the model's input space, no augmentation).
ccs reads el2n; ssp is chosen by k-means at prune time (it depends on the target IPC). The
key holds `score_methods.key_params()`: a change to the set of stored metrics (or a metric's
version) scores afresh instead of reading a table without the new metric. meta carries what each score used (chosen epochs, window, options), per-metric
statistics for the summary table, and the setting (condense key, dataset) the presets came from.

`from_file` reads the reference's `data-score-ipc*-ep*.pickle` (docs/method.md §3.10) through the
restricted unpickler into the same layout, so users can prune with the paper's own scores.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import IntegrityError, UsageError
from ..methods import scores as score_methods
from ..progress import SILENT, Reporter
from ..store import Manifest, StageResult, Store, run_cached
from . import space

STAGE = "score"
VERSION = 1


# -- where a set's numbers live ------------------------------------------------------------------
def find_set(store: Store, digest: str) -> Manifest | None:
    from .sets import all_sets

    for m in all_sets(store):
        if m.digest("set") == digest:
            return m
    return None


# -- compute ------------------------------------------------------------------------------------------
def _dyn_inputs(dyn_m: Manifest) -> dict[str, str]:
    return {f"dynamics.{name}": o["digest"] for name, o in sorted(dyn_m.outputs.items())}


def ensure_scores(store: Store, dyn_m: Manifest, set_m: Manifest, cset, opts: score_methods.ScoreOptions,
                  device: str = "auto", on_step: Callable[[str], None] | None = None) -> tuple[Manifest, bool]:
    """Score every run of `dyn_m` (computed once; later calls are cache hits)."""
    setting = [cset.condense_key, cset.dataset]
    params = {**opts.as_params(), "setting": setting, **score_methods.key_params()}
    inputs = {**_dyn_inputs(dyn_m), "set": set_m.digest("set")}

    def compute(tmp: Path, key: str) -> StageResult:
        from .dynamics import load_dynamics

        runs = load_dynamics(store, dyn_m)
        return _write(tmp, _score_runs(runs, cset, opts, tuple(setting), device, on_step), setting,
                      f"{len(runs)} run(s) of {dyn_m.short}")

    return run_cached(store, STAGE, VERSION, params, inputs, compute)


def _score_runs(runs, cset, opts, setting, device, on_step) -> dict:
    import torch

    _, labels, _ = cset.decoded()
    per_seed: dict[str, list] = {}
    infos: dict[str, list] = {}
    x = None
    for j, (dyn, model, _spec) in enumerate(runs):
        if on_step:
            on_step(f"run {j + 1}/{len(runs)}: dynamics scores")
        if dyn.num_samples != len(labels) or not torch.equal(dyn.targets.long(), labels.long()):
            raise IntegrityError(f"dynamics run {j} has {dyn.num_samples} samples whose labels do not match "
                                 f"the set's {len(labels)} decoded images", "record dynamics on this set")
        values, info = score_methods.dynamics_scores(dyn, opts, setting)
        model_metrics = [m.name for m in score_methods.stored() if m.source == "model"]
        if model is not None and model_metrics:
            if on_step:
                on_step(f"run {j + 1}/{len(runs)}: {' and '.join(model_metrics)} (final model)")
            if x is None:
                x = space.model_input(cset, cset.decoded()[0])
            from ..nn.device import resolve_device

            out = model_outputs(model, x, labels, resolve_device(device))
            values.update({name: out[name] for name in model_metrics})
        for name, v in values.items():
            per_seed.setdefault(name, []).append(v.float())
            infos.setdefault(name, []).append(info.get(name, {}))
    # a metric only some runs have (a run without weights) is averaged over the runs that have it
    return {"targets": labels.long(), "per_seed": per_seed, "infos": infos}


def scores_for_set(store: Store, set_m: Manifest, cset, opts: score_methods.ScoreOptions, *,
                   dyn_m: Manifest | None = None, device: str = "auto", dynamics: dict | None = None,
                   min_seeds: int = 1, needs_model: bool = False,
                   reporter: Reporter = SILENT) -> tuple[Manifest, bool, Manifest]:
    """A set's scores: its dynamics (unless `dyn_m` names them: what the store holds for the set
    when it fits, else the preset's plus `dynamics` overrides, trained now; see
    `dynamics.dynamics_for_set`), then every score. Returns (scores manifest, cached, dynamics
    manifest). This is the one place that chains the two stages: prune, score and the pipeline
    all call it. `SET@scores` follows `SET@dynamics`: it names these scores when they were made
    from the dynamics that `SET@dynamics` names."""
    from .dynamics import dynamics_for_set
    from .sets import set_label

    check_options(cset, opts, dyn_m, dynamics)
    if dyn_m is None:
        dyn_m = dynamics_for_set(store, set_m, cset, device=device, overrides=dynamics, min_seeds=min_seeds,
                                 needs_model=needs_model, reporter=reporter)
    with reporter.progress(transient=True) as prog:
        task = prog.add_task("scoring", total=None, status="")
        m, cached = ensure_scores(store, dyn_m, set_m, cset, opts, device,
                                  on_step=lambda step: prog.update(task, status=step))
    label = set_label(store, set_m)
    if store.refs().get(f"{label}@dynamics") == (dyn_m.stage, dyn_m.key):
        store.set_ref(f"{label}@scores", m.stage, m.key)
    return m, cached, dyn_m


def check_options(cset, opts: score_methods.ScoreOptions, dyn_m: Manifest | None = None,
                  dynamics: dict | None = None) -> None:
    """The score options against the epochs of the dynamics they will read: those stored in `dyn_m`,
    or those the preset (plus `dynamics` overrides) will record. Call it before any training starts."""
    if dyn_m is not None:
        if dyn_m.meta.get("epochs"):
            opts.check_epochs(int(dyn_m.meta["epochs"]))
        return
    from .dynamics import plan

    over = {k: v for k, v in (dynamics or {}).items() if k != "seeds"}
    opts.check_epochs(plan(cset, **over)[1].epochs)


def model_outputs(model, x, y, device, batch_size: int = 0, want_features: bool = False) -> dict:
    """One eval-mode pass of the final model: every model-based score per sample (and its `embed`
    features when asked). `x` must already be in the model's input space (see `space.model_input`)."""
    from ..nn.engine import eval_pass

    logits, feats = eval_pass(model, x, device, batch_size=batch_size, features=want_features)
    out = score_methods.logit_scores(logits, y.cpu())
    if want_features:
        out["features"] = feats
    return out


def _write(tmp: Path, res: dict, setting, source: str) -> StageResult:
    from .. import tensors

    ts = {"targets": res["targets"]}
    for name, vals in res["per_seed"].items():
        for j, v in enumerate(vals):
            ts[f"{name}/seed{j}"] = v
        ts[f"{name}/mean"] = score_methods.average(vals)
    for name, idx in res.get("ssp", {}).items():
        ts[f"ssp/{name}"] = idx
    stats = summarize({n: ts[f"{n}/mean"] for n in res["per_seed"]})
    metrics = sorted(res["per_seed"], key=metric_order)
    meta = {"metrics": metrics, "runs": max((len(v) for v in res["per_seed"].values()), default=0),
            "info": res["infos"], "stats": stats, "setting": list(setting), "num_samples": len(res["targets"]),
            "ssp_lists": sorted(res.get("ssp", {})), "source": source,
            "summary": f"scores {', '.join(metrics)} of {len(res['targets'])} images ({source})"}
    path = tensors.save(tmp / "scores.safetensors", ts, {"format": "yoco-scores/1"})
    return StageResult(outputs={"scores": path}, meta=meta)


def metric_order(name: str) -> int:
    order = list(score_methods.REGISTRY)
    return order.index(name) if name in order else len(order)


def summarize(means: dict) -> dict:
    """Per metric: min, max, mean and Spearman's rank correlation with LBPE."""
    out = {}
    ref = means.get("lbpe")
    for name, v in sorted(means.items(), key=lambda kv: metric_order(kv[0])):
        a = v.double()
        rho = score_methods.spearman(a.numpy(), ref.double().numpy()) if ref is not None else None
        out[name] = {"min": float(a.min()), "max": float(a.max()), "mean": float(a.mean()), "spearman_lbpe": rho}
    return out


# -- read back ------------------------------------------------------------------------------------------
@dataclass
class ScoreTable:
    manifest: Manifest
    tensors: dict

    @property
    def metrics(self) -> list[str]:
        return list(self.manifest.meta.get("metrics", []))

    @property
    def runs(self) -> int:
        return int(self.manifest.meta.get("runs", 1))

    @property
    def targets(self):
        return self.tensors["targets"]

    def values(self, metric: str, run: int | None = None):
        """float64 numpy [N]: the mean over runs, or run `run`'s own scores."""
        base = score_methods.get(metric).reads or metric
        key = f"{base}/mean" if run is None else f"{base}/seed{run}"
        if key not in self.tensors:
            if f"{base}/mean" not in self.tensors:
                have = ", ".join(self.metrics) or "none"
                hint = ("it needs the dynamics' final weights; pick another --metric"
                        if score_methods.get(base).needs_model else
                        "these scores were made without it (from a file, or before it was registered); "
                        "score the set again")
                raise UsageError(f"the scores {self.manifest.short} have no {base!r} (they hold: {have})", hint)
            raise UsageError(f"--score-run {run}: the scores hold runs 0..{self.runs - 1}")
        return self.tensors[key].double().numpy()

    def ssp_list(self, name: str):
        t = self.tensors.get(f"ssp/{name}")
        return None if t is None else t.long().numpy()


def load_scores(store: Store, m: Manifest) -> ScoreTable:
    from .. import tensors

    if m.stage != STAGE or "scores" not in m.outputs:
        raise UsageError(f"{m.short} is a {m.stage} artifact, not scores", "see `yoco cache ls --stage score`")
    ts, meta = tensors.load(store.read_output(m, "scores"))
    if meta.get("format") != "yoco-scores/1":
        raise IntegrityError(f"scores {m.short} are not in the yoco score format")
    return ScoreTable(m, ts)


# -- the reference's score pickles (docs/method.md §3.10) ------------------------------------------
def from_file(store: Store, path: Path | str, name: str | None = None, seed: int = 0) -> tuple[Manifest, bool]:
    """Store a reference `data-score-*.pickle` as a score artifact (no code from the pickle runs)."""
    from ..files import check_unchanged, stamp
    from ..store.store import sha256_file
    from .pickles import load_reference_pickle

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} does not exist or is not a file")
    ref = name or f"reference/{re.sub(r'[^A-Za-z0-9._-]+', '-', path.stem)}"
    store.check_ref_name(ref)

    before = stamp(path)
    digest = sha256_file(path)

    def compute(tmp: Path, key: str) -> StageResult:  # only on a cache miss: the pickle is read once
        doc = load_reference_pickle(path)
        check_unchanged(path, before)  # the key's digest is of the bytes just read
        if not isinstance(doc, dict) or "targets" not in doc:
            raise IntegrityError(f"{path} is not a reference score file (no 'targets' key)",
                                 "expected data-score-ipc*-ep*.pickle from the reference's generate_importance_score.py")
        return _write(tmp, _read_reference(doc, seed), ["reference", None], f"file {path.name}")

    return run_cached(store, STAGE, VERSION, {"source": "reference-pickle", "seed": seed, **score_methods.key_params()},
                      {"file": digest}, compute, ref=ref)


def _vector(v, what: str, n: int | None = None):
    import numpy as np
    import torch

    try:
        t = v.detach().cpu() if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
    except (TypeError, ValueError) as e:
        raise IntegrityError(f"the score file's {what!r} is not a numeric vector ({e})") from None
    t = t.flatten()
    if n is not None and t.numel() != n:
        raise IntegrityError(f"the score file's {what!r} has {t.numel()} entries for {n} samples")
    return t


def _read_reference(doc: dict, seed: int) -> dict:
    import torch

    targets = _vector(doc["targets"], "targets").long()
    n = len(targets)
    per_seed, infos = {}, {}
    lbpe_keys = sorted(k for k in doc if isinstance(k, str) and re.fullmatch(r"LBPE_top\d+", k))
    if lbpe_keys:
        per_seed["lbpe"] = [_vector(doc[lbpe_keys[0]], lbpe_keys[0], n).float()]
        infos["lbpe"] = [{"key": lbpe_keys[0], "k": int(lbpe_keys[0][len("LBPE_top"):])}]
    for metric, keys in score_methods.reference_keys().items():
        for k in keys:
            if k in doc:
                per_seed[metric] = [_vector(doc[k], k, n).float()]
                infos[metric] = [{"key": k}]
                break
    g = torch.Generator().manual_seed(int(seed))
    per_seed["random"] = [torch.randperm(n, generator=g).float()]
    infos["random"] = [{"seed": int(seed)}]
    ssp = {}
    for k, v in doc.items():
        if isinstance(k, str) and re.fullmatch(r"(imbalance_)?kmeans_\d+", k):
            idx = _vector(v, k).long()
            if idx.numel() and (idx.min() < 0 or idx.max() >= n):
                raise IntegrityError(f"the score file's {k!r} holds indices outside 0..{n - 1}")
            ssp[k] = idx
    if len(per_seed) == 1:
        known = [k for keys in score_methods.reference_keys().values() for k in keys]
        raise IntegrityError(f"the score file holds none of LBPE_top*, {', '.join(known)}")
    return {"targets": targets, "per_seed": per_seed, "infos": infos, "ssp": ssp}


# -- writing the reference's data-score pickle, or JSON ---------------------------------------------
EXPORT_FORMATS = (".pickle", ".pkl", ".json")
KMEANS_IPCS = (1, 2, 5, 10)  # the target IPCs the reference's score file holds k-means lists for


def export_format(path: Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in EXPORT_FORMATS:
        raise UsageError(f"cannot tell the export format of {Path(path).name}",
                         "name the file *.pickle (the reference's data-score layout) or *.json ({metric: [scores]})")
    return "json" if suffix == ".json" else "pickle"


def export_paths(path: Path, runs: int) -> dict[int, Path]:
    """One file per dynamics run: `{run}` in the name is replaced, else -runJ is added (one run: as given)."""
    path = Path(path)
    if "{run}" in path.name:
        return {j: path.with_name(path.name.replace("{run}", str(j))) for j in range(runs)}
    if runs == 1:
        return {0: path}
    return {j: path.with_name(f"{path.stem}-run{j}{path.suffix}") for j in range(runs)}


def export_scores(store: Store, m: Manifest, path: Path, kmeans: bool = True, device: str = "cpu") -> dict[int, Path]:
    """Every run's scores as the reference's data-score pickle (docs/method.md §3.10) or as JSON; returns {run: file}.

    The pickle also carries what the reference's file holds beyond yoco's scores (correctness,
    forgetting counts, correct_num, loss_epoch, the chosen epochs' LBPE_t_{t+1}), from the
    dynamics the scores were made of, and, when those have final weights, the k-means lists
    for IPC 1, 2, 5, 10 (duplicates kept, as the reference's lists; seed = run index).
    """
    from ..data.reference_files import json_document, score_document, write_pickle
    from ..files import atomic_write, check_output_file

    fmt = export_format(path)
    table = load_scores(store, m)
    paths = export_paths(path, table.runs)
    for p in paths.values():
        check_output_file(p)
    runs = _score_dynamics(store, m) if fmt == "pickle" else {}
    cset = None
    for j, p in paths.items():
        values = {name: table.tensors[f"{name}/seed{j}"] for name in table.metrics if f"{name}/seed{j}" in table.tensors}
        if fmt == "json":
            import json

            text = json.dumps(json_document(values), separators=(",", ":")) + "\n"
            atomic_write(p, lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8"))
            continue
        infos = {name: (v[j] if j < len(v) else {}) for name, v in (m.meta.get("info") or {}).items()}
        dyn, model = runs.get(j, (None, None))
        lists = {}
        if kmeans and model is not None:
            cset = cset or _scored_set(store, m)
            lists = _kmeans_lists(cset, model, j, device) if cset is not None else {}
        doc = score_document(dyn, values, infos, lists) if dyn is not None else _plain_document(table, values, infos, j)
        write_pickle(doc, p)
    return paths


def _score_dynamics(store: Store, m: Manifest) -> dict:
    """{run j: (Dynamics, final model or None)} for the dynamics a score artifact was made of (run j is
    the j-th seed in ascending order, as `load_dynamics` reads them); {} for scores read from a file."""
    from ..data.dynamics import Dynamics
    from ..nn.engine import load_model

    seeds = sorted(int(g.group(1)) for k in m.inputs if (g := re.fullmatch(r"dynamics\.seed(\d+)/stats", k)))
    out = {}
    for j, s in enumerate(seeds):
        weights = m.inputs.get(f"dynamics.seed{s}/model")
        out[j] = (Dynamics.load(store.object_file(m.inputs[f"dynamics.seed{s}/stats"])),
                  load_model(store.object_file(weights)) if weights else None)
    return out


def _scored_set(store: Store, m: Manifest):
    from .sets import load_set

    set_m = find_set(store, m.inputs.get("set", ""))
    return load_set(store, set_m) if set_m is not None else None


def _kmeans_lists(cset, model, run: int, device: str) -> dict:
    import torch

    from ..methods import select
    from ..nn.device import resolve_device
    from ..nn.engine import eval_features

    x, labels, _ = cset.decoded()
    feats = eval_features(model, space.model_input(cset, x), resolve_device(device)).numpy()
    lab = labels.numpy()
    smallest = int(torch.bincount(labels, minlength=cset.num_classes).min())
    lists = {}
    for k in KMEANS_IPCS:
        per_class = k * cset.unit
        if per_class > smallest:
            continue
        total = per_class * cset.num_classes
        lists[f"kmeans_{k}"] = select.kmeans_select(feats, lab, per_class, total, True, run, "keep").tolist()
        lists[f"imbalance_kmeans_{k}"] = select.kmeans_select(feats, lab, per_class, total, False, run, "keep").tolist()
    return lists


def _plain_document(table: ScoreTable, values: dict, infos: dict, run: int) -> dict:
    """Scores without their dynamics (e.g. read from a reference file): the reference's keys yoco has."""
    import torch

    doc = {"targets": table.targets.to(torch.int32)}
    for metric, keys in score_methods.reference_keys().items():
        if metric in values:
            for key in keys:
                doc[key] = values[metric].float()
    if "lbpe" in values:
        doc[f"LBPE_top{infos.get('lbpe', {}).get('k', 0)}"] = values["lbpe"].float()
    for name in table.manifest.meta.get("ssp_lists", []):
        doc[name] = table.ssp_list(name).tolist()
    return doc
