"""Seeded training stages: one cached run per seed, plus one group manifest over them.

Dynamics (`dynamics-run` / `dynamics`) and evaluation (`eval-run` / `eval`) share this shape:
each seed is its own stage run keyed by (params + seed, inputs), so asking for 5 seeds
after 3 computes only the 2 new ones, and an interrupted command keeps every finished seed.
The group manifest names the per-seed outputs `seed{s}/{name}` and reuses their objects
(same digests, no second copy).

Each seed is a sweep job (`stages.sweep`) that an executor runs: in this process, in a local
process pool or on a Ray cluster. Which seeds train together is the engine's business
(`plan_batched`): on CUDA all missing seeds of a small model are one job, trained as one
stacked model; otherwise each seed is its own job, with a resumable checkpoint in
`store.partial_dir(run_stage, key)` when it runs on this machine.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..executors import Resources
from ..store import Manifest, StageResult, Store, run_cached
from . import sweep
from .sweep import Job, Report, Run

MAX_RUNS = 10_000  # each seed is a cached training run; more is a typo (and list(range(1e20)) an OverflowError)


def check_run_count(n: int, option: str) -> None:
    if n < 1:
        raise UsageError(f"{option} must be at least 1, got {n}")
    if n > MAX_RUNS:
        raise UsageError(f"{option} {n} asks for more than {MAX_RUNS} training runs", f"use {option} 3 (the paper's)")


def seed_params(params: dict, seed: int) -> dict:
    return {**params, "seed": int(seed)}


@dataclass(frozen=True)
class Keyed:
    """What keys a run in the store: its stage and version, its params and its input digests."""
    stage: str
    version: int
    params: dict
    inputs: dict[str, str]


@dataclass(frozen=True)
class SeedWork:
    """What each seed's job runs: `fn(spec)` with `spec.seeds` set, and what one run costs."""
    fn: Callable
    spec: Any
    label: str
    cost: float  # one run's estimated CPU seconds
    resources: Resources = field(default_factory=Resources)


def plan_seeds(store: Store, run: Keyed, seeds: list[int], work: SeedWork, *, together: bool) -> list[Job]:
    """One sweep job per seed (`spec.seeds = [s]`, keyed as `run` plus the seed), or one job for all
    missing seeds when they train `together` as one stacked model (CUDA)."""
    runs = {s: Run(run.stage, run.version, seed_params(run.params, s), run.inputs, f"{work.label} seed {s}")
            for s in seeds}
    fn, spec, cost, res = work.fn, work.spec, work.cost, work.resources
    if together:
        missing = [s for s in seeds if store.load_run(run.stage, runs[s].key) is None]
        if len(missing) > 1:
            rest = [s for s in seeds if s not in missing]
            return ([Job([runs[s] for s in missing], fn, replace(spec, seeds=missing), cost * len(missing), res)]
                    + [Job([runs[s]], fn, replace(spec, seeds=[s]), cost, res) for s in rest])
    return [Job([runs[s]], fn, replace(spec, seeds=[s]), cost, res) for s in seeds]


def run_jobs(store: Store, jobs: list[Job], pool: sweep.Pool | None, device_type: str,
             on_epoch: Callable | None = None, on_status: Callable | None = None) -> Report:
    """Run jobs on the caller's pool, or (None) on a pool of the default setting for this work alone."""
    progress = (lambda job, info: on_epoch(info)) if on_epoch is not None else None
    if pool is not None:
        return pool.run(store, jobs, device_type, on_status, progress)
    with sweep.Pool() as own:
        return own.run(store, jobs, device_type, on_status, progress)


def seed_manifests(jobs: list[Job], report: Report) -> tuple[list[Manifest], list[int]]:
    """Per-seed manifests in seed order, and the seeds computed by this sweep."""
    runs = sorted((r for j in jobs for r in j.runs), key=lambda r: r.params["seed"])
    fresh = set(report.computed)
    return [report.manifests[r.key] for r in runs], [r.params["seed"] for r in runs if r.key in fresh]


def group_manifest(store: Store, group: Keyed, runs: dict[int, Manifest], meta: dict,
                   ref: str | None = None) -> Manifest:
    """Commit (or find) the group run whose outputs `seed{s}/{name}` are the per-seed objects."""
    def compute(tmp: Path, key: str) -> StageResult:
        outputs = {}
        for s, m in runs.items():
            for name in m.outputs:
                dest = tmp / f"seed{s}-{name}"
                dest.write_bytes(store.read_output(m, name).data)  # verified bytes -> the same object
                outputs[f"seed{s}/{name}"] = dest
        return StageResult(outputs=outputs, meta={**meta, "runs": {str(s): m.key for s, m in runs.items()}})

    m, _ = run_cached(store, group.stage, group.version, {**group.params, "seeds": sorted(runs)}, group.inputs,
                      compute, ref=ref)
    return m
