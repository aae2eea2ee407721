"""DM (Zhao & Bilen, WACV'23) with multi-formation: distribution matching (docs/method.md §6.2).

Each iteration draws a fresh randomly initialised network (never trained, never updated)
and, for every class, matches the mean embedding of a real batch with the mean embedding
of the class's decoded synthetic images, both normalised and put through ONE Siamese DSA
draw. The loss is summed over classes and one momentum-SGD step is taken on the stored
images, which live in raw space (clamped to [0, 1] at the start of every iteration, as in
IDC's framework) and are decoded before normalising, so the learning rate is in raw-pixel
units: DM's lr 1.0 on normalised CIFAR images is about 1.0 * std^2 = 0.04 here.
No second-order gradients and no network training: the cheapest condensation on a CPU.
"""
from __future__ import annotations

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
    sgd_momentum_step,
)
from .idc import build_net

NAME = "dm"
ITERATIVE = True

_CIFAR = {"model": "convnet", "iterations": 20000, "batch_real": 256, "lr_img": 0.04, "mom_img": 0.5,
          "aug": "color_crop_cutout_flip_scale_rotate"}
PRESETS = {
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
    "imagenet10": {**_CIFAR, "model": "resnet10_ap", "batch_real": 64},
    # digits (8x8, ~144 train images per class): a CPU-minutes budget, tuned on digits
    "digits": {**_CIFAR, "model": "convnet:width=64,depth=2", "iterations": 1000, "batch_real": 128, "lr_img": 0.3},
}


def preset(dataset: str) -> dict:
    return dict(PRESETS.get(dataset, _CIFAR))


def validate(s: dict) -> None:
    for k in ("iterations", "batch_real"):
        if int(s[k]) < 1:
            raise UsageError(f"setting {k} must be at least 1, got {s[k]}")
    check_numbers(s, positive=("lr_img",), momenta=("mom_img",))


def embedding_loss(model, x_real, x_syn):
    """|| mean embed(real) - mean embed(syn) ||^2 (real side without gradients)."""
    import torch

    with torch.no_grad():
        mu_real = model.embed(x_real).mean(dim=0)
    mu_syn = model.embed(x_syn).mean(dim=0)
    return ((mu_real - mu_syn) ** 2).sum()


def run(job: Job) -> Outcome:
    import torch

    from ..data.decode import decode_zoom
    from ..nn.augment import DSA

    s = job.params
    validate(s)
    real, ipc, f, dev = job.real, job.ipc, job.factor, job.device
    state, labels = image_state(job)
    x_all = real.train_x.to(dev)
    pools = class_indices(real.train_y, real.num_classes)
    aug = DSA(s["aug"], siamese=True)

    def step(it: int) -> float:
        P, buf = state["images"], state["momentum"]
        gen = generator(iteration_seed(job.seed, it))
        model = build_net(job, it)
        for p in model.parameters():
            p.requires_grad_(False)  # a random feature extractor: only the images learn
        model.train()
        with torch.no_grad():
            P.clamp_(0.0, 1.0)
        leaf = P.detach().requires_grad_(True)
        total = 0.0
        for c in range(real.num_classes):
            x_real = real.normalize(x_all[sample_indices(pools[c], s["batch_real"], gen).to(dev)])
            x_syn = real.normalize(decode_zoom(leaf[c * ipc:(c + 1) * ipc], f))
            n = x_real.shape[0]
            both = torch.cat([x_real, x_syn])
            both = aug(both, gen) if aug else both
            loss = embedding_loss(model, both[:n], both[n:])
            loss.backward()  # gradients accumulate class by class into leaf.grad (less memory)
            total += float(loss.detach())
        with torch.no_grad():
            sgd_momentum_step(P, leaf.grad, buf, s["lr_img"], s["mom_img"])
        return total

    losses = run_loop(job, state, s["iterations"], step)
    return final_outcome(state, labels, losses)
