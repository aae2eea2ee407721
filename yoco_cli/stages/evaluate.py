"""Evaluation protocol of spec 5: train a fresh network on a set, test on the real test split.

Per repeat (seed r): the set's decoded images, the dataset's preset (model, epochs, DSA,
CutMix), SGD lr 0.01 / momentum 0.9 / wd 5e-4 with MultiStepLR per epoch at floor(2E/3),
floor(5E/6), test accuracy after epochs E/4, E/2, 3E/4 and E. Reported: best (max of the
four) and last (epoch E), mean and population std (numpy's default, as the reference logs)
over repeats. Normalization follows the set's value space; the real test split is brought
into the same space.

Storage: stage "eval-run" per repeat (output "result", a small JSON with best/last/curve),
stage "eval" for the group (outputs "seed{r}/result"; meta holds the means and stds), keyed
by the set's digest (or the real training split's digest for `evaluate_full`), the test
split's digest, the model spec and the training config. The same request twice is instant;
more repeats later compute only the new ones.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..data.condensed import CondensedSet
from ..errors import UsageError
from ..store import Manifest, StageResult, Store
from .dynamics import DIGITS_MODEL
from .datasets import load_real
from .seeded import check_run_count, group_manifest, run_seeds

RUN_STAGE, STAGE, VERSION = "eval-run", "eval", 1


@dataclass(frozen=True)
class EvalPreset:
    model: str = "convnet"
    model_options: dict = field(default_factory=dict)
    epochs: Optional[int] = 1000  # None: ImageNet's ipc_epoch rule
    batch_size: int = 64
    lr: float = 0.01
    dsa: str = "color_crop_flip_scale_rotate"
    cutmix_p: float = 0.5
    imagenet_aug: bool = False


EVAL_PRESETS: dict[str, EvalPreset] = {
    "cifar10": EvalPreset(),
    "cifar100": EvalPreset(),
    "imagenet10": EvalPreset(model="resnet10_ap", epochs=None, dsa="", cutmix_p=1.0, imagenet_aug=True),
    "digits": EvalPreset(model_options=DIGITS_MODEL, epochs=200),
}


def eval_preset(dataset: str) -> EvalPreset:
    return EVAL_PRESETS.get(dataset, EVAL_PRESETS["cifar10"])


def ipc_epochs(ipc: int, factor: int) -> int:
    """ImageNet's epoch rule on decoded images per class (spec 5.2): 2000/1500/1000/500/300."""
    n = ipc * factor * factor
    for limit, epochs in ((10, 2000), (50, 1500), (200, 1000), (500, 500)):
        if n <= limit:
            return epochs
    return 300


def plan(dataset: str, num_classes: int, channels: int, image_size: int, ipc: int, factor: int, *,
         model: str | None = None, epochs: int | None = None, batch_size: int | None = None,
         lr: float | None = None, aug: str | None = None, cutmix: float | None = None, compile: str = "auto"):
    """(model spec, TrainConfig) of the evaluation preset with overrides."""
    from ..nn.engine import TrainConfig, eval_epochs
    from ..nn.models import parse_model_arg
    from .modelcheck import checked_spec

    p = eval_preset(dataset)
    name, options = parse_model_arg(model) if model else (p.model, dict(p.model_options))
    spec = checked_spec(name, options, num_classes, channels, image_size)
    eps = epochs if epochs is not None else (p.epochs or ipc_epochs(ipc, factor))
    dsa = p.dsa if aug is None else ("" if aug.lower() in ("", "none", "off") else aug)
    cfg = TrainConfig(epochs=eps, batch_size=p.batch_size if batch_size is None else batch_size,
                      lr=p.lr if lr is None else lr, schedule="epoch",
                      dsa=dsa, cutmix_p=p.cutmix_p if cutmix is None else cutmix, imagenet_aug=p.imagenet_aug,
                      eval_at=eval_epochs(eps), compile=compile)
    return spec, cfg


def tensor_digest(*ts) -> str:
    """sha256 over tensors' dtype, shape and bytes (names a real split in cache keys)."""
    h = hashlib.sha256()
    for t in ts:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


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
    set_key: Optional[str] = None


def evaluate_set(store: Store, set_manifest: Manifest, cset: CondensedSet, **params) -> Manifest:
    """Spec-5 evaluation of a stored condensed (or pruned) set; cached."""
    return run_eval(store, set_manifest, cset, **params)[0]


def evaluate_full(store: Store, dataset: str, **params) -> Manifest:
    """Spec-5 evaluation of the whole real training split of `dataset` (the upper bound)."""
    return run_eval(store, None, None, dataset, **params)[0]


def run_eval(store: Store, set_manifest: Manifest | None, cset: CondensedSet | None, dataset: str | None = None,
             **params) -> tuple[Manifest, dict]:
    """evaluate_set (a set) or evaluate_full (cset None, a dataset name); also says which repeats ran now."""
    target = _set_target(store, set_manifest, cset) if cset is not None else _full_target(store, dataset)
    return _evaluate(store, target, **params)


def _set_target(store: Store, m: Manifest, cset: CondensedSet) -> _Target:
    from .sets import set_label

    x, y, _ = cset.decoded()
    # ImageNet's epoch rule uses the IPC and factor the set was condensed at, also after pruning (spec 5.2)
    pruned = (cset.meta or {}).get("pruned") or {}
    ipc = int(pruned.get("from") or cset.ipc or 1)
    factor = int(pruned.get("source_factor") or cset.factor)
    return _Target(set_label(store, m), cset.dataset, x, y, cset.value_space, cset.num_classes,
                   ipc, factor, {"set": m.digest("set")}, m.key)


def _full_target(store: Store, dataset: str | None) -> _Target:
    import torch

    if not dataset:
        raise UsageError("name a dataset to evaluate its full training split")
    ds = load_real(dataset, store)
    ipc = int(torch.bincount(ds.train_y, minlength=ds.num_classes).max())
    return _Target(f"{dataset} (full train split)", dataset, ds.train_x, ds.train_y, "raw01", ds.num_classes,
                   ipc, 1, {"train": tensor_digest(ds.train_x, ds.train_y)})


def _evaluate(store: Store, t: _Target, *, repeats: int = 3, device: str = "auto", batched: str = "auto",
              on_epoch: Callable | None = None, **overrides) -> tuple[Manifest, dict]:
    from ..nn import engine
    from ..nn.device import resolve_device

    check_run_count(repeats, "--repeats")
    if t.x.shape[0] == 0:
        raise UsageError(f"{t.label} has no images to train on")
    dev = resolve_device(device)
    spec, cfg = plan(t.dataset, t.num_classes, int(t.x.shape[1]), int(t.x.shape[-1]), t.ipc, t.factor, **overrides)
    ds = load_real(t.dataset, store)
    stats = (tuple(ds.mean), tuple(ds.std))
    test = (engine.prepare_test(t.value_space, stats, ds.test_x), ds.test_y)
    norm = engine.set_normalization(t.value_space, stats)
    params = {"dataset": t.dataset, "model": spec, "train": cfg.params(), "value_space": t.value_space,
              "normalize": list(map(list, norm)) if norm else None}
    inputs = {**t.inputs, "test": tensor_digest(ds.test_x, ds.test_y)}

    def fit(seeds: list[int], partial: Optional[Path]):
        ck = engine.Checkpoint(partial, 30.0) if partial is not None else None
        return engine.train(spec, t.x, t.y, cfg, seeds=seeds, device=dev, normalize=norm, test=test,
                            on_epoch=on_epoch, checkpoint=ck, batched=batched)

    def write(tmp: Path, seed: int, res) -> StageResult:
        doc = {"seed": seed, "best": res.best, "last": res.last,
               "evals": {str(k): v for k, v in sorted(res.evals.items())},
               "final_loss": res.history[-1]["loss"], "final_train_acc": res.history[-1]["acc"]}
        path = tmp / "result.json"
        path.write_text(json.dumps(doc, sort_keys=True, indent=1) + "\n")
        return StageResult(outputs={"result": path},
                           meta={**doc, "device": engine_device(dev), "compiled": res.compiled, "batched": res.batched,
                                 "summary": f"repeat {seed}: best {res.best:.4f} last {res.last:.4f}"})

    seeds = list(range(repeats))
    together = engine.plan_batched(spec, dev, repeats, batched)
    runs, fresh = run_seeds(store, RUN_STAGE, VERSION, params, inputs, seeds, fit, write, together)
    per = [{"seed": s, "best": m.meta["best"], "last": m.meta["last"], "evals": m.meta["evals"]}
           for s, m in zip(seeds, runs)]
    stats = summarize([p["best"] for p in per], [p["last"] for p in per])
    meta = {"target": t.label, "dataset": t.dataset, "set": t.set_key, "model": spec, "epochs": cfg.epochs,
            "repeats": repeats, "train_images": int(t.x.shape[0]), "test_images": int(ds.test_x.shape[0]),
            "per_repeat": per, **stats,
            "summary": f"{t.label}: {spec['name']} x{repeats}, best {stats['best_mean']:.4f}"
                       f"±{stats['best_std']:.4f}, last {stats['last_mean']:.4f}±{stats['last_std']:.4f}"}
    group = group_manifest(store, STAGE, VERSION, params, inputs, dict(zip(seeds, runs)), meta)
    return group, {"computed": fresh}


def engine_device(dev) -> str:
    from ..nn.device import describe

    return describe(dev)


def summarize(best: list[float], last: list[float]) -> dict:
    def ms(v):
        mean = sum(v) / len(v)
        return mean, math.sqrt(sum((a - mean) ** 2 for a in v) / len(v))

    bm, bs = ms(best)
    lm, ls = ms(last)
    return {"best_mean": bm, "best_std": bs, "last_mean": lm, "last_std": ls}


def find_evals(store: Store, set_manifest: Manifest) -> list[Manifest]:
    digest = set_manifest.digest("set")
    return [m for m in store.all_runs(STAGE) if m.inputs.get("set") == digest]


def result_row(m: Manifest, cached: bool | None = None) -> dict:
    meta = m.meta
    row = {"target": meta["target"], "dataset": meta["dataset"], "model": meta["model"]["name"],
           "epochs": meta["epochs"], "repeats": meta["repeats"], "train_images": meta["train_images"],
           "best_mean": meta["best_mean"], "best_std": meta["best_std"], "last_mean": meta["last_mean"],
           "last_std": meta["last_std"], "per_repeat": meta["per_repeat"], "key": m.key}
    if cached is not None:
        row["cached"] = cached
    return row
