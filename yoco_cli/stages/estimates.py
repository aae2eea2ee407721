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
CONFIRM_S = 86_400.0  # over a day: a typo (--epochs 1000000000) more often than a plan, so it is asked for


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
    if est is not None and est.seconds > CONFIRM_S:
        _confirm_long(reporter, what, est.text())
    return est


def _confirm_long(reporter: Reporter, what: str, how_long: str) -> None:
    """A run of over a day starts only when the person says so (the CLI asks on a terminal, or --yes)."""
    from ..errors import UsageError

    confirm = getattr(reporter, "confirm", None)  # the CLI's Output has one; a script's reporter may not
    if confirm is None or not confirm(f"{what}: {how_long}. Start it?"):
        raise UsageError(f"{what} would take {how_long}; not started",
                         "check --epochs/--repeats/--seeds, or pass the global --yes (yoco --yes ...) to start it")


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


def announce_sweep(reporter: Reporter, spec: dict, cfg, sizes: list[int], device, workers: int,
                   test_n: int = 0) -> float | None:
    """One line before a sweep of evaluations (`sizes`: the images each run trains on), e.g.
    "73 evaluations x 200 epochs: about 25 min on 2 workers"; returns the estimate's seconds.

    One timed probe (nn/estimate.py) prices every run; the sweep takes that work spread over the
    workers, but never less than its longest run. The probe runs with this process's threads and a
    worker with one, so on a CPU the line errs short by up to the thread count's speed-up."""
    from ..nn.device import describe
    from ..nn.estimate import MIN_PROBE_STEPS, duration, seconds_per_step, steps_of

    runs = f"{len(sizes)} evaluation(s) x {cfg.epochs} epochs"
    steps = [steps_of(cfg, n, 1) for n in sizes]
    where = f"{workers} worker(s) on {describe(device)}"
    if sum(steps) < MIN_PROBE_STEPS:
        reporter.info(f"{runs}: {sum(steps)} optimizer steps in all, seconds on {where}")
        return None
    per_step, timed = seconds_per_step(spec, cfg, (spec["channels"], spec["image_size"], spec["image_size"]), device)
    tests = len(cfg.eval_at) * -(-test_n // max(cfg.batch_size, 1)) / 3  # a test forward ~ 1/3 step
    each = [per_step * (s + tests) for s in steps]
    seconds = max(max(each), sum(each) / max(1, workers))
    reporter.info(f"{runs}: about {duration(seconds)} on {where} (timed over {timed} steps)")
    return seconds
