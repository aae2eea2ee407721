"""What the store holds, as people think of it: artifacts, what each is made from, what depends on it.

The store keeps one manifest per run. Several of those are parts of one artifact a person names: the
per-seed runs of a dynamics or evaluation group, the per-run sets of a prune group. `artifacts` folds
them into their artifact (sizes counted once per object); `removal_plan` is `yoco cache rm`'s plan,
made before anything is deleted: the artifacts named, their parts, every run that was computed from
them (transitively: a set's dynamics, scores, pruned sets and their evaluations) and the bytes that
would be freed; `sources` names the run that made each input digest of a manifest.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..store import Manifest, Store

# per-seed or per-run parts of a group artifact: listed under their group unless asked for
PART_STAGES = {"dynamics-run", "eval-run"}


@dataclass
class Artifact:
    manifest: Manifest
    refs: list[str]
    parts: list[Manifest] = field(default_factory=list)
    bytes: int = 0  # its objects and its parts', each object counted once

    @property
    def stage(self) -> str:
        return self.manifest.stage

    @property
    def name(self) -> str:
        """Its first name, else its key's first 12 characters (what `yoco cache info` and `rm` take)."""
        return self.refs[0] if self.refs else self.manifest.key[:12]


def _names(store: Store) -> dict[tuple[str, str], list[str]]:
    names: dict[tuple[str, str], list[str]] = {}
    for n, sk in sorted(store.refs().items()):
        names.setdefault(sk, []).append(n)
    return names


def _part_keys(m: Manifest) -> list[str]:
    """The run keys a group manifest lists as its parts (prune groups: a list; seed groups: seed -> key)."""
    runs = m.meta.get("runs")
    if isinstance(runs, dict):
        return [str(k) for k in runs.values()]
    if isinstance(runs, list):
        return [str(k) for k in runs]
    return []


def _object_sizes(ms: Iterable[Manifest]) -> dict[str, int]:
    return {o["digest"]: int(o.get("size", 0)) for m in ms for o in m.outputs.values()}


def artifacts(store: Store, *, every_run: bool = False, stage: str | None = None) -> list[Artifact]:
    """One entry per artifact (group parts folded in), or per run with `every_run`."""
    runs = store.all_runs(stage)
    names = _names(store)
    by_key = {m.key: m for m in store.all_runs(None)} if stage else {m.key: m for m in runs}
    part_of: dict[str, str] = {}
    if not every_run:
        for m in by_key.values():
            for k in _part_keys(m):
                if k in by_key and k != m.key:
                    part_of.setdefault(k, m.key)
    out = []
    for m in runs:
        if not every_run and (m.key in part_of or (m.stage in PART_STAGES and not names.get((m.stage, m.key)))):
            continue
        parts = [by_key[k] for k in _part_keys(m) if k in by_key and k != m.key] if not every_run else []
        out.append(Artifact(m, names.get((m.stage, m.key), []), parts, sum(_object_sizes([m, *parts]).values())))
    return out


def total_bytes(store: Store) -> int:
    """Every object the store's runs name, each counted once (what de-duplication leaves on disk)."""
    return sum(_object_sizes(store.all_runs(None)).values())


@dataclass
class RemovalPlan:
    named: list[Manifest]      # what was asked for
    parts: list[Manifest]      # the per-seed/per-run parts of those
    dependents: list[Manifest]  # everything computed from them, transitively
    freed: dict[str, int]      # object digest -> bytes, for objects no remaining run uses
    refs: list[str]            # the names that go with them

    @property
    def runs(self) -> list[Manifest]:
        return [*self.named, *self.parts, *self.dependents]

    @property
    def bytes(self) -> int:
        return sum(self.freed.values())


def removal_plan(store: Store, named: list[Manifest]) -> RemovalPlan:
    """What `yoco cache rm` would delete for `named`: nothing is touched here."""
    home = [m for m in store.all_runs(None) if store.manifest_path(m.stage, m.key).is_file()]
    every = home  # runs of a shared (read-only) store are never part of a plan: yoco does not change them
    by_key = {m.key: m for m in every}
    gone = {m.key: m for m in named}
    parts = _close_parts(gone, by_key)
    dependents = _close_dependents(gone, every)
    keep = {o["digest"] for m in every if m.key not in gone for o in m.outputs.values()}
    freed = {d: s for d, s in _object_sizes(gone.values()).items() if d not in keep}
    refs = [n for m in gone.values() for n in store.refs_to(m.stage, m.key)]
    return RemovalPlan(list(named), parts, dependents, freed, refs)


def _close_parts(gone: dict[str, Manifest], by_key: dict[str, Manifest]) -> list[Manifest]:
    parts = []
    for m in list(gone.values()):
        for k in _part_keys(m):
            if k in by_key and k not in gone:
                gone[k] = by_key[k]
                parts.append(by_key[k])
    return parts


def _close_dependents(gone: dict[str, Manifest], every: list[Manifest]) -> list[Manifest]:
    """Runs whose inputs are outputs of a removed run, until nothing more is added."""
    dependents = []
    produced = {o["digest"] for m in gone.values() for o in m.outputs.values()}
    changed = True
    while changed:
        changed = False
        for m in every:
            if m.key in gone or not set(m.inputs.values()) & produced:
                continue
            gone[m.key] = m
            dependents.append(m)
            produced |= {o["digest"] for o in m.outputs.values()}
            changed = True
    return dependents


def sources(store: Store, m: Manifest) -> dict[str, str]:
    """input name -> who made that object: its artifact's name (or stage/key prefix) and the output."""
    made: dict[str, tuple[Manifest, str]] = {}
    for run in store.all_runs(None):
        for out_name, o in run.outputs.items():
            made.setdefault(o["digest"], (run, out_name))
    names = _names(store)
    out = {}
    for name, digest in sorted(m.inputs.items()):
        hit = made.get(digest)
        if hit is None:
            out[name] = f"object {digest[:12]} (made by no run in this store)"
            continue
        run, out_name = hit
        label = (names.get((run.stage, run.key)) or [f"{run.stage}/{run.key[:12]}"])[0]
        out[name] = f"{label} ({run.stage} {run.key[:12]}, output {out_name})"
    return out
