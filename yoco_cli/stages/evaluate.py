"""Evaluation protocol of docs/method.md §5: train a fresh network on a set, test on the real test split.

Per repeat (seed r): the set's decoded images, the dataset's preset (model, epochs, DSA,
CutMix), SGD lr 0.01 / momentum 0.9 / wd 5e-4 with MultiStepLR per epoch at floor(2E/3),
floor(5E/6), test accuracy after epochs E/4, E/2, 3E/4 and E. Reported: best (max of the
four) and last (epoch E), mean and population std (numpy's default, as the reference logs)
over repeats. Normalization follows the set's value space; the real test split is brought
into the same space.

Storage: stage "eval-run" per repeat (output "result", a small JSON with best/last/curve),
stage "eval" for the group (outputs "seed{r}/result"; meta holds the means and stds), keyed
by the set's digest (or the real training split's digest for a full-split run), the test
split's digest, the model spec and the training config. The same request twice is instant;
more repeats later compute only the new ones.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import tensors
from ..data.condensed import CondensedSet
from ..errors import UsageError
from ..executors import Output, Resources, Shared
from ..progress import SILENT, Reporter
from ..store import Manifest, Store
from . import space, training
from .datasets import load_real
from .seeded import (
    Keyed,
    SeedWork,
    check_run_count,
    group_manifest,
    plan_seeds,
    run_jobs,
    seed_manifests,
)

RUN_STAGE, STAGE, VERSION = "eval-run", "eval", 2  # 2: real splits named by tensors.digest


def plan(dataset: str, num_classes: int, channels: int, image_size: int, ipc: int, factor: int, **overrides):
    """(model spec, TrainConfig) of the evaluation preset with overrides (model, epochs, batch_size,
    lr, aug, cutmix, compile); the LR steps per epoch and the test points follow docs/method.md §5.2."""
    from ..nn.engine import eval_epochs
    from .fitted import DataShape

    shape = DataShape(channels, image_size, num_classes)
    return training.plan(training.preset("eval", dataset, shape), num_classes=num_classes, channels=channels,
                         image_size=image_size,
                         schedule="epoch", default_epochs=training.ipc_epochs(ipc, factor), eval_at=eval_epochs,
                         **overrides)


@dataclass
class _Target:
    label: str
    dataset: str
    x: Any
    y: Any
    value_space: str
    num_classes: int
    ipc: int
    factor: int
    inputs: dict
    set_key: str | None = None
    publisher: str | None = None  # whose ZCA recipe a zca-space set needs (kip, mtt)


def evaluate_set(store: Store, set_manifest: Manifest, cset: CondensedSet, **params) -> Manifest:
    """Evaluation (docs/method.md §5) of a stored condensed (or pruned) set; cached. Library API (docs/training.md)."""
    return run_eval(store, set_manifest, cset, **params)[0]


def run_eval(store: Store, set_manifest: Manifest | None, cset: CondensedSet | None, dataset: str | None = None,
             **params) -> tuple[Manifest, dict]:
    """evaluate_set (a set) or the full training split (cset None, a dataset name); also says which repeats ran now."""
    return _evaluate(store, target_of(store, set_manifest, cset, dataset), **params)


def target_of(store: Store, set_manifest: Manifest | None, cset: CondensedSet | None,
              dataset: str | None = None) -> _Target:
    """What an evaluation trains on: a stored set, or (cset None) a dataset's full training split."""
    if cset is None:
        return _full_target(store, dataset)
    if set_manifest is None:
        raise UsageError("a set to evaluate needs its stored manifest (it names the evaluation)",
                         "pass the manifest the set was loaded from, e.g. from stages.importing.resolve_set")
    return _set_target(store, set_manifest, cset)


def set_target(store: Store, m: Manifest) -> _Target:
    """What evaluating the stored set `m` trains on (for `plan_eval`)."""
    from .sets import load_set

    return _set_target(store, m, load_set(store, m))


def _set_target(store: Store, m: Manifest, cset: CondensedSet) -> _Target:
    from .sets import set_label

    x, y, _ = cset.decoded()
    # ImageNet's epoch rule uses the IPC and factor the set was condensed at, also after pruning (docs/method.md §5.2)
    pruned = (cset.meta or {}).get("pruned") or {}
    ipc = int(pruned.get("from") or cset.ipc or 1)
    factor = int(pruned.get("source_factor") or cset.factor)

    return _Target(set_label(store, m), cset.dataset, x, y, cset.value_space, cset.num_classes,
                   ipc, factor, {"set": m.digest("set")}, m.key, cset.condense_key)


def _full_target(store: Store, dataset: str | None) -> _Target:
    import torch

    if not dataset:
        raise UsageError("name a dataset to evaluate its full training split")
    ds = load_real(dataset, store)
    ipc = int(torch.bincount(ds.train_y, minlength=ds.num_classes).max())
    return _Target(f"{dataset} (full train split)", dataset, ds.train_x, ds.train_y, "raw01", ds.num_classes,
                   ipc, 1, {"train": tensors.digest(ds.train_x, ds.train_y)})


@dataclass
class EvalSpec:
    """What an evaluation job needs, picklable (sent to a worker process or a Ray node)."""
    model: dict
    cfg: Any
    data: Shared            # (x, y): the set's decoded images and labels
    test: Shared            # (x_test, y_test), already in the network's input space
    normalize: tuple | None
    device: str
    batched: str = "auto"
    seeds: list = field(default_factory=list)
    partial: str | None = None  # checkpoint folder (only where the store is on this machine)


def eval_job(spec: EvalSpec, progress: Callable | None = None) -> list[Output]:
    """Train one model per seed and test it (docs/method.md §5): one `result` JSON per seed."""
    from ..nn import engine
    from ..nn.device import resolve_device

    dev = resolve_device(spec.device)
    x, y = spec.data.value
    ck = engine.Checkpoint(Path(spec.partial), 30.0) if spec.partial else None
    results = engine.train(spec.model, x, y, spec.cfg, seeds=spec.seeds, device=dev, normalize=spec.normalize,
                           test=spec.test.value, on_epoch=progress, checkpoint=ck, batched=spec.batched)
    return [_eval_output(res, dev) for res in results]


def _eval_output(res, dev) -> Output:
    from ..nn.device import describe

    doc = {"seed": res.seed, "best": res.best, "last": res.last,
           "evals": {str(k): v for k, v in sorted(res.evals.items())},
           "final_loss": res.history[-1]["loss"], "final_train_acc": res.history[-1]["acc"]}
    data = (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()
    return Output({"result": data}, {**doc, "device": describe(dev), "compiled": res.compiled,
                                     "batched": res.batched,
                                     "summary": f"repeat {res.seed}: best {res.best:.4f} last {res.last:.4f}"})


@dataclass
class EvalPlan:
    """An evaluation's sweep jobs, and what its group manifest needs once they are done."""
    target: _Target
    spec: dict
    cfg: Any
    params: dict
    inputs: dict
    seeds: list[int]
    jobs: list
    test_images: int
    device_type: str


def plan_eval(store: Store, t: _Target, *, repeats: int = 3, device: str = "auto", batched: str = "auto",
              reporter: Reporter = SILENT, tests: dict | None = None, **overrides) -> EvalPlan:
    """The sweep jobs of one evaluation (one per repeat; one for all repeats when they stack on CUDA);
    announces the training it will do (with an estimate) when some repeat is not stored yet. Plans of
    many sets (the pipeline's) pass one `tests` dict, so the real dataset is loaded, its test split
    prepared and hashed once, and every job shares the one copy."""
    from ..executors import estimate_seconds, gpu_share
    from ..nn import engine
    from ..nn.device import resolve_device

    check_run_count(repeats, "--repeats")
    if t.x.shape[0] == 0:
        raise UsageError(f"{t.label} has no images to train on")
    dev = resolve_device(device)
    if t.value_space == "zca":  # refuse a set whose ZCA recipe is unknown before anything is loaded
        from ..data import zca

        zca.settings_for(t.publisher, t.label)
    spec, cfg = plan(t.dataset, t.num_classes, int(t.x.shape[1]), int(t.x.shape[-1]), t.ipc, t.factor, **overrides)
    side = _test_side(store, t, {} if tests is None else tests)
    norm = engine.set_normalization(t.value_space, side.stats)
    params = {"dataset": t.dataset, "model": spec, "train": cfg.params(), "value_space": t.value_space,
              "normalize": list(map(list, norm)) if norm else None}
    if side.zca_params is not None:
        params["zca"] = side.zca_params
    inputs = {**t.inputs, "test": side.digest}
    test = side.shared
    data = Shared(f"train:{next(iter(t.inputs.values()))}", (t.x, t.y))
    job_spec = EvalSpec(spec, cfg, data, test, norm, device, batched)
    n, size = int(t.x.shape[0]), int(t.x.shape[-1])
    cost = estimate_seconds(cfg.epochs * engine.iterations_per_epoch(n, cfg.batch_size), min(n, cfg.batch_size),
                            size * size)
    seeds = list(range(repeats))
    together = engine.plan_batched(spec, dev, repeats, batched)
    res = Resources(cpus=1, gpu=0.0 if device == "cpu" else gpu_share(size))
    jobs = plan_seeds(store, Keyed(RUN_STAGE, VERSION, params, inputs), seeds,
                      SeedWork(eval_job, job_spec, f"eval {t.label}", cost, res), together=together)
    missing = [r for j in jobs for r in j.runs if store.load_run(r.stage, r.key) is None]
    test_n = int(side.shared.value[1].shape[0])
    if missing:
        _announce(reporter, t, spec, cfg, len(missing), dev, test_n)
    return EvalPlan(t, spec, cfg, params, inputs, seeds, jobs, test_n, dev.type)


@dataclass
class _TestSide:
    stats: tuple
    zca_params: dict | None
    digest: str       # of the real test split (the runs' input)
    shared: Shared    # the split as the network sees it, shared by every job that tests on it


def _test_side(store: Store, t: _Target, tests: dict) -> _TestSide:
    key = (t.dataset, t.value_space, t.publisher)
    if key not in tests:
        ds = load_real(t.dataset, store)
        test_x, zca_params = space.test_split(ds, t.value_space, t.publisher, t.label)
        # shared inputs travel once per worker (or once into Ray's object store), named by content
        tests[key] = _TestSide((tuple(ds.mean), tuple(ds.std)), zca_params, tensors.digest(ds.test_x, ds.test_y),
                               Shared(f"test:{tensors.digest(test_x)}", (test_x, ds.test_y)))
    return tests[key]


def _announce(reporter: Reporter, t: _Target, spec: dict, cfg, runs: int, dev, test_n: int) -> None:
    from .estimates import announce_training
    from .fitted import DataShape
    from .modelcheck import label

    why = training.fitted_preset("eval", t.dataset, DataShape(int(t.x.shape[1]), int(t.x.shape[-1]),
                                                              t.num_classes))[1]
    if why:
        reporter.info(why)
    what = (f"evaluating {t.label}: {runs} run(s) x {cfg.epochs} epochs of "
            f"{label(spec['name'], spec.get('options', {}))} on {int(t.x.shape[0])} images")
    announce_training(reporter, what, spec, cfg, int(t.x.shape[0]), runs, dev, test_n=test_n)


def finish_eval(store: Store, p: EvalPlan, report) -> tuple[Manifest, dict]:
    """The group manifest over the per-repeat runs of a finished sweep."""
    runs, fresh = seed_manifests(p.jobs, report)
    t, spec, cfg, seeds = p.target, p.spec, p.cfg, p.seeds
    per = [{"seed": s, "best": m.meta["best"], "last": m.meta["last"], "evals": m.meta["evals"]}
           for s, m in zip(seeds, runs)]
    stats = summarize([q["best"] for q in per], [q["last"] for q in per])
    meta = {"target": t.label, "dataset": t.dataset, "set": t.set_key, "model": spec, "epochs": cfg.epochs,
            "repeats": len(seeds), "train_images": int(t.x.shape[0]), "test_images": p.test_images,
            "per_repeat": per, **stats,
            "summary": f"{t.label}: {spec['name']} x{len(seeds)}, best {stats['best_mean']:.4f}"
                       f"±{stats['best_std']:.4f}, last {stats['last_mean']:.4f}±{stats['last_std']:.4f}"}
    group = group_manifest(store, Keyed(STAGE, VERSION, p.params, p.inputs), dict(zip(seeds, runs)), meta)
    return group, {"computed": fresh}


def _evaluate(store: Store, t: _Target, *, repeats: int = 3, device: str = "auto", batched: str = "auto",
              on_epoch: Callable | None = None, reporter: Reporter = SILENT, pool=None,
              on_status: Callable | None = None, **overrides) -> tuple[Manifest, dict]:
    p = plan_eval(store, t, repeats=repeats, device=device, batched=batched, reporter=reporter, **overrides)
    report = run_jobs(store, p.jobs, pool, p.device_type, on_epoch, on_status)
    group, info = finish_eval(store, p, report)
    return group, {**info, "report": report}


def summarize(best: list[float], last: list[float]) -> dict:
    def ms(v):
        mean = sum(v) / len(v)
        return mean, math.sqrt(sum((a - mean) ** 2 for a in v) / len(v))

    bm, bs = ms(best)
    lm, ls = ms(last)
    return {"best_mean": bm, "best_std": bs, "last_mean": lm, "last_std": ls}


def result_row(m: Manifest, cached: bool | None = None) -> dict:
    meta = m.meta
    row = {"target": meta["target"], "dataset": meta["dataset"], "model": meta["model"]["name"],
           "epochs": meta["epochs"], "repeats": meta["repeats"], "train_images": meta["train_images"],
           "best_mean": meta["best_mean"], "best_std": meta["best_std"], "last_mean": meta["last_mean"],
           "last_std": meta["last_std"], "per_repeat": meta["per_repeat"], "key": m.key}
    if cached is not None:
        row["cached"] = cached
    return row


def pooled_row(label: str, rows: list[dict]) -> dict:
    """One row for a prune group (the paper's protocol): accuracies pooled over every repeat of every
    run's set, i.e. mean and population std over runs x repeats (as `yoco report` pools a cell)."""
    per = [p for r in rows for p in r["per_repeat"]]
    stats = summarize([p["best"] for p in per], [p["last"] for p in per])
    first = rows[0]
    return {"target": label, "dataset": first["dataset"], "model": first["model"], "epochs": first["epochs"],
            "repeats": len(per), "train_images": first["train_images"], **stats, "per_repeat": per,
            "key": None, "cached": all(r.get("cached") for r in rows), "pooled_over": [r["target"] for r in rows],
            "runs": rows}
