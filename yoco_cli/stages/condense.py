"""Stage "condense": a real dataset -> a condensed set in the store (output "set").

The key covers the source data's digest, the method, IPC, factor, seed and every method
setting; the device and the checkpoint interval are not part of it (the result does not
depend on the interval; the device is recorded in the manifest's meta). Iterative methods
checkpoint into `store.partial_dir("condense", key)`; running the same command again after
an interruption resumes from the last checkpoint and ends with the same bytes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import UsageError
from ..progress import SILENT, Reporter
from ..store import Manifest, Store, run_cached
from .datasets import load_real
from .sets import check_set_name, set_result

STAGE = "condense"
VERSION = 1
DEFAULT_FACTOR = {"imagenet10": 3}  # IDC: f=3 at 224 px, f=2 elsewhere (docs/method.md §6.1)
DEFAULT_CHECKPOINT_EVERY = 50


@dataclass
class Request:
    dataset: str
    method: str = "idc"
    ipc: int = 10
    factor: int | None = None
    seed: int = 0
    device: str = "auto"
    overrides: dict = field(default_factory=dict)
    checkpoint_every: int | None = None
    name: str | None = None


@dataclass
class Result:
    manifest: Manifest
    cached: bool
    ref: str
    params: dict


def default_factor(dataset: str) -> int:
    return DEFAULT_FACTOR.get(dataset, 2)


def default_ref(dataset: str, method: str, ipc: int) -> str:
    """`digits/idc/ipc10`; a `folder:PATH` dataset is named by the folder's own name
    (`folder/mnist28/dm/ipc10`), not by its whole path."""
    if dataset.startswith("folder:"):
        from pathlib import Path

        dataset = "folder/" + (Path(dataset[len("folder:"):]).expanduser().resolve().name or "root")
    safe = re.sub(r"[^A-Za-z0-9._@+=,/-]+", "-", dataset).strip("-/") or "dataset"
    return f"{safe}/{method}/ipc{ipc}"


def plan(req: Request, real) -> tuple[dict, int]:
    """Resolve the full parameter set (the cache key's params) and the checkpoint interval."""
    from .. import condensation as methods
    from ..condensation.common import check_ipc

    mod = methods.get(req.method)
    factor = req.factor if req.factor is not None else default_factor(real.name)
    check_ipc(real, req.ipc, factor)
    base, _ = fitted_settings(mod, real)
    settings = methods.resolve_params(req.method, real.name, req.overrides, base)
    if hasattr(mod, "validate"):
        mod.validate(settings)
    if "model" in settings:  # fail on a model that cannot take the data before the first iteration
        from ..nn.models import parse_model_arg
        from .modelcheck import checked_spec

        name, options = parse_model_arg(str(settings["model"]))
        checked_spec(name, options, real.num_classes, real.channels, real.image_size)
    params = {"dataset": real.name, "method": req.method, "ipc": req.ipc, "factor": factor,
              "seed": req.seed if getattr(mod, "SEEDED", True) else 0, "settings": settings}
    every = req.checkpoint_every
    if every is None:
        every = DEFAULT_CHECKPOINT_EVERY if mod.ITERATIVE else 0
    if every < 0:
        raise UsageError(f"--checkpoint-every must be 0 (off) or positive, got {every}")
    return params, every


def fitted_settings(mod, real) -> tuple[dict, str | None]:
    """The method's preset for the dataset, or one fitted to its shape and size (with why)."""
    import torch

    from .fitted import DataShape, condense_settings

    per_class = int(torch.bincount(real.train_y, minlength=real.num_classes).min()) if len(real.train_y) else 0
    return condense_settings(mod, real.name, DataShape(real.channels, real.image_size, real.num_classes, per_class))


def run(store: Store, req: Request, on_iteration=None, on_start=None, reporter: Reporter = SILENT) -> Result:
    """Condense (or find in the cache) and name the result. `on_start(total)` fires on a cache miss;
    a run that will take more than about a minute is announced on `reporter` with an estimate
    once its first iterations are timed."""
    from .. import condensation as methods
    from ..condensation.common import dataset_digest

    methods.get(req.method)  # fail on an unknown method before loading any data
    if req.name:
        check_set_name(store, req.name)
    real = load_real(req.dataset, store)
    params, every = plan(req, real)
    ref = req.name or default_ref(real.name, req.method, req.ipc)
    store.check_ref_name(ref)
    digest = dataset_digest(real)

    def compute(tmp, key):
        return _compute(store, tmp, key, req, real, params, digest, every, on_iteration, on_start, reporter)

    manifest, cached = run_cached(store, STAGE, VERSION, params, {"dataset": digest}, compute, ref=ref)
    return Result(manifest, cached, ref, params)


def _compute(store, tmp, key, req, real, params, digest, every, on_iteration, on_start, reporter):
    from .. import condensation as methods
    from ..condensation.common import Checkpointer, Job
    from ..data.condensed import CondensedSet

    mod = methods.get(req.method)
    device = _device(req.device) if mod.ITERATIVE else "cpu"
    folder = store.partial_dir(STAGE, key) if (mod.ITERATIVE and every) else None
    if mod.ITERATIVE:
        _threads(real, params, device)
        on_iteration = _timed(reporter, req, params, device, on_iteration)
        why = fitted_settings(mod, real)[1]
        if why:
            reporter.info(why)
    job = Job(real, params["ipc"], params["factor"], params["seed"], params["settings"], device,
              Checkpointer(folder, key, every), on_iteration)
    if on_start is not None:
        on_start(total_iterations(req.method, params["settings"]))
    outcome = mod.run(job)
    made_by = {"method": req.method, "params": params,
               "source": {"dataset": real.name, "digest": digest}}
    cset = CondensedSet(images=outcome.images.detach().cpu().float().contiguous(), labels=outcome.labels.cpu(),
                        dataset=real.name, num_classes=real.num_classes, factor=params["factor"],
                        value_space="raw01", ipc=params["ipc"], meta=made_by)
    summary = (f"{real.name} {req.method} ipc{params['ipc']} f{params['factor']} seed {params['seed']}"
               + (f", final loss {outcome.losses[-1]:.4g}" if outcome.losses else ""))
    extra = {"device": _describe(device), "iterations": len(outcome.losses), "class_names": list(real.classes),
             "loss_curve": _curve(outcome.losses), **outcome.info}
    return set_result(tmp, cset, summary, extra)


def _timed(reporter: Reporter, req: Request, params: dict, device, on_iteration):
    """on_iteration, plus the clock that announces a long run once its first iterations are timed."""
    from .estimates import CondenseClock

    s = params["settings"]
    what = (f"condensing {params['dataset']} with {req.method}: {total_iterations(req.method, s)} iterations "
            f"of {s.get('model', 'convnet')}, IPC {params['ipc']}")
    clock = CondenseClock(reporter, what, _describe(device))

    def tick(done: int, total: int, loss: float) -> None:
        clock.tick(done, total)
        if on_iteration is not None:
            on_iteration(done, total, loss)

    return tick


def work(method: str, params: dict, real, step_overhead: float) -> float:
    """A condensation's expected cost in multiply-adds (for progress weights, not for keys):
    per iteration and class, DM embeds a real batch (a forward) and takes a step on the decoded
    synthetic images; IDC matches gradients (about three steps) `inner_loop` times and trains its
    network on `n_data` real images. Real-image baselines are one step's worth."""
    from ..nn.device import model_step_macs
    from ..nn.models import parse_model_arg

    s = params["settings"]
    if "model" not in s:
        return step_overhead
    name, options = parse_model_arg(str(s["model"]))
    spec = {"name": name, "channels": real.channels, "image_size": real.image_size, "options": options}

    def step(batch: int) -> float:
        return (model_step_macs(spec, batch) or 0.0) + step_overhead

    syn = params["ipc"] * params["factor"] ** 2
    iters, classes, real_b = int(s.get("iterations", 1)), real.num_classes, int(s.get("batch_real", 64))
    if method == "idc":
        net = int(s.get("n_data", 0)) / max(int(s.get("net_batch", 64)), 1) * step(int(s.get("net_batch", 64)))
        return iters * int(s.get("inner_loop", 1)) * (classes * 3 * step(max(real_b, syn)) + net)
    return iters * classes * (step(real_b) / 3 + step(syn))


def total_iterations(method: str, settings: dict) -> int:
    return int(settings.get("iterations", 0))


def _threads(real, params: dict, device) -> int:
    """Apply the caller's thread policy to this condensation's matching step: one class's real batch
    plus its decoded synthetic images through the matching network (a no-op without a policy)."""
    from ..nn.device import model_step_macs, use_threads
    from ..nn.models import parse_model_arg

    s = params["settings"]
    name, options = parse_model_arg(str(s.get("model", "convnet")))
    batch = int(s.get("batch_real", 64)) + params["ipc"] * params["factor"] ** 2
    spec = {"name": name, "channels": real.channels, "image_size": real.image_size, "options": options}
    return use_threads(model_step_macs(spec, batch), device)


def _device(spec: str):
    from ..nn.device import resolve_device

    return resolve_device(spec)


def _describe(device) -> str:
    if isinstance(device, str):
        return device
    from ..nn.device import describe

    return describe(device)


def _curve(losses: list[float], points: int = 50) -> list[list[float | None]]:
    """A short (iteration, loss) curve for the manifest: every loss would bloat it (DM: 20k)."""
    import math

    if not losses:
        return []
    step = max(1, math.ceil(len(losses) / points))
    picks = list(range(0, len(losses), step))
    if picks[-1] != len(losses) - 1:
        picks.append(len(losses) - 1)
    return [[i + 1, losses[i] if math.isfinite(losses[i]) else None] for i in picks]
