"""IDC (Kim et al., ICML'22): multi-formation condensation by gradient matching (docs/method.md §6.1).

Synthetic images P live in raw pixel space ([0, 1]), f x f training images per stored
image. Each outer iteration:
  1. a fresh network (and its SGD), pre-trained for `early` epochs on real data if asked
     (IDC's ImageNet setting; the YOCO copy drops this, docs/method.md §9.15);
  2. P is clamped to [0, 1];
  3. `inner_loop` times: for every class, match the gradient of the loss on a real batch
     with the gradient on the class's decoded synthetic images (both normalised, then the
     SAME DSA draw on the concatenated batch), conv kernels only (params with >= 3 dims),
     and take one momentum-SGD step on P; then train the network on real data (DSA +
     CutMix) for `n_data` samples.
The image learning rate is IDC's tag value scaled by IPC/10 (and (size/32)^2 for CIFAR-style
presets). All randomness of outer iteration `it` comes from a generator seeded with
(seed, it), so checkpoints are just (P, momentum, it).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .common import (
    Job,
    Outcome,
    check_numbers,
    class_indices,
    final_outcome,
    generator,
    image_state,
    iteration_seed,
    run_loop,
    sample_indices,
    seeded_global,
    sgd_momentum_step,
)

NAME = "idc"
ITERATIVE = True
METRICS = ("mse", "l1")
LR_SCALES = ("ipc_size", "ipc", "none")

_CIFAR = {
    "model": "convnet", "iterations": 2000, "inner_loop": 100, "batch_real": 64, "batch_syn_max": 128,
    "lr_img": 5e-3, "lr_scale": "ipc_size", "mom_img": 0.5, "metric": "mse", "match_aug": "color_crop_cutout",
    "n_data": 2000, "net_batch": 64, "net_lr": 0.01, "net_momentum": 0.9, "net_wd": 5e-4,
    "net_aug": "color_crop", "mix_p": 0.5, "early": 0,
}
PRESETS = {
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
    "imagenet10": {**_CIFAR, "model": "resnet10_ap", "iterations": 500, "metric": "l1", "lr_img": 3e-3,
                   "lr_scale": "ipc", "n_data": 500, "mix_p": 1.0, "early": 10},
    # digits (8x8, ~144 train images per class): a CPU-minutes budget, tuned on digits
    "digits": {**_CIFAR, "model": "convnet:width=64,depth=2", "iterations": 60, "inner_loop": 10, "n_data": 256,
               "lr_img": 0.05, "lr_scale": "ipc"},
}


def preset(dataset: str) -> dict:
    return dict(PRESETS.get(dataset, _CIFAR))


def image_lr(settings: dict, ipc: int, image_size: int) -> float:
    """IDC's scaling of the tagged learning rate (docs/method.md §6.1, settings)."""
    scale = settings["lr_scale"]
    if scale not in LR_SCALES:
        raise UsageError(f"unknown lr_scale {scale!r}", f"use one of {', '.join(LR_SCALES)}")
    lr = settings["lr_img"]
    if scale in ("ipc", "ipc_size"):
        lr *= ipc / 10
    if scale == "ipc_size":
        lr *= (image_size / 32) ** 2
    return lr


def validate(s: dict) -> None:
    if s["metric"] not in METRICS:
        raise UsageError(f"unknown metric {s['metric']!r}", f"use one of {', '.join(METRICS)}")
    for k in ("iterations", "inner_loop", "batch_real", "batch_syn_max", "net_batch"):
        if int(s[k]) < 1:
            raise UsageError(f"setting {k} must be at least 1, got {s[k]}")
    for k in ("n_data", "early"):
        if int(s[k]) < 0:
            raise UsageError(f"setting {k} must be 0 or more, got {s[k]}")
    if s["lr_scale"] not in LR_SCALES:
        raise UsageError(f"unknown lr_scale {s['lr_scale']!r}", f"use one of {', '.join(LR_SCALES)}")
    check_numbers(s, positive=("lr_img", "net_lr"), nonnegative=("net_wd",), momenta=("mom_img", "net_momentum"),
                  probabilities=("mix_p",))


# -- the pieces ------------------------------------------------------------------------------

def distance(a, b, metric: str):
    """IDC's per-tensor distances: a SUM, not a mean (docs/method.md §6.1)."""
    d = a - b
    return (d * d).sum() if metric == "mse" else d.abs().sum()


def matched_params(model) -> list:
    """The tensors whose gradients are matched: conv kernels (>= 3 dims); biases, norms, FC skipped."""
    return [p for p in model.parameters() if p.dim() >= 3]


def grad_match_loss(model, x_real, y_real, x_syn, y_syn, metric: str):
    import torch
    import torch.nn.functional as F

    params = matched_params(model)
    g_real = torch.autograd.grad(F.cross_entropy(model(x_real), y_real), params)
    g_syn = torch.autograd.grad(F.cross_entropy(model(x_syn), y_syn), params, create_graph=True)
    return sum(distance(gr.detach(), gs, metric) for gr, gs in zip(g_real, g_syn))


def build_net(job: Job, it: int):
    """A fresh network for outer iteration `it`, initialised from (seed, it) on the CPU, then moved."""
    from ..nn.models import build_model, parse_model_arg

    name, options = parse_model_arg(job.params["model"])
    real = job.real
    with seeded_global(iteration_seed(job.seed, it, stream=1)):
        model = build_model(name, real.num_classes, real.channels, real.image_size, **options)
    return model.to(job.device)


def net_optimizer(model, s: dict):
    import torch

    return torch.optim.SGD(model.parameters(), lr=s["net_lr"], momentum=s["net_momentum"], weight_decay=s["net_wd"])


def random_batches(pool, n_samples: int, batch: int, gen):
    """IDC's network update: random real batches until `n_samples` images have been seen."""
    for _ in range(math.ceil(n_samples / batch)):
        yield sample_indices(pool, batch, gen)


def epoch_batches(n: int, batch: int, gen):
    """One epoch: a seeded permutation of all n images, sliced into batches (early pre-training)."""
    import torch

    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch):
        yield perm[i:i + batch]


def train_net(model, opt, x_all, y_all, batches, s: dict, normalize, gen) -> None:
    """Train on real data, batch by batch: normalise, DSA (per sample), CutMix, SGD step.

    The engine's `train` builds its own fresh models per run; IDC's network lives through an
    outer iteration, so this loop drives the same DSA/CutMix functions itself.
    """
    from ..nn.augment import DSA, cutmix, mixed_loss

    aug = DSA(s["net_aug"], siamese=False)
    model.train()
    for idx in batches:
        idx = idx.to(x_all.device)
        x = normalize(x_all[idx])
        if aug:
            x = aug(x, gen)
        x, ya, yb, ratio = cutmix(x, y_all[idx], gen, p=s["mix_p"])
        opt.zero_grad(set_to_none=True)
        mixed_loss(model(x), ya, yb, ratio).backward()
        opt.step()


# -- the run -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Matching:
    """What every class step of one run shares: the settings, the real data per class and the
    transforms (fixed for the run; the model, images and generator change per step)."""
    s: dict
    ipc: int
    factor: int
    x_all: Any
    pools: list
    normalize: Callable
    match_aug: Any
    lr: float
    decode_zoom: Callable


def run(job: Job) -> Outcome:
    import torch

    from ..data.decode import decode_zoom
    from ..nn.augment import DSA

    s = job.params
    validate(s)
    real, ipc, f, dev = job.real, job.ipc, job.factor, job.device
    state, labels = image_state(job)
    x_all, y_all = real.train_x.to(dev), real.train_y.to(dev)
    pools = class_indices(real.train_y, real.num_classes)
    everything = torch.arange(len(y_all))
    normalize = real.normalize
    lr = image_lr(s, ipc, real.image_size)
    match_aug = DSA(s["match_aug"], siamese=True)
    shared = _Matching(s, ipc, f, x_all, pools, normalize, match_aug, lr, decode_zoom)

    def outer(it: int) -> float:
        P, buf = state["images"], state["momentum"]
        gen = generator(iteration_seed(job.seed, it))
        model = build_net(job, it)
        opt = net_optimizer(model, s)
        for _ in range(s["early"]):  # IDC's ImageNet setting: pre-train the fresh net for `early` epochs
            train_net(model, opt, x_all, y_all, epoch_batches(len(y_all), s["net_batch"], gen), s, normalize, gen)
        with torch.no_grad():
            P.clamp_(0.0, 1.0)
        total, count = 0.0, 0
        for inner in range(s["inner_loop"]):
            model.train()
            for c in range(real.num_classes):
                loss = _class_step(shared, model, P, buf, c, gen)
                total, count = total + loss, count + 1
            if s["n_data"] and inner < s["inner_loop"] - 1:  # the net is dropped after the last step
                train_net(model, opt, x_all, y_all, random_batches(everything, s["n_data"], s["net_batch"], gen),
                          s, normalize, gen)
        return total / max(count, 1)

    losses = run_loop(job, state, s["iterations"], outer)
    return final_outcome(state, labels, losses)


def _class_step(m: _Matching, model, P, buf, c: int, gen) -> float:
    """One matching step for class c; momentum SGD on all of P (IDC steps one optimiser over the whole set)."""
    import torch

    s, ipc, f, x_all, pool, normalize, match_aug, lr, decode_zoom = (
        m.s, m.ipc, m.factor, m.x_all, m.pools[c], m.normalize, m.match_aug, m.lr, m.decode_zoom)
    dev = P.device
    real_idx = sample_indices(pool, s["batch_real"], gen).to(dev)
    x_real = normalize(x_all[real_idx])
    leaf = P[c * ipc:(c + 1) * ipc].detach().requires_grad_(True)
    syn = decode_zoom(leaf, f)
    if syn.shape[0] > s["batch_syn_max"]:
        syn = syn[torch.randperm(syn.shape[0], generator=gen)[: s["batch_syn_max"]].to(dev)]
    x_syn = normalize(syn)
    n = x_real.shape[0]
    x_aug = match_aug(torch.cat([x_real, x_syn]), gen) if match_aug else torch.cat([x_real, x_syn])
    y_real = torch.full((n,), c, dtype=torch.int64, device=dev)
    y_syn = torch.full((x_syn.shape[0],), c, dtype=torch.int64, device=dev)
    loss = grad_match_loss(model, x_aug[:n], y_real, x_aug[n:], y_syn, s["metric"])
    (grad,) = torch.autograd.grad(loss, leaf)
    with torch.no_grad():
        sgd_momentum_step(P, grad, buf, lr, s["mom_img"], rows=slice(c * ipc, (c + 1) * ipc))
    return float(loss.detach())
