"""How long a training run will take on this device, from a short timed probe.

Before a stage starts training that may take minutes or hours (3 seeds x 1000 epochs of
dynamics on a CPU, say), it times a few real training steps of the same model, batch size,
augmentation and thread count on random images of the set's shape, and multiplies. The
probe is the engine's own `train` (so DSA, CutMix and the optimizer are all in it), stopped
from the per-batch hook after `max_steps` steps or `budget_s` seconds; the first step is
warm-up and not counted when more follow (the first step of a process also pays for torch's
lazy imports, seconds on a CPU). torch.compile is off in the probe, so for a run
that will compile the estimate errs long.

    est = estimate_training(spec, cfg, n=400, runs=3, device=dev)
    est.seconds, est.text()        # 1234.5, 'about 21 min'
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

# Runs with fewer optimizer steps than this are not probed: they take seconds on any device.
MIN_PROBE_STEPS = 300


class _Stop(Exception):
    pass


@dataclass
class Estimate:
    seconds: float
    steps: int            # optimizer steps of the whole run (all seeds)
    per_step: float       # seconds per step measured by the probe
    probe_steps: int      # steps the probe timed

    def text(self) -> str:
        return "about " + duration(self.seconds)


def duration(seconds: float) -> str:
    """'40 s', '3 min', '1 h 5 min', '2 days 3 h' (two significant units at most)."""
    s = max(0.0, float(seconds))
    if s < 90:
        return f"{max(1, round(s))} s"
    m = s / 60
    if m < 60:
        return f"{round(m)} min"
    h, m = divmod(round(m), 60)
    if h < 48:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} days {h} h" if h else f"{d} days"


def steps_of(cfg, n: int, runs: int) -> int:
    from .engine import iterations_per_epoch

    return int(runs) * int(cfg.epochs) * iterations_per_epoch(int(n), cfg.batch_size)


def seconds_per_step(spec: dict, cfg, image_shape: tuple, device, max_steps: int = 4, budget_s: float = 5.0) -> tuple[float, int]:
    """(seconds per training step, steps timed): a few steps of `engine.train` on random images."""
    import torch

    from . import engine

    n = cfg.batch_size * (max_steps + 1)
    x = torch.rand((n, *[int(d) for d in image_shape]))
    y = torch.arange(n) % int(spec["num_classes"])
    probe_cfg = dataclasses.replace(cfg, epochs=1, eval_at=(), compile="off")
    marks: list[float] = []
    t0 = time.perf_counter()

    def hook(epoch, idx, log_probs) -> None:  # after each step's forward: marks are one step apart
        marks.append(time.perf_counter())
        if marks[-1] - marks[0] > budget_s:  # the budget counts from the end of the warm-up step
            raise _Stop

    try:
        engine.train(spec, x, y, probe_cfg, seeds=[0], device=device, hooks=[hook], batched="off")
        marks.append(time.perf_counter())
    except _Stop:
        pass
    if len(marks) >= 2:  # from the end of the first (warm-up) step
        return (marks[-1] - marks[0]) / (len(marks) - 1), len(marks) - 1
    return marks[-1] - t0, 1


def estimate_training(spec: dict, cfg, n: int, runs: int, device, image_shape: tuple | None = None,
                      test_n: int = 0) -> Estimate | None:
    """The probe's estimate for `runs` trainings of `cfg.epochs` epochs on `n` images (None when
    the run is too short to be worth probing). Test passes (cfg.eval_at) count a forward as 1/3 step."""
    steps = steps_of(cfg, n, runs)
    if steps < MIN_PROBE_STEPS:
        return None
    shape = image_shape or (spec["channels"], spec["image_size"], spec["image_size"])
    per_step, timed = seconds_per_step(spec, cfg, shape, device)
    test_steps = runs * len(cfg.eval_at) * math.ceil(test_n / max(cfg.batch_size, 1)) / 3 if test_n else 0
    return Estimate(per_step * (steps + test_steps), steps, per_step, timed)
