"""Run a stage through the store: look up its key, else compute under a lock and commit.

    result = run_cached(store, "dynamics", 1, params, {"set": digest}, compute)

`compute(tmpdir)` writes its output files into `tmpdir` and returns a `StageResult`.
Only after every output is in `objects/` is the manifest written, so an interruption at
any point leaves the previous state of the cache intact; the next run recomputes (or,
for stages that checkpoint into `store.partial_dir`, resumes).
"""
from __future__ import annotations

import logging
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .._version import __version__
from ..errors import IntegrityError, resource_error
from .manifest import Manifest, run_key
from .store import Store


@dataclass
class StageResult:
    outputs: dict[str, Path]
    meta: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)  # where/how it ran (executor, worker); not in the key

log = logging.getLogger(__name__)  # silent unless the CLI's -v/-vv (or a script) asks


def provenance(seconds: float) -> dict:
    prov = {
        "yoco": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "argv": sys.argv[1:],
        "seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        prov["torch"] = torch.__version__
    return prov


def _existing(store: Store, stage: str, key: str) -> Manifest | None:
    """A committed run, or None; a damaged manifest is recomputed (the commit replaces it atomically)."""
    try:
        return store.load_run(stage, key)
    except IntegrityError:
        return None


def run_cached(
    store: Store,
    stage: str,
    version: int,
    params: dict,
    inputs: dict[str, str],
    compute: Callable[[Path, str], StageResult],
    *,
    ref: str | None = None,
    on_wait: Callable[[], None] | None = None,
) -> tuple[Manifest, bool]:
    """Return (manifest, cached). `compute(tmpdir, key)` runs only on a cache miss.

    A name is written with its run or not at all: it is checked before any work, and if writing it
    still fails after a fresh commit, the commit is undone (its objects are left for gc)."""
    store.ensure()
    if ref:
        store.check_ref_name(ref)
    key = run_key(stage, version, params, inputs)
    log.debug("%s %s: params %s, inputs %s", stage, key[:12], params, sorted(inputs))
    hit = _named_hit(store, stage, key, ref)
    if hit is not None:
        log.info("reused %s %s%s (stored)", stage, key[:12], f" as {ref}" if ref else "")
        return hit, True
    with store.lock(stage, key, on_wait=on_wait):
        hit = _named_hit(store, stage, key, ref)  # another process may have finished it meanwhile
        if hit is not None:
            log.info("reused %s %s%s (another process just stored it)", stage, key[:12], f" as {ref}" if ref else "")
            return hit, True
        return commit(store, stage, version, key, params, inputs, compute, ref=ref), False


def commit(store: Store, stage: str, version: int, key: str, params: dict, inputs: dict[str, str],
           compute: Callable[[Path, str], StageResult], *, ref: str | None = None) -> Manifest:
    """Commit a run whose key lock the caller holds (a sweep's driver): outputs into objects/, then the
    manifest (and name); a full disk is a one-line resource error with nothing committed."""
    try:
        manifest = _compute_and_commit(store, stage, version, params, inputs, key, compute, ref)
    except OSError as e:  # a full disk mid-write: the staging folder is gone, nothing was committed
        err = resource_error(e)
        if err is None:
            raise
        raise err from None
    store.clear_partial(stage, key)
    log.info("computed %s %s%s in %.2f s: %d output(s), %d bytes", stage, key[:12], f" as {ref}" if ref else "",
             manifest.provenance.get("seconds", 0.0), len(manifest.outputs), manifest.size)
    return manifest


def _compute_and_commit(store, stage, version, params, inputs, key, compute, ref) -> Manifest:
    """Compute into a staging folder, move the outputs into objects/ and write the manifest (and name)."""
    t0 = time.perf_counter()
    with store.staging() as tmp:
        result = compute(tmp, key)
        with store.writing():  # gc waits until the manifest references the objects moved in here
            outputs = {}
            for name, path in result.outputs.items():
                digest, size = store.put_file(Path(path))
                outputs[name] = {"digest": digest, "size": size}
            manifest = Manifest(stage, version, key, params, inputs, outputs, result.meta,
                                {**provenance(time.perf_counter() - t0), **result.provenance})
            store.commit_run(manifest)
            if ref:
                try:
                    store.set_ref(ref, stage, key)
                except BaseException:
                    store.uncommit_run(manifest)
                    raise
    return manifest


def _named_hit(store: Store, stage: str, key: str, ref: str | None) -> Manifest | None:
    """The committed run, named `ref`; checked under the store lock so `rm` cannot remove it between
    the check and the naming (it may still remove it afterwards: readers then fail cleanly)."""
    with store.writing():
        hit = _existing(store, stage, key)
        if hit is not None and ref:
            store.set_ref(ref, stage, key)
    return hit
