"""Seeded training stages: one cached run per seed, plus one group manifest over them.

Dynamics (`dynamics-run` / `dynamics`) and evaluation (`eval-run` / `eval`) share this shape:
each seed is its own stage run keyed by (params + seed, inputs), so asking for 5 seeds
after 3 computes only the 2 new ones, and an interrupted command keeps every finished seed.
The group manifest names the per-seed outputs `seed{s}/{name}` and reuses their objects
(same digests, no second copy).

Which seeds train together is the engine's business (`plan_batched`): on CUDA all missing
seeds of a small model train as one stacked model; otherwise one at a time, each with a
resumable checkpoint in `store.partial_dir(run_stage, key)`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError
from ..store import Manifest, StageResult, Store, run_cached
from ..store.manifest import run_key

MAX_RUNS = 10_000  # each seed is a cached training run; more is a typo (and list(range(1e20)) an OverflowError)


def check_run_count(n: int, option: str) -> None:
    if n < 1:
        raise UsageError(f"{option} must be at least 1, got {n}")
    if n > MAX_RUNS:
        raise UsageError(f"{option} {n} asks for more than {MAX_RUNS} training runs", f"use {option} 3 (the paper's)")


# fit(seeds, partial_dir or None) -> one result per seed; write(tmpdir, seed, result) -> StageResult
Fit = Callable[[list[int], "Path | None"], list[Any]]
Write = Callable[[Path, int, Any], StageResult]


def seed_params(params: dict, seed: int) -> dict:
    return {**params, "seed": int(seed)}


def run_seeds(store: Store, stage: str, version: int, params: dict, inputs: dict[str, str], seeds: list[int],
              fit: Fit, write: Write, together: bool,
              before: Callable[[list[int]], None] | None = None) -> tuple[list[Manifest], list[int]]:
    """Per-seed manifests in seed order, and the seeds that were computed now (not cached).
    `before(missing)` hears which seeds will train, before any does (to announce them)."""
    missing = [s for s in seeds
               if store.load_run(stage, run_key(stage, version, seed_params(params, s), inputs)) is None]
    if missing and before is not None:
        before(missing)
    fresh: dict[int, Any] = {}
    if together and len(missing) > 1:
        fresh = dict(zip(missing, fit(missing, None)))
    out = []
    for s in seeds:
        def compute(tmp: Path, key: str, s=s) -> StageResult:
            result = fresh[s] if s in fresh else fit([s], store.partial_dir(stage, key))[0]
            return write(tmp, s, result)

        m, _ = run_cached(store, stage, version, seed_params(params, s), inputs, compute)
        out.append(m)
    return out, missing


def group_manifest(store: Store, stage: str, version: int, params: dict, inputs: dict[str, str],
                   runs: dict[int, Manifest], meta: dict, ref: str | None = None) -> Manifest:
    """Commit (or find) the group run whose outputs `seed{s}/{name}` are the per-seed objects."""
    def compute(tmp: Path, key: str) -> StageResult:
        outputs = {}
        for s, m in runs.items():
            for name in m.outputs:
                dest = tmp / f"seed{s}-{name}"
                dest.write_bytes(store.read_output(m, name).data)  # verified bytes -> the same object
                outputs[f"seed{s}/{name}"] = dest
        return StageResult(outputs=outputs, meta={**meta, "runs": {str(s): m.key for s, m in runs.items()}})

    m, _ = run_cached(store, stage, version, {**params, "seeds": sorted(runs)}, inputs, compute, ref=ref)
    return m
