"""Storing and finding condensed sets.

Every stage that produces a condensed set (import, condense, prune) names that output
"set" and records `set.describe()` under meta["set"], so sets can be listed and
filtered (by dataset, IPC) without opening their tensors.
"""
from __future__ import annotations

from pathlib import Path

from ..data.condensed import CondensedSet
from ..errors import UsageError
from ..store import Manifest, StageResult, Store


def set_result(tmp: Path, cset: CondensedSet, summary: str, extra: dict | None = None) -> StageResult:
    """Write a set into a stage's staging folder and describe it for the manifest."""
    path = cset.save(tmp / "set.safetensors")
    meta = {"set": cset.describe(), "summary": summary, "made_by": cset.meta, **(extra or {})}
    return StageResult(outputs={"set": path}, meta=meta)


def check_set_name(store: Store, name: str) -> str:
    """A name a condensed set may take: one the store can write, without '@', which yoco's names of what
    is derived from a set use (`<set>@lbpe-easy-balanced-ipc1`, `<set>@dynamics`): a condensed set
    named so would read as a pruned set or a set's dynamics."""
    store.check_ref_name(name)
    if "@" in name:
        raise UsageError(f"the name {name!r} reads as that of something derived from a set (pruned sets, "
                         "dynamics and scores are named <set>@...)", "name a condensed set without '@'")
    return name


def is_set(m: Manifest) -> bool:
    return "set" in m.outputs and "set" in m.meta


def all_sets(store: Store) -> list[Manifest]:
    return [m for m in store.all_runs() if is_set(m)]


def load_set(store: Store, m: Manifest) -> CondensedSet:
    """The stored set, parsed from bytes checked against their digest (a damaged one is quarantined)."""
    return CondensedSet.load(store.read_output(m, "set"))


def set_label(store: Store, m: Manifest) -> str:
    """The friendliest name of a stored run (a set, dynamics, ...): its first ref, else its short key."""
    names = store.refs_to(m.stage, m.key)
    return names[0] if names else m.short
