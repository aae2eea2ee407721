"""Several small trainings as one model, against the same trainings one after another, on one thread.

    python benchmarks/stacking.py                 # G = 1, 2, 4, 8 runs of the digits evaluation step
    python benchmarks/stacking.py --groups 4 --steps 100

alone     G ConvNet-2 (width 64, instance norm, 8x8 inputs, batch 64) models, each its own
          forward + backward + SGD step, one after another: what a worker process does now.
grouped   the G models as ONE network: their convolutions as one grouped convolution (groups=G),
          one GroupNorm over the G*64 channels, one pooling, the G classifiers (kept as G
          products), one SGD step over the stacked parameters.
vmap      the G models through torch.func (stack_module_state + vmap), as the engine stacks seeds
          on CUDA.
Each side runs the same G batches for the same steps from the same initial weights, on one torch
thread, in rounds that alternate between the sides (CPU time of the process, best round). After the
last round the final weights of each side are compared with the alone side's bit for bit: the
engine may only group runs whose results stay byte-identical to running each alone.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _models(g: int):
    import torch

    from yoco_cli.nn.models import build_model

    out = []
    for i in range(g):
        torch.manual_seed(i)
        out.append(build_model("convnet", 10, 1, 8, width=64, depth=2))
    return out


class Grouped:
    """G ConvNet-2 models as one network of grouped layers (weights copied from `models`)."""

    def __init__(self, models):
        import torch

        from yoco_cli.nn.models import AvgPool2

        self.pool = AvgPool2()  # the models' own pooling (avg_pool2d's bits)
        self.g = len(models)
        convs = [[m.features[i] for m in models] for i in (0, 4)]
        norms = [[m.features[i] for m in models] for i in (1, 5)]
        cat = lambda ts: torch.cat([t.detach() for t in ts]).clone().requires_grad_(True)
        self.cw = [cat([c.weight for c in cs]) for cs in convs]
        self.cb = [cat([c.bias for c in cs]) for cs in convs]
        self.nw = [cat([n.weight for n in ns]) for ns in norms]
        self.nb = [cat([n.bias for n in ns]) for ns in norms]
        self.lw = torch.stack([m.classifier.weight.detach() for m in models]).clone().requires_grad_(True)
        self.lb = torch.stack([m.classifier.bias.detach() for m in models]).clone().requires_grad_(True)

    def parameters(self):
        return [*self.cw, *self.cb, *self.nw, *self.nb, self.lw, self.lb]

    def loss(self, xs, ys):
        import torch
        import torch.nn.functional as F

        x = torch.cat(xs, 1)  # [B, G, 8, 8]: run i's batch in channel i
        for k in range(2):
            x = F.conv2d(x, self.cw[k], self.cb[k], padding=1, groups=self.g)
            x = F.relu(F.group_norm(x, x.shape[1], self.nw[k], self.nb[k]))
            x = self.pool(x)
        feats = x.reshape(x.shape[0], self.g, -1)  # [B, G, 256]
        # the G classifiers stay separate products (a batched einsum rounds differently from F.linear)
        return sum(F.cross_entropy(F.linear(feats[:, i], self.lw[i], self.lb[i]), ys[i]) for i in range(self.g))

    def weights(self):
        return [t.detach().clone() for t in self.parameters()]


def _flat_alone(models):
    """The alone side's weights in Grouped's parameter order."""
    import torch

    ps = []
    for idx in (0, 4):
        ps.append(torch.cat([m.features[idx].weight.detach() for m in models]))
    for idx in (0, 4):
        ps.append(torch.cat([m.features[idx].bias.detach() for m in models]))
    for idx in (1, 5):
        ps.append(torch.cat([m.features[idx].weight.detach() for m in models]))
    for idx in (1, 5):
        ps.append(torch.cat([m.features[idx].bias.detach() for m in models]))
    ps.append(torch.stack([m.classifier.weight.detach() for m in models]))
    ps.append(torch.stack([m.classifier.bias.detach() for m in models]))
    return ps


def run(g: int, steps: int, rounds: int) -> dict:
    import torch
    import torch.nn.functional as F

    from yoco_cli.nn.engine import _Stacked

    gen = torch.Generator().manual_seed(0)
    xs = [[torch.randn(64, 1, 8, 8, generator=gen) for _ in range(g)] for _ in range(steps)]
    ys = [[torch.randint(10, (64,), generator=gen) for _ in range(g)] for _ in range(steps)]
    sgd = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "foreach": True}

    alone = _models(g)
    alone_opts = [torch.optim.SGD(m.parameters(), **sgd) for m in alone]
    grouped = Grouped(_models(g))
    grouped_opt = torch.optim.SGD(grouped.parameters(), **sgd)
    stacked = _Stacked(_models(g), "cpu")
    stacked_opt = torch.optim.SGD(stacked.parameters(), **sgd)

    def step_alone(s):
        for m, opt, x, y in zip(alone, alone_opts, xs[s], ys[s]):
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def step_grouped(s):
        loss = grouped.loss(xs[s], ys[s])
        grouped_opt.zero_grad(set_to_none=True)
        loss.backward()
        grouped_opt.step()

    def step_vmap(s):
        logits = stacked.forward(xs[s])
        loss = sum(F.cross_entropy(lg, y) for lg, y in zip(logits, ys[s]))
        stacked_opt.zero_grad(set_to_none=True)
        loss.backward()
        stacked_opt.step()

    sides = {"alone": step_alone, "grouped": step_grouped, "vmap": step_vmap}
    best = {k: float("inf") for k in sides}
    for r in range(rounds):  # each round continues training; rounds alternate the sides
        for name, fn in sides.items():
            c0 = _cpu()
            for s in range(steps):
                fn(s)
            best[name] = min(best[name], _cpu() - c0)
    ref = _flat_alone(alone)
    same = {"grouped": all(torch.equal(a, b) for a, b in zip(ref, grouped.weights())),
            "vmap": all(torch.equal(a, b.reshape(a.shape)) for a, b in
                        zip(ref, _flat_alone(stacked.models())))}
    return {"best": best, "same": same}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    import torch

    from yoco_cli.nn.device import tune_malloc

    tune_malloc()
    torch.set_num_threads(1)
    print(f"stacking: G digits evaluation steps (ConvNet-2 w64, 8x8, batch 64) alone one after another vs as one "
          f"grouped-convolution network vs torch.func vmap; 1 thread, CPU time, best of {a.rounds} alternating "
          f"rounds of {a.steps} steps; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    print(f"{'G':>3s} {'alone ms/run-step':>18s} {'grouped':>9s} {'vmap':>9s} {'grouped/alone':>14s} "
          f"{'vmap/alone':>11s}  bit-identical to alone")
    for g in a.groups:
        r = run(g, a.steps, a.rounds)
        per = {k: 1000 * v / (a.steps * g) for k, v in r["best"].items()}
        print(f"{g:3d} {per['alone']:18.2f} {per['grouped']:9.2f} {per['vmap']:9.2f} "
              f"{per['alone'] / per['grouped']:13.2f}x {per['alone'] / per['vmap']:10.2f}x  "
              f"grouped {r['same']['grouped']}, vmap {r['same']['vmap']}", flush=True)
    print("(a ratio above 1 means the stacked side is faster per run-step; only a bit-identical side may be used)")


if __name__ == "__main__":
    main()
