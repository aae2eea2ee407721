"""`--method random`: the field's baseline, a seeded subset of real images stored like a condensed set.

Per class, IPC*f^2 training images drawn without replacement by a generator seeded with
`seed`, put as tiles into IPC stored images in IDC's `mix` layout. Decoding the set gives
back those real images (shrunk to the tile size and resized), so "random at IPC N, factor
f" holds exactly the information budget of a condensed set with the same IPC and factor.
"""
from __future__ import annotations

from .common import (
    Job,
    Outcome,
    check_ipc,
    class_indices,
    generator,
    layout_from_indices,
    sample_indices,
)

NAME = "random"
ITERATIVE = False


def preset(dataset: str) -> dict:
    return {}


def run(job: Job) -> Outcome:
    real = job.real
    check_ipc(real, job.ipc, job.factor)
    need = job.ipc * job.factor * job.factor
    gen = generator(job.seed)
    chosen = [sample_indices(idx, need, gen) for idx in class_indices(real.train_y, real.num_classes)]
    images, labels = layout_from_indices(real, chosen, job.ipc, job.factor)
    return Outcome(images, labels, info={"indices": [c.tolist() for c in chosen]})
