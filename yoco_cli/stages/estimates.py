"""Saying what a stage is about to train, and for how long, before it starts.

A run that takes more than about a minute never starts silently: `announce_training` times a
short probe of the very model and settings (nn/estimate.py) and tells the reporter what will
run and an estimate on this device, on a terminal or not. Shorter runs say nothing unless
the caller asks (`always=True`: prune and the pipeline say whenever they train unasked).
Condensation is timed on its own first iterations instead (`CondenseClock`): they are the
run's own work, so nothing is spent twice.
"""
from __future__ import annotations

import time

from ..progress import SILENT, Reporter

LONG_S = 60.0  # "more than about a minute": from here on, a run is announced with its estimate


def announce_training(reporter: Reporter, what: str, spec: dict, cfg, n: int, runs: int, device,
                      test_n: int = 0, always: bool = False):
    """Probe and announce `runs` trainings of `cfg` on `n` images; returns the Estimate (or None)."""
    from ..nn.device import describe
    from ..nn.estimate import estimate_training

    if reporter is SILENT and not always:
        return None  # nobody to tell: do not spend the probe
    est = estimate_training(spec, cfg, n, runs, device, test_n=test_n)
    if est is not None and (always or est.seconds >= LONG_S):
        reporter.info(f"{what}: {est.text()} on {describe(device)} "
                      f"(timed over {est.probe_steps} steps of {est.steps})")
    elif always:
        reporter.info(what)
    return est


class CondenseClock:
    """Times a condensation's first iterations and announces the whole run once it knows:
    after `probe` iterations, or sooner when they take longer than `budget_s`. A resumed run
    reports its starting point first; the clock counts from there."""

    def __init__(self, reporter: Reporter, what: str, device_label: str, probe: int = 3, budget_s: float = 10.0):
        self.reporter, self.what, self.device_label = reporter, what, device_label
        self.probe, self.budget_s = probe, budget_s
        self.base: tuple[int, float] | None = None  # (iterations done, time) at the first report
        self.done = False

    def tick(self, done: int, total: int) -> None:
        from ..nn.estimate import duration

        now = time.perf_counter()
        if self.base is None:  # the first report: after iteration 1 (warm-up, not timed), or a resume's start
            self.base = (done, now)
            return
        if self.done or total <= done:
            return
        ran, spent = done - self.base[0], now - self.base[1]
        if ran < 1 or (ran < self.probe and spent < self.budget_s):
            return
        self.done = True
        left = spent / ran * (total - done)
        if spent + left >= LONG_S:
            self.reporter.info(f"{self.what}: about {duration(spent + left)} on {self.device_label} "
                               f"(timed over {ran} of {total} iterations)")
