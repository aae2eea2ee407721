"""Stage "import": put a published condensed-set file into the store.

The key is made of the file digests and the *resolved* reading parameters (format after
detection, dataset after inference, factor, IPC, DSA experiment, value space), so `--format
auto` and the explicit format give the same artifact, and importing the same file twice
stores one object. The set is written in our safetensors format; the source path is only
recorded in the manifest's meta (never in the object), so copies of a file share an object.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..data.condensed import CondensedSet
from ..data.formats import load, locate
from ..data.hub_layout import is_repo_folder
from ..errors import UsageError
from ..files import check_unchanged, stamp
from ..store import Manifest, Store, run_cached
from ..store.store import sha256_file
from .sets import check_set_name, is_set, load_set, set_result

log = logging.getLogger(__name__)

STAGE = "import"
VERSION = 1
# Test hook: seconds to sleep after the set is staged and before it is committed, so tests
# can kill an import at its most delicate moment or make two imports overlap.
PAUSE_ENV = "YOCO_TEST_IMPORT_PAUSE"


def import_file(store: Store, path: Path | str, fmt: str = "auto", dataset: str | None = None,
                factor: int | None = None, ipc: int | None = None, name: str | None = None,
                experiment: int = 0, value_space: str | None = None,
                on_note: Callable[[str], None] | None = None) -> tuple[Manifest, bool]:
    """Read PATH (see data/formats.py) and store it; returns (manifest, cached).

    The key holds the digests of the files read, hashed after reading. A file that changed between
    the start of the read and the end of the hash (size, mtime or inode differ: a copy still being
    written) is refused rather than stored under a digest that is not the one of the bytes read."""
    if name:
        check_set_name(store, name)  # before the file is read
    if fmt in ("auto", "hub") and is_repo_folder(Path(path)):  # a Hub dataset repo's files (docs/hub.md)
        from .hub_sets import import_folder

        return import_folder(store, Path(path), name=name, dataset=dataset)
    before = {f.resolve(): stamp(f) for f in locate(Path(path), fmt)}
    log.info("reading %s (format %s): %s", path, fmt, ", ".join(str(f) for f in before))
    loaded = load(path, fmt, dataset=dataset, factor=factor, ipc=ipc, experiment=experiment,
                  value_space=value_space)
    cset = loaded.cset
    for note in loaded.notes:
        if on_note:
            on_note(note)
    ref = name or default_ref(cset, loaded.fmt)
    store.check_ref_name(ref)  # before any work is committed
    digests = [sha256_file(f) for f in loaded.files]
    for f in loaded.files:
        check_unchanged(f, before.get(Path(f).resolve(), ()))
    inputs = {"file": digests[0], **({"labels": digests[1]} if len(digests) > 1 else {})}
    params = {"format": loaded.fmt, "dataset": cset.dataset, "factor": cset.factor, "ipc": cset.ipc,
              "experiment": cset.meta.get("experiment") if loaded.fmt == "dsa" else None,
              "value_space": cset.value_space}

    def make(tmp: Path, key: str):
        result = set_result(tmp, cset, summary(cset, loaded.fmt), extra={"source": [str(f) for f in loaded.files]})
        _pause_for_tests()
        return result

    return run_cached(store, STAGE, VERSION, params, inputs, make, ref=ref)



def default_ref(cset: CondensedSet, fmt: str) -> str:
    return f"import/{cset.dataset}/{fmt}-ipc{cset.ipc}"


def summary(cset: CondensedSet, fmt: str) -> str:
    return f"{fmt} {cset.dataset} ipc{cset.ipc} x{cset.factor} ({cset.value_space})"


def _pause_for_tests() -> None:
    seconds = float(os.environ.get(PAUSE_ENV, "0") or 0)
    if seconds > 0:
        time.sleep(seconds)


def resolve_set(store: Store, spec: str) -> tuple[Manifest, CondensedSet]:
    """A ref name, a key prefix, or a path to a set file (imported on the way, format auto)."""
    path = Path(spec)
    if path.exists() and not store.ref_path(spec).exists():
        m, _ = import_file(store, path, fmt="auto", dataset=None)
        return m, load_set(store, m)
    m = store.resolve(spec, what="condensed set")
    if m.stage == "prune-group":
        runs = len(m.meta.get("runs", []))
        raise UsageError(f"{spec} names {runs} pruned sets, one per dynamics run (the paper's protocol)",
                         f"name one ({spec}-run0 .. {spec}-run{runs - 1}); `yoco eval {spec}` pools them all")
    if not is_set(m):
        raise UsageError(f"{spec} is a {m.stage} artifact, not a condensed set", "see `yoco cache ls`")
    return m, load_set(store, m)
