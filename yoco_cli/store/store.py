"""The store on disk.

    <home>/objects/sha256/ab/<digest>   immutable blobs, named by content, read-only
    <home>/runs/<stage>/<key>.json      manifests: a stage run exists iff its manifest does
    <home>/refs/<name>.json             friendly names -> (stage, key)
    <home>/tmp/                         staging on the same filesystem, so renames are atomic
    <home>/partial/<stage>/<key>/       checkpoints of resumable stages, removed on commit
    <home>/locks/                       one lock file per stage key

Write protocol: write into tmp/, hash, os.replace into objects/, then write the manifest
the same way. A crash at any point leaves at most unreferenced tmp files, never a
visible half-artifact; `gc` sweeps them.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from ..errors import IntegrityError, LockTimeout, UsageError
from .manifest import Manifest

_CHUNK = 1 << 20
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=,-]*(/[A-Za-z0-9][A-Za-z0-9._@+=,-]*)*$")


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


class Store:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root is not None else default_home()
        self._ready = False

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

    def ensure(self) -> "Store":
        """Create the layout; fail with a usage error when the home is not writable."""
        if self._ready:
            return self
        try:
            for d in (self.objects, self.runs, self.refs_dir, self.tmp, self.root / "locks", self.root / "partial"):
                d.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.tmp, prefix=".probe-", delete=True)
            probe.close()
        except OSError as e:
            raise UsageError(
                f"the yoco home {self.root} is not writable ({e.strerror or e})",
                "pass --home PATH or set YOCO_HOME to a writable folder",
            ) from None
        self._ready = True
        return self

    # -- objects -------------------------------------------------------------
    def object_path(self, digest: str) -> Path:
        return self.objects / digest[:2] / digest

    def has_object(self, digest: str) -> bool:
        return self.object_path(digest).is_file()

    def put_file(self, path: Path, digest: str | None = None) -> tuple[str, int]:
        """Move a staged file into the object store (it must live on the store's filesystem)."""
        self.ensure()
        digest = digest or sha256_file(path)
        size = path.stat().st_size
        dest = self.object_path(digest)
        if dest.exists():
            path.unlink()  # identical content already stored: one object
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o444)
            os.replace(path, dest)
        return digest, size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        with self.staging() as tmp:
            p = tmp / "blob"
            p.write_bytes(data)
            return self.put_file(p)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A private temp folder inside the store, removed on exit whatever happens."""
        self.ensure()
        d = Path(tempfile.mkdtemp(dir=self.tmp, prefix=f"stage-{os.getpid()}-"))
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def partial_dir(self, stage: str, key: str) -> Path:
        """Where a resumable stage keeps its checkpoints until it commits."""
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
            return None
        m = self._read_manifest(p)
        if require_objects and not all(self.has_object(o["digest"]) for o in m.outputs.values()):
            return None  # objects lost (e.g. deleted by hand): treat as not computed
        return m

    def _read_manifest(self, p: Path) -> Manifest:
        try:
            return Manifest.from_json(p.read_text(encoding="utf-8"))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise IntegrityError(f"the manifest {p.relative_to(self.root)} is damaged",
                                 f"delete it (`rm {p}`) and run the command again to recompute") from None

    def commit_run(self, m: Manifest) -> None:
        for name, o in m.outputs.items():
            if not self.has_object(o["digest"]):
                raise IntegrityError(f"output {name!r} of {m.stage} is not in the store")
        _atomic_write_text(self.manifest_path(m.stage, m.key), m.to_json(), self.tmp)

    def all_runs(self, stage: str | None = None) -> list[Manifest]:
        if not self.runs.is_dir():
            return []
        pattern = f"{stage}/*.json" if stage else "*/*.json"
        out = []
        for p in sorted(self.runs.glob(pattern)):
            try:
                out.append(Manifest.from_json(p.read_text(encoding="utf-8")))
            except (ValueError, KeyError, TypeError):
                continue  # a damaged manifest is reported by verify, not here
        return out

    @contextlib.contextmanager
    def lock(self, stage: str, key: str, timeout: float | None = None, on_wait=None) -> Iterator[None]:
        self.ensure()
        if timeout is None:
            timeout = float(os.environ.get("YOCO_LOCK_TIMEOUT", "-1"))
        lock = FileLock(str(self.root / "locks" / f"{stage}-{key}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if on_wait is not None:
                on_wait()
            try:
                lock.acquire(timeout=timeout)
            except Timeout:
                raise LockTimeout(
                    f"another yoco process has held the lock for {stage} {key[:12]} for over {timeout:g} s",
                    "wait for it to finish or raise YOCO_LOCK_TIMEOUT",
                ) from None
        try:
            yield
        finally:
            lock.release()

    # -- refs ----------------------------------------------------------------
    def ref_path(self, name: str) -> Path:
        return self.refs_dir / f"{name}.json"

    @staticmethod
    def check_ref_name(name: str) -> str:
        if not _REF_RE.match(name) or ".." in name.split("/"):
            raise UsageError(
                f"invalid name {name!r}",
                "use letters, digits and . _ - @ + = , separated by '/' (e.g. idc/cifar10/ipc10)",
            )
        return name

    def set_ref(self, name: str, stage: str, key: str) -> None:
        self.ensure()
        self.check_ref_name(name)
        import json

        _atomic_write_text(self.ref_path(name), json.dumps({"stage": stage, "key": key}) + "\n", self.tmp)

    def refs(self) -> dict[str, tuple[str, str]]:
        import json

        out: dict[str, tuple[str, str]] = {}
        if not self.refs_dir.is_dir():
            return out
        for p in sorted(self.refs_dir.rglob("*.json")):
            name = p.relative_to(self.refs_dir).as_posix()[: -len(".json")]
            try:
                doc = json.loads(p.read_text(encoding="utf-8"))
                out[name] = (str(doc["stage"]), str(doc["key"]))
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                continue  # a damaged name is reported by verify and removed by gc
        return out

    def refs_to(self, stage: str, key: str) -> list[str]:
        return [n for n, (s, k) in self.refs().items() if s == stage and k == key]

    def resolve(self, spec: str, stage: str | None = None, what: str = "artifact") -> Manifest:
        """A ref name or a unique key prefix (>= 4 hex digits) -> manifest."""
        refs = self.refs()
        if spec in refs:
            s, k = refs[spec]
            m = self.load_run(s, k)
            if m is not None and (stage is None or m.stage == stage):
                return m
            if m is None:
                raise IntegrityError(f"{spec} points to {s} {k[:12]}, which is missing from the store",
                                     "run `yoco cache verify`, then recompute it")
        if re.fullmatch(r"[0-9a-f]{4,64}", spec):
            hits = [m for m in self.all_runs(stage) if m.key.startswith(spec)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise UsageError(f"key prefix {spec} matches {len(hits)} {what}s", "give more digits")
        names = [n for n, (s, _) in refs.items() if stage is None or s == stage]
        close = difflib.get_close_matches(spec, names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see `yoco cache ls`"
        raise UsageError(f"no {what} named {spec!r} in the store", hint)

    # -- maintenance -----------------------------------------------------------
    def referenced_digests(self) -> set[str]:
        return {o["digest"] for m in self.all_runs() for o in m.outputs.values()}

    def all_objects(self) -> list[Path]:
        if not self.objects.is_dir():
            return []
        return sorted(p for p in self.objects.glob("*/*") if p.is_file())

    def verify(self, progress=None) -> list[str]:
        """Re-hash every object; check every manifest's outputs exist. Returns problems."""
        problems: list[str] = []
        objs = self.all_objects()
        for p in objs:
            if sha256_file(p) != p.name:
                problems.append(f"object {p.name[:12]} does not match its digest (corrupted)")
            if progress:
                progress()
        for mp in sorted(self.runs.glob("*/*.json")) if self.runs.is_dir() else []:
            try:
                m = Manifest.from_json(mp.read_text(encoding="utf-8"))
            except (ValueError, KeyError, TypeError):
                problems.append(f"manifest {mp.relative_to(self.root)} is unreadable")
                continue
            for name, o in m.outputs.items():
                if not self.has_object(o["digest"]):
                    problems.append(f"{m.stage} {m.short}: output {name} ({o['digest'][:12]}) is missing")
        good = self.refs()
        for name, (s, k) in good.items():
            if not self.manifest_path(s, k).is_file():
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
        """Remove objects no manifest references, dangling refs and abandoned staging files."""
        keep = self.referenced_digests()
        dead = [p for p in self.all_objects() if p.name not in keep]
        good = self.refs()
        dangling = [n for n, (s, k) in good.items() if not self.manifest_path(s, k).is_file()]
        dangling += [n for n in self._ref_files() if n not in good]
        stale = [p for p in self.tmp.iterdir() if _abandoned(p)] if self.tmp.is_dir() else []
        freed = sum(p.stat().st_size for p in dead)  # before deleting: the files are gone after
        if not dry_run:
            for p in dead:
                _unlink(p)
            for n in dangling:
                _unlink(self.ref_path(n))
            for p in stale:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else _unlink(p)
        return {
            "objects": [p.name for p in dead],
            "refs": dangling,
            "tmp": [p.name for p in stale],
            "bytes": [str(freed)],
        }

    def rm(self, manifests: list[Manifest], dry_run: bool = False) -> dict[str, list[str]]:
        """Remove runs and the refs naming them; then collect objects nothing else uses."""
        removed_refs = [n for m in manifests for n in self.refs_to(m.stage, m.key)]
        if not dry_run:
            for n in removed_refs:
                _unlink(self.ref_path(n))
            for m in manifests:
                _unlink(self.manifest_path(m.stage, m.key))
                self.clear_partial(m.stage, m.key)
        gone = {m.key for m in manifests}
        keep = {o["digest"] for m in self.all_runs() if m.key not in gone for o in m.outputs.values()}
        freed = sorted({o["digest"] for m in manifests for o in m.outputs.values()} - keep)
        if not dry_run:
            for d in freed:
                _unlink(self.object_path(d))
        return {"runs": [f"{m.stage}/{m.key}" for m in manifests], "refs": removed_refs, "objects": freed}


def _unlink(p: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.chmod(p, 0o644) if p.exists() else None
        p.unlink()


def _abandoned(p: Path, min_age_s: float = 5.0) -> bool:
    """Staging entries whose owning process is gone (name carries the pid) or that are old."""
    m = re.match(r"stage-(\d+)-", p.name)
    if m:
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)  # alive (this process included): still in use
            return False
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return time.time() - p.stat().st_mtime > min_age_s
