"""The store on disk.

    <home>/objects/sha256/ab/<digest>   immutable blobs, named by content, read-only
    <home>/runs/<stage>/<key>.json      manifests: a stage run exists iff its manifest does
    <home>/refs/<name>.json             friendly names -> (stage, key)
    <home>/tmp/                         staging on the same filesystem, so renames are atomic
    <home>/partial/<stage>/<key>/       checkpoints of resumable stages, removed on commit
    <home>/locks/                       one lock file per stage key, and store.lock (see locks.py)
    <home>/quarantine/                  objects that failed their digest check when read

Write protocol: write into tmp/, hash, os.replace into objects/, then write the manifest
the same way. A crash at any point leaves at most unreferenced tmp files, never a
visible half-artifact; `gc` sweeps them. Moving objects in and committing their manifest
happen under the store lock held shared, gc/rm/quarantine hold it exclusive, so gc never
deletes an object whose manifest is about to be written (locks.py says why that suffices).

Read protocol: a stage reads an object only through `read_output` / `read_object`, which
hash the very bytes they return. A mismatch moves the object to quarantine/ (its manifests
then count as not computed, so the next run recomputes or refetches it) and raises a
one-line integrity error naming the artifact and the command that made it.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..errors import IntegrityError, LockTimeout, UsageError
from . import locks
from .manifest import STORE_FORMAT, Manifest, commit_record, legacy_key_matches, manifest_digest_of

_CHUNK = 1 << 20
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_QUARANTINED_RE = re.compile(r"^[0-9a-f]{64}(\.[0-9]+)?$")  # what quarantine() names its files
_STAGING_PREFIXES = ("stage-", ".w-", ".probe-")  # what yoco makes in tmp/
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=,-]*(/[A-Za-z0-9][A-Za-z0-9._@+=,-]*)*$")


LOCK_TIMEOUT_ENV = "YOCO_LOCK_TIMEOUT"


def lock_timeout() -> float:
    """Seconds to wait for another process's lock on a run (YOCO_LOCK_TIMEOUT); -1 (unset) waits for ever."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return -1.0
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):  # NaN and negatives fail this
        raise UsageError(f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds",
                         f"use a number >= 0 (e.g. {LOCK_TIMEOUT_ENV}=600), or unset it to wait for ever")
    return value


def default_home() -> Path:
    env = os.environ.get("YOCO_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("yoco", appauthor=False))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_text(path: Path, text: str, tmp_dir: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=".w-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class _Gone(Exception):
    """A commit record whose manifest object is missing: the run counts as not computed."""


def _remake(m: Manifest) -> str:
    return recompute_hint_of(m.provenance.get("argv") if isinstance(m.provenance, dict) else None)


def recompute_hint_of(argv) -> str:
    if argv and isinstance(argv, list):
        import shlex

        return f"run `yoco {shlex.join(str(a) for a in argv)}` to make it again"
    return "run the command that made it again"


class Blob:
    """Bytes read from the store and checked against their digest; `str()` names where they came from
    (readers put it in their error messages). Parsers take it where they would take a path.

    `name` may be a zero-argument callable: naming a run's output scans the refs, which only an
    error message needs, so it is worked out on first use."""

    def __init__(self, data: bytearray, name: str | Callable[[], str], digest: str):
        self.data, self._name, self.digest = data, name, digest

    @property
    def name(self) -> str:
        if callable(self._name):
            self._name = self._name()
        return self._name

    def __str__(self) -> str:
        return self.name

    def __len__(self) -> int:
        return len(self.data)


def _text(what: str | Callable[[], str]) -> str:
    return what() if callable(what) else what


NAME_MAX = 255  # bytes in one path component on every filesystem yoco targets
PATH_MAX = 4096


SHARED_ENV = "YOCO_SHARED"


def shared_from_env() -> list[Path]:
    """The read-only stores named by YOCO_SHARED (os.pathsep-separated), in lookup order."""
    return [Path(p).expanduser() for p in os.environ.get(SHARED_ENV, "").split(os.pathsep) if p.strip()]


class Store:
    """A store: its home (`root`, where results are written) and, under it, read-only shared stores
    (`shared`, default YOCO_SHARED) that lookups fall through to, as git's alternates: runs, names and
    objects are found there when the home lacks them, verified on read as the home's are; nothing is
    ever written to, moved in or deleted from them."""

    def __init__(self, root: Path | str | None = None, shared: Sequence[Path | str] | None = None,
                 read_only: bool = False):
        self.root = Path(root).expanduser() if root is not None else default_home()
        self.read_only = read_only
        self._ready = False
        self._upgraded = 0
        self._swept = False
        paths = shared_from_env() if shared is None else [Path(p).expanduser() for p in shared]
        self.layers = [Store(p, shared=[], read_only=True) for p in paths if _other(p, self.root)]

    def writable(self) -> bool:
        """Whether this process may write the home (a read-only mount or a shared store: no)."""
        if self.read_only:
            return False
        p = self.root
        while not p.exists() and p != p.parent:
            p = p.parent  # a home not made yet: whether it can be made
        return os.access(p, os.W_OK)

    # -- layout --------------------------------------------------------------
    @property
    def objects(self) -> Path:
        return self.root / "objects" / "sha256"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def refs_dir(self) -> Path:
        return self.root / "refs"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    def ensure(self) -> Store:
        """Create the layout; fail with a usage error when the home is not writable."""
        if self._ready:
            return self
        try:
            for d in (self.objects, self.runs, self.refs_dir, self.tmp, self.locks_dir, self.root / "partial"):
                d.mkdir(parents=True, exist_ok=True)
            # gc (exclusive) never sees the probe half-made
            with self.writing(), tempfile.NamedTemporaryFile(dir=self.tmp, prefix=".probe-", delete=True):
                pass
            self._ready = True
            self._upgrading()
        except OSError as e:
            self._ready = False
            raise UsageError(
                f"the yoco home {self.root} is not writable ({e.strerror or e})",
                "pass --home PATH or set YOCO_HOME to a writable folder",
            ) from None
        return self

    def _sweep_abandoned(self) -> None:
        """Staging folders of killed processes (their owner lock free), swept once per store object when
        it first stages something and nobody holds the store lock at that moment (else gc sweeps them)."""
        if self._swept or self.tmp.is_symlink():
            return  # (a linked tmp/: gc refuses such a store, saying why)
        self._swept = True
        with self._store_lock().try_exclusive() as got:
            if got:
                for p in _entries(self.tmp):
                    if _abandoned(p):
                        _remove_staging(p)

    # -- the store lock (see locks.py) ----------------------------------------------
    def _store_lock(self) -> locks.StoreLock:
        _refuse_link(self.locks_dir, self.root)  # the lock file must be the store's own
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        return locks.StoreLock(self.locks_dir / "store.lock")

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Held (shared) while objects enter objects/ until the manifest that uses them is written.
        A read-only home takes no lock (it cannot make the lock file; nothing of ours changes it)."""
        if not self.writable():
            yield
            return
        with self._store_lock().shared():
            yield

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held by gc, rm and quarantine: no writer is between moving objects in and committing."""
        if not self.writable():
            yield
            return
        with self._store_lock().exclusive():
            yield

    # -- objects -------------------------------------------------------------
    def object_path(self, digest: str) -> Path:
        if not _DIGEST_RE.match(digest):  # a digest from a damaged manifest must not name a path elsewhere
            raise IntegrityError(f"{digest[:80]!r} is not a sha256 digest (a damaged manifest or name?)",
                                 "run `yoco cache verify` to find it")
        return self.objects / digest[:2] / digest

    # -- links: the store's own folders only ---------------------------------------
    def check_no_links(self) -> None:
        """Refuse (exit 3) a store folder that is a symbolic link. gc, rm, verify and quarantine delete
        and move files: through a link they would do so in a folder outside the store."""
        top = [self.root / "objects", self.objects, self.runs, self.refs_dir, self.tmp, self.locks_dir,
               self.quarantine_dir, self.root / "partial"]
        for d in top:
            _refuse_link(d, self.root)
        for parent in (self.objects, self.runs, self.root / "partial"):
            for d in _entries(parent):
                _refuse_link(d, self.root)
        if self.refs_dir.is_dir():
            for here, dirs, _ in os.walk(self.refs_dir):  # os.walk never descends into a linked folder
                for name in dirs:
                    _refuse_link(Path(here) / name, self.root)

    def has_object(self, digest: str) -> bool:
        return self.object_file(digest).is_file()

    def object_file(self, digest: str) -> Path:
        """Where an object is read from: the home's copy, else a shared store's (else the home's path)."""
        path = self.object_path(digest)
        if path.is_file():
            return path
        for layer in self.layers:
            theirs = layer.object_path(digest)
            if theirs.is_file():
                return theirs
        return path

    def put_file(self, path: Path, digest: str | None = None) -> tuple[str, int]:
        """Move a staged file into the object store (it must live on the store's filesystem).

        An object that already exists is replaced by the fresh copy: same name, same bytes when it
        is sound, and a silently damaged copy is repaired instead of being reused."""
        self.ensure()
        digest = digest or sha256_file(path)
        size = path.stat().st_size
        dest = self.object_path(digest)
        with self.writing():
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o444)
            os.replace(path, dest)
        return digest, size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        with self.staging() as tmp:
            p = tmp / "blob"
            p.write_bytes(data)
            return self.put_file(p)

    def read_object(self, digest: str, what: str | None = None, hint: str | None = None) -> Blob:
        """The object's bytes, checked against its digest; a damaged object is quarantined (exit 3)."""
        return self._read_checked(digest, what or f"object {digest[:12]}", lambda: hint)

    def _read_checked(self, digest: str, what: str | Callable[[], str], hint: Callable[[], str | None]) -> Blob:
        path = self.object_file(digest)
        try:
            data = _read_all(path)
        except FileNotFoundError:
            raise self._missing(digest, _text(what), hint()) from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise self._damaged(digest, _text(what), hint(), path)
        return Blob(data, what, digest)

    def _missing(self, digest: str, what: str, hint: str | None) -> IntegrityError:
        return IntegrityError(f"{what} (object {digest[:12]}) is missing from the store",
                              hint or "run `yoco cache verify`, then recompute it")

    def _damaged(self, digest: str, what: str, hint: str | None, path: Path | None = None) -> IntegrityError:
        """Quarantine an object that failed its digest check (in the home only); the error to raise."""
        if path is not None and path != self.object_path(digest):
            where = f"in the shared store {path.parents[2]}, which yoco never changes: left in place"
        elif not self.writable():
            where = "the store is read-only: left in place"
        else:
            moved = self.quarantine(digest)
            where = f"moved it to {moved}" if moved else "it was repaired meanwhile"
        return IntegrityError(f"{what} is damaged: object {digest[:12]} does not match its digest ({where})",
                              hint or "run the command that made it again to recompute it")

    def read_output(self, m: Manifest, name: str) -> Blob:
        """Output `name` of a run, verified; errors name the artifact and the command that made it
        (worked out only when needed: naming the run scans the refs)."""
        return self._read_checked(m.digest(name), lambda: self.describe_output(m, name),
                                  lambda: self.recompute_hint(m))

    def verified_path(self, m: Manifest, name: str) -> Path:
        """For readers that need a file (torch.load, tarfile): hash the object first (streamed, so a
        gigabyte archive is not held in memory), quarantine on a mismatch."""
        digest = m.digest(name)
        path = self.object_file(digest)
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            raise self._missing(digest, self.describe_output(m, name), self.recompute_hint(m)) from None
        if actual != digest:
            raise self._damaged(digest, self.describe_output(m, name), self.recompute_hint(m), path)
        return path

    def describe_output(self, m: Manifest, name: str) -> str:
        refs = self.refs_to(m.stage, m.key)
        label = refs[0] if refs else m.short
        return f"{name!r} of the {m.stage} run {label}"

    @staticmethod
    def recompute_hint(m: Manifest) -> str:
        """How to make a run's outputs again: the command line recorded in its provenance."""
        return _remake(m)

    def quarantine(self, digest: str) -> Path | None:
        """Move a damaged object out of objects/ (under the exclusive lock, after hashing it again: a
        writer may have replaced it with a sound copy meanwhile). Returns where it went, or None."""
        path = self.object_path(digest)
        if not self.writable():
            return None
        with self.exclusive():
            self.check_no_links()
            try:
                if sha256_file(path) == digest:
                    return None
            except FileNotFoundError:
                return None
            self.quarantine_dir.mkdir(parents=True, exist_ok=True)
            dest = self.quarantine_dir / digest
            n = 1
            while dest.exists():
                dest = self.quarantine_dir / f"{digest}.{n}"
                n += 1
            os.replace(path, dest)
            return dest

    def quarantined(self) -> list[Path]:
        """The files quarantine() made (named by their digest); anything else there is left alone."""
        return sorted(p for p in _entries(self.quarantine_dir) if _QUARANTINED_RE.match(p.name) and _plain_file(p))

    def quarantined_digests(self) -> set[str]:
        return {p.name.split(".")[0] for p in self.quarantined()}

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A private temp folder inside the store, removed on exit whatever happens. Its owner holds
        the lock file inside it until then, so gc knows a folder whose lock it can take is abandoned."""
        self.ensure()
        self._sweep_abandoned()
        with self.writing():
            d = Path(tempfile.mkdtemp(dir=self.tmp, prefix=f"stage-{os.getpid()}-"))
            owner = locks.KeyLock(d / OWNER)
            owner.acquire(timeout=0)
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)
            owner.release()

    def partial_dir(self, stage: str, key: str) -> Path:
        """Where a resumable stage keeps its checkpoints until it commits (use it under the key's lock)."""
        d = self.root / "partial" / stage / key
        d.mkdir(parents=True, exist_ok=True)
        return d

    def clear_partial(self, stage: str, key: str) -> None:
        shutil.rmtree(self.root / "partial" / stage / key, ignore_errors=True)

    # -- manifests -------------------------------------------------------------
    def manifest_path(self, stage: str, key: str) -> Path:
        return self.runs / stage / f"{key}.json"

    def load_run(self, stage: str, key: str, require_objects: bool = True) -> Manifest | None:
        p = self.manifest_path(stage, key)
        if not p.is_file():
            for layer in self.layers:  # a shared store's run, read (and verified) from its own objects
                m = layer.load_run(stage, key, require_objects)
                if m is not None:
                    return m
            return None
        try:
            m = self._read_manifest(p)
        except (FileNotFoundError, _Gone):
            return None  # removed by rm meanwhile, or its manifest object lost: not computed
        if require_objects and not all(self.has_object(o["digest"]) for o in m.outputs.values()):
            return None  # objects lost or quarantined: treat as not computed
        return m

    def _read_manifest(self, p: Path) -> Manifest:
        """A run's manifest, verified: its commit record names the manifest object's digest, which is
        checked as every object's is (an edited manifest is quarantined, exit 3). Raises _Gone when
        the manifest object is missing (quarantined before: the run counts as not computed)."""
        stage, key = p.parent.name, p.name[: -len(".json")]
        try:
            record = json.loads(p.read_text(encoding="utf-8"))
            sealed = manifest_digest_of(record)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
            raise self._unreadable(p) from None
        if sealed is None:
            return self._read_legacy(p, record, stage, key)
        label = lambda: self._run_label(stage, key)  # worked out only for an error message
        try:
            data = _read_all(self.object_path(sealed))
        except FileNotFoundError:
            raise _Gone() from None
        if hashlib.sha256(data).hexdigest() != sealed:  # not quarantined here: readers may hold the lock shared
            raise IntegrityError(f"the manifest of the {label()} was edited or damaged: object {sealed[:12]} "
                                 "does not match its digest", self._remake_hint(stage, key, sealed))
        try:
            m = Manifest.from_json(bytes(data).decode("utf-8"))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise IntegrityError(f"the manifest of the {label()} is not a manifest (object {sealed[:12]})",
                                 self._remake_hint(stage, key, None)) from None
        if (m.stage, m.key) != (stage, key):
            raise IntegrityError(f"the manifest of the {label()} belongs to another run "
                                 f"({m.stage} {str(m.key)[:12]})", self._remake_hint(stage, key, None))
        return m

    def _read_legacy(self, p: Path, doc: dict, stage: str, key: str) -> Manifest:
        """A manifest written before manifests were sealed: read in a store not yet upgraded (a read-only
        one), checked against its key; in an upgraded store it can only be an edit."""
        try:
            m = Manifest.from_json(json.dumps(doc))
        except (ValueError, KeyError, TypeError):
            raise self._unreadable(p) from None
        if self.is_sealed():
            raise IntegrityError(f"the manifest of the {self._run_label(stage, key)} is not covered by a digest "
                                 "(this store seals every manifest: it was written by hand or by an old yoco)",
                                 _remake(m))
        if (m.stage, m.key) != (stage, key) or not legacy_key_matches(m):
            raise IntegrityError(f"the manifest of the {self._run_label(stage, key)} does not match its key "
                                 "(its parameters or inputs were edited)", _remake(m))
        return m

    def _unreadable(self, p: Path) -> IntegrityError:
        return IntegrityError(f"the manifest {p.relative_to(self.root)} is damaged",
                              f"delete it (`rm {p}`) and run the command again to recompute")

    def _run_label(self, stage: str, key: str) -> str:
        refs = self.refs_to(stage, key)
        return f"{stage} run {refs[0]} ({key[:12]})" if refs else f"{stage} run {key[:12]}"

    def _remake_hint(self, stage: str, key: str, sealed: str | None) -> str:
        """How to make a run whose manifest is damaged again: the command it records, read from the
        damaged copy only to be printed (it is not trusted for anything else)."""
        argv = None
        if sealed is not None:  # the damaged copy: in objects/ until it is moved, then in quarantine/
            copies = [self.object_path(sealed)] + [p for p in self.quarantined() if p.name.split(".")[0] == sealed]
            for p in copies:
                with contextlib.suppress(OSError, ValueError, UnicodeDecodeError, AttributeError):
                    argv = json.loads(p.read_text(encoding="utf-8")).get("provenance", {}).get("argv")
                    break
        return f"{recompute_hint_of(argv)} (the stage recomputes it; `yoco cache verify` moves the damaged copy aside)"

    def is_sealed(self) -> bool:
        """Whether this store seals every manifest (written by this yoco, or upgraded by it)."""
        return (self.root / FORMAT_FILE).is_file()

    def _seal(self, m: Manifest) -> str:
        """Store a manifest's bytes as an object; its digest."""
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix=".w-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(m.to_json())
        return self.put_file(Path(tmp))[0]

    def commit_run(self, m: Manifest) -> None:
        """The commit point: the manifest becomes an object, then its commit record (runs/<stage>/<key>.json,
        naming that object's digest) is written atomically."""
        with self.writing():
            for name, o in m.outputs.items():
                if not self.has_object(o["digest"]):
                    raise IntegrityError(f"output {name!r} of {m.stage} is not in the store")
            sealed = self._seal(m)
            _atomic_write_text(self.manifest_path(m.stage, m.key), commit_record(m, sealed), self.tmp)

    def upgrade(self) -> int:
        """Seal the manifests of a store written by an older yoco (in place, once); how many. A legacy
        manifest that does not match its key (edited) is left as it is: it then reads as damaged."""
        if not self._ready:
            self.ensure()  # which upgrades: this call then has nothing left to do
            return self._upgraded
        return self._upgrading()

    def _upgrading(self) -> int:
        if self.is_sealed():
            return 0
        n = 0
        with self.exclusive():
            for p in sorted(self.runs.glob("*/*.json")) if self.runs.is_dir() else []:
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, IntegrityError):
                    record = json.loads(p.read_text(encoding="utf-8"))
                    if manifest_digest_of(record) is None:
                        self.commit_run(self._read_legacy(p, record, p.parent.name, p.name[: -len(".json")]))
                        n += 1
            _atomic_write_text(self.root / FORMAT_FILE, f"{STORE_FORMAT}\n", self.tmp)
        self._upgraded = n
        return n

    def uncommit_run(self, m: Manifest) -> None:
        """Undo a commit this process just made (its name could not be written): all or nothing."""
        with self.writing():
            _unlink(self.manifest_path(m.stage, m.key))

    def has_run(self, stage: str, key: str) -> bool:
        return self.manifest_path(stage, key).is_file() or any(la.has_run(stage, key) for la in self.layers)

    def all_runs(self, stage: str | None = None) -> list[Manifest]:
        """The home's runs, then those of the shared stores that the home lacks."""
        out = self._own_runs(stage)
        seen = {(m.stage, m.key) for m in out}
        for layer in self.layers:
            for m in layer.all_runs(stage):
                if (m.stage, m.key) not in seen:
                    seen.add((m.stage, m.key))
                    out.append(m)
        return out

    def _own_runs(self, stage: str | None = None) -> list[Manifest]:
        if not self.runs.is_dir():
            return []
        pattern = f"{stage}/*.json" if stage else "*/*.json"
        out = []
        for p in sorted(self.runs.glob(pattern)):
            try:
                out.append(self._read_manifest(p))
            except (OSError, IntegrityError, _Gone):
                continue  # a damaged manifest is reported by verify, a removed one is gone
        return out

    def sealed_digests(self) -> set[str]:
        """The manifest objects every commit record names (gc keeps them)."""
        out = set()
        for p in self.runs.glob("*/*.json") if self.runs.is_dir() else []:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
                d = manifest_digest_of(json.loads(p.read_text(encoding="utf-8")))
                if d is not None:
                    out.add(d)
        return out

    def _sealed_digest(self, m: Manifest) -> str | None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            return manifest_digest_of(json.loads(self.manifest_path(m.stage, m.key).read_text(encoding="utf-8")))
        return None

    def lock_path(self, stage: str, key: str) -> Path:
        return self.locks_dir / f"{stage}-{key}.lock"

    @contextlib.contextmanager
    def lock(self, stage: str, key: str, timeout: float | None = None, on_wait=None) -> Iterator[None]:
        self.ensure()
        if timeout is None:
            timeout = lock_timeout()
        lock = locks.KeyLock(self.lock_path(stage, key))
        if not lock.acquire(timeout=timeout, on_wait=on_wait):
            raise LockTimeout(
                f"another yoco process has held the lock for {stage} {key[:12]} for over {timeout:g} s",
                "wait for it to finish or raise YOCO_LOCK_TIMEOUT",
            )
        try:
            yield
        finally:
            lock.release()

    # -- refs ----------------------------------------------------------------
    def ref_path(self, name: str) -> Path:
        return self.refs_dir / f"{name}.json"

    def check_ref_name(self, name: str) -> str:
        """A name yoco can write: allowed characters, and short enough for the filesystem (checked
        before any work, so a run is never committed without the name it was asked for)."""
        if not _REF_RE.match(name) or ".." in name.split("/"):
            raise UsageError(
                f"invalid name {name!r}",
                "use letters, digits and . _ - @ + = , separated by '/' (e.g. idc/cifar10/ipc10)",
            )
        parts = name.split("/")
        longest = max(parts, key=lambda c: len(c.encode()))
        if len(parts[-1].encode()) + len(".json") > NAME_MAX or len(longest.encode()) > NAME_MAX:
            raise UsageError(f"the name {_clip(name)} has a part of {len(longest.encode())} bytes; names are "
                             f"stored as files, whose names may have at most {NAME_MAX - len('.json')} bytes",
                             "choose a shorter --name (split it with '/' if you like)")
        full = len(str(self.ref_path(name)).encode())
        if full >= PATH_MAX:
            raise UsageError(f"the name {_clip(name)} makes a path of {full} bytes under {self.refs_dir}; "
                             f"the limit is {PATH_MAX - 1}", "choose a shorter --name or a shorter --home")
        return name

    def set_ref(self, name: str, stage: str, key: str) -> None:
        self.ensure()
        self.check_ref_name(name)
        import json

        with self.writing():
            _atomic_write_text(self.ref_path(name), json.dumps({"stage": stage, "key": key}) + "\n", self.tmp)

    def refs(self) -> dict[str, tuple[str, str]]:
        """Names -> (stage, key): the home's, and the shared stores' names the home does not define."""
        out: dict[str, tuple[str, str]] = {}
        for layer in reversed(self.layers):
            out.update(layer.refs())
        out.update(self.own_refs())
        return out

    def own_refs(self) -> dict[str, tuple[str, str]]:
        import json

        out: dict[str, tuple[str, str]] = {}
        if not self.refs_dir.is_dir():
            return out
        for p in sorted(self.refs_dir.rglob("*.json")):
            name = p.relative_to(self.refs_dir).as_posix()[: -len(".json")]
            try:
                doc = json.loads(p.read_text(encoding="utf-8"))
                out[name] = (str(doc["stage"]), str(doc["key"]))
            except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
                continue  # a damaged name is reported by verify and removed by gc; a removed one is gone
        return out

    def refs_to(self, stage: str, key: str) -> list[str]:
        return [n for n, (s, k) in self.refs().items() if s == stage and k == key]

    def resolve(self, spec: str, stage: str | None = None, what: str = "artifact",
                require_objects: bool = True) -> Manifest:
        """A ref name or a unique key prefix (>= 4 hex digits) -> manifest. `require_objects=False`
        also finds runs whose outputs are missing or quarantined (for `cache rm` and `cache info`)."""
        refs = self.refs()
        if spec in refs:
            s, k = refs[spec]
            m = self.load_run(s, k, require_objects)
            if m is not None and (stage is None or m.stage == stage):
                return m
            if m is None:
                raise self._missing_error(spec, s, k)
        if re.fullmatch(r"[0-9a-f]{4,64}", spec):
            pattern = f"{stage}/{spec}*.json" if stage else f"*/{spec}*.json"
            hits = sorted({p.relative_to(st.runs): p for st in (*self.layers[::-1], self) if st.runs.is_dir()
                           for p in st.runs.glob(pattern)}.values())  # damaged ones too; the home's first
            if len(hits) == 1:
                s, k = hits[0].parent.name, hits[0].name[: -len(".json")]
                m = self.load_run(s, k, require_objects)  # a damaged manifest: exit 3 naming it
                if m is None:
                    raise self._missing_error(spec, s, k)
                return m
            if len(hits) > 1:
                raise UsageError(f"key prefix {spec} matches {len(hits)} {what}s", "give more digits")
        names = [n for n, (s, _) in refs.items() if stage is None or s == stage]
        close = difflib.get_close_matches(spec, names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see `yoco cache ls`"
        raise UsageError(f"no {what} named {spec!r} in the store", hint)

    def _missing_error(self, spec: str, stage: str, key: str) -> IntegrityError:
        m = self.load_run(stage, key, require_objects=False)
        if m is None:
            return IntegrityError(f"{spec} points to {stage} {key[:12]}, which is missing from the store",
                                  "run `yoco cache verify`, then recompute it")
        quarantined = self.quarantined_digests()
        lost = [n for n, o in m.outputs.items() if not self.has_object(o["digest"])]
        why = "is missing" + (" (it was damaged: a copy is in quarantine/)"
                              if any(m.digest(n) in quarantined for n in lost) else "")
        return IntegrityError(f"{spec}: output {lost[0]!r} of its {stage} run {key[:12]} {why}",
                              self.recompute_hint(m))

    # -- maintenance -----------------------------------------------------------
    def referenced_digests(self) -> set[str]:
        """What gc keeps: the objects of the home's runs and of the shared stores' (their copies in the
        home, when there are any, are what a home run may rely on)."""
        return {o["digest"] for m in self.all_runs() for o in m.outputs.values()} | self.sealed_digests()

    def all_objects(self) -> list[Path]:
        """Every object file: digest-named, in its own shard folder, a plain file (not a link)."""
        if not self.objects.is_dir():
            return []
        return sorted(p for p in self.objects.glob("*/*")
                      if _DIGEST_RE.match(p.name) and p.parent.name == p.name[:2] and _plain_file(p))

    def verify(self, progress=None) -> list[str]:
        """Re-hash every object (quarantining damaged ones); check every manifest's outputs and every
        name. Returns the problems found. Held shared: gc and rm wait, stages keep committing."""
        damaged: list[str] = []
        with self.writing():
            self.check_no_links()
            for p in self.all_objects():
                try:
                    if sha256_file(p) != p.name:
                        damaged.append(p.name)
                except FileNotFoundError:
                    pass  # quarantined by a reader meanwhile
                if progress:
                    progress()
        problems = [f"object {d[:12]} does not match its digest (corrupted); {self._set_aside(d)}" for d in damaged]
        quarantined = self.quarantined_digests()
        with self.writing():
            problems += self._check_manifests(quarantined)
            problems += self._check_refs()
        return problems

    def _set_aside(self, digest: str) -> str:
        if not self.writable():
            return "left in place: the store is read-only (verify it where it can be written to move it aside)"
        return f"moved to {self.quarantine(digest) or 'nowhere: it was repaired meanwhile'}"

    def _check_manifests(self, quarantined: set[str]) -> list[str]:
        """Every commit record: its manifest object sound (an edit is quarantined and named), and every
        output it names present. Objects were re-hashed just before, so a damaged one is already aside."""
        problems = []
        for mp in sorted(self.runs.glob("*/*.json")) if self.runs.is_dir() else []:
            stage, key = mp.parent.name, mp.name[: -len(".json")]
            try:
                m = self._read_manifest(mp)
            except FileNotFoundError:
                continue
            except IntegrityError as e:
                problems.append(e.one_line())
                continue
            except _Gone:
                problems.append(f"the manifest of the {self._run_label(stage, key)} is missing (it was damaged or "
                                "edited: a copy is in quarantine/); " + self._remake_hint(stage, key, None))
                continue
            for name, o in m.outputs.items():
                if not self.has_object(o["digest"]):
                    why = "is missing" + (" (a damaged copy is in quarantine/)" if o["digest"] in quarantined else "")
                    problems.append(f"{m.stage} {m.short}: output {name} ({o['digest'][:12]}) {why}; "
                                    + self.recompute_hint(m))
        return problems

    def _check_refs(self) -> list[str]:
        problems = []
        good = self.own_refs()
        for name, (s, k) in good.items():
            if not self.has_run(s, k):
                problems.append(f"ref {name} points to a missing {s} run {k[:12]}")
        for name in self._ref_files():
            if name not in good:
                problems.append(f"ref {name} is damaged (not a name file yoco wrote)")
        return problems

    def _ref_files(self) -> list[str]:
        if not self.refs_dir.is_dir():
            return []
        return [p.relative_to(self.refs_dir).as_posix()[: -len(".json")] for p in self.refs_dir.rglob("*.json")]

    def gc(self, dry_run: bool = False) -> dict[str, list[str]]:
        """Remove objects no manifest references, dangling refs, abandoned staging files, quarantined
        objects, stale lock files and empty or finished partial folders. Safe while stages run: it
        holds the store lock exclusive, so no writer is between moving objects in and committing."""
        with self.exclusive():
            self.check_no_links()
            keep = self.referenced_digests()
            dead = [p for p in self.all_objects() if p.name not in keep]
            good = self.own_refs()
            dangling = [n for n, (s, k) in good.items() if not self.has_run(s, k)]
            dangling += [n for n in self._ref_files() if n not in good]
            stale = [p for p in _entries(self.tmp) if _abandoned(p)]
            quarantined = self.quarantined()
            freed = sum(_size(p) for p in dead + quarantined)
            if not dry_run:
                for p in dead + quarantined:
                    _unlink(p)
                for n in dangling:
                    _unlink(self.ref_path(n))
                for p in stale:
                    _remove_staging(p)
        tidy = self.tidy(dry_run=dry_run)
        return {
            "objects": [p.name for p in dead],
            "refs": dangling,
            "tmp": [p.name for p in stale],
            "quarantine": [p.name for p in quarantined],
            **tidy,
            "bytes": [str(freed)],
        }

    def tidy(self, dry_run: bool = False) -> dict[str, list[str]]:
        """Lock files nobody holds, and partial folders that are empty or whose run is committed (only
        while their key's lock is free, i.e. no process is computing that key)."""
        self.check_no_links()
        stale_locks: list[str] = []
        partials: list[str] = []
        if not self.writable():
            return {"locks": stale_locks, "partial": partials}  # taking a lock would make its file
        parts = sorted(p for p in (self.root / "partial").glob("*/*") if p.is_dir()) \
            if (self.root / "partial").is_dir() else []
        for d in parts:
            stage, key = d.parent.name, d.name
            finished = self.manifest_path(stage, key).is_file()
            if not finished and any(d.iterdir()):
                continue  # checkpoints of an interrupted run: the next run resumes from them
            lock = locks.KeyLock(self.lock_path(stage, key))
            if not lock.acquire(timeout=0):
                continue  # a process is computing this key right now
            try:
                partials.append(f"{stage}/{key}")
                if not dry_run:
                    shutil.rmtree(d, ignore_errors=True)
                    with contextlib.suppress(OSError):
                        d.parent.rmdir()  # the stage folder, when it was the last one
            finally:
                lock.release()
        for p in sorted(self.locks_dir.glob("*.lock")) if self.locks_dir.is_dir() else []:
            if p.name == "store.lock":
                continue
            if dry_run:
                if not locks.held_by_someone(p):
                    stale_locks.append(p.name)
            elif locks.try_remove(p):
                stale_locks.append(p.name)
        return {"locks": stale_locks, "partial": partials}

    def rm(self, manifests: list[Manifest], dry_run: bool = False) -> dict[str, list[str]]:
        """Remove runs and the refs naming them; then collect objects nothing else uses."""
        shared = [m for m in manifests if not self.manifest_path(m.stage, m.key).is_file()]
        if shared:
            raise UsageError(f"the {shared[0].stage} run {shared[0].short} is in a shared store, which yoco never "
                             "changes", "remove it there, with that store as --home")
        with self.exclusive():
            self.check_no_links()
            removed_refs = [n for m in manifests for n in self.refs_to(m.stage, m.key)]
            sealed = {d for d in (self._sealed_digest(m) for m in manifests) if d is not None}
            if not dry_run:
                for n in removed_refs:
                    _unlink(self.ref_path(n))
                for m in manifests:
                    _unlink(self.manifest_path(m.stage, m.key))
            gone = {m.key for m in manifests}
            keep = {o["digest"] for m in self.all_runs() if m.key not in gone for o in m.outputs.values()}
            freed = sorted(({o["digest"] for m in manifests for o in m.outputs.values()} | sealed) - keep)
            if not dry_run:
                for d in freed:
                    _unlink(self.object_path(d))
        if not dry_run:
            for m in manifests:  # a partial folder is only touched under its key's lock
                lock = locks.KeyLock(self.lock_path(m.stage, m.key))
                if lock.acquire(timeout=0):
                    try:
                        self.clear_partial(m.stage, m.key)
                    finally:
                        lock.release()
        return {"runs": [f"{m.stage}/{m.key}" for m in manifests], "refs": removed_refs, "objects": freed}


OWNER = ".owner.lock"
FORMAT_FILE = "format"  # present: every manifest is sealed (a legacy one is an edit)


def _clip(name: str, n: int = 40) -> str:
    return repr(name if len(name) <= n else name[: n - 3] + "...")


def _read_all(path: Path) -> bytearray:
    """The whole file in one buffer (readers parse from it, so the bytes hashed are the bytes used)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = f.readinto(view[got:])
            if not n:
                break
            got += n
        if got < size:
            del view
            del buf[got:]
    return buf


def _entries(d: Path) -> list[Path]:
    try:
        return list(d.iterdir())
    except FileNotFoundError:
        return []


def _other(p: Path, root: Path) -> bool:
    """Whether a shared store is another folder than the home (the home never layers under itself)."""
    try:
        return p.resolve() != root.resolve()
    except OSError:
        return True


def _plain_file(p: Path) -> bool:
    return p.is_file() and not p.is_symlink()


def _refuse_link(d: Path, root: Path) -> None:
    if d.is_symlink():
        try:
            target = os.readlink(d)
        except OSError:
            target = "?"
        raise IntegrityError(
            f"{d.relative_to(root).as_posix()} in the store {root} is a symbolic link (to {target}); "
            "yoco never follows a link inside its store",
            f"replace it with a real folder (`rm {d}`; yoco makes it again), then run the command again")


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return 0


def _unlink(p: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        p.unlink()  # the folder's permissions decide, not the object's read-only mode


def _remove_staging(p: Path) -> None:
    if p.is_symlink():
        return  # not something yoco made
    if p.is_dir():
        lock = locks.KeyLock(p / OWNER) if (p / OWNER).exists() else None
        if lock is not None and not lock.acquire(timeout=0):
            return  # its owner is alive after all
        try:
            shutil.rmtree(p, ignore_errors=True)
        finally:
            if lock is not None:
                lock.release()
    else:
        _unlink(p)


def _abandoned(p: Path, min_age_s: float = 3600.0) -> bool:
    """Staging entries whose owner is gone. Called under the exclusive store lock, so every entry
    was made by a writer that finished making it:
      stage-*/ with an owner lock: abandoned iff nobody holds that lock (its owner died);
      stage-PID-*/ without one (older yoco): abandoned iff that process is gone;
      .w-* and .probe-* files: written only under the shared lock, so their writer is gone;
      anything else (or a link) is not yoco's and is left alone."""
    if p.is_symlink() or not p.name.startswith(_STAGING_PREFIXES):
        return False
    if p.is_dir() and (p / OWNER).exists():
        return not locks.held_by_someone(p / OWNER)
    if p.name.startswith((".w-", ".probe-")):
        return True
    m = re.match(r"stage-(\d+)-", p.name)
    if m:
        try:
            os.kill(int(m.group(1)), 0)  # alive (this process included): still in use
            return False
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    try:
        return time.time() - p.stat().st_mtime > min_age_s
    except FileNotFoundError:
        return False
