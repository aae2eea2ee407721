"""`--method herding`: a deterministic real-image baseline, stored like `random`.

Per class, greedy herding (Welling 2009, as used by iCaRL) in normalised pixel space:
pick, one at a time, the image that brings the running mean of the picked images closest
to the class mean. No network is involved, so it is cheap and needs no seed; it is a
coreset baseline, not a condensation.
"""
from __future__ import annotations

from .common import Job, Outcome, check_ipc, class_indices, layout_from_indices

NAME = "herding"
ITERATIVE = False
SEEDED = False  # the seed changes nothing, so it is left out of the cache key


def preset(dataset: str) -> dict:
    return {}


def herd(features, count: int):
    """Indices (into `features`) of `count` herding picks, in pick order."""
    import torch

    mu = features.mean(dim=0)
    picked: list[int] = []
    total = torch.zeros_like(mu)
    available = torch.ones(len(features), dtype=torch.bool)
    for t in range(1, count + 1):
        # distance of each candidate running mean to the class mean; picked ones excluded
        cand = (total.unsqueeze(0) + features) / t
        dist = ((cand - mu) ** 2).sum(dim=1)
        dist[~available] = float("inf")
        i = int(torch.argmin(dist))  # first minimum: ties resolve to dataset order
        picked.append(i)
        available[i] = False
        total += features[i]
    return torch.tensor(picked, dtype=torch.int64)


def run(job: Job) -> Outcome:
    real = job.real
    check_ipc(real, job.ipc, job.factor)
    need = job.ipc * job.factor * job.factor
    chosen = []
    for idx in class_indices(real.train_y, real.num_classes):
        feats = real.normalize(real.train_x[idx]).flatten(1).double()
        chosen.append(idx[herd(feats, need)])
    images, labels = layout_from_indices(real, chosen, job.ipc, job.factor)
    return Outcome(images, labels, info={"indices": [c.tolist() for c in chosen]})
