"""File locks that a crash releases and that `gc` can delete without breaking anyone.

Two kinds, both `flock(2)` locks (the kernel drops them when their process dies, SIGKILL included):

* `KeyLock(path)`: one exclusive lock per stage key (and per staging folder). Stale lock files are
  removed by `try_remove`, which first takes the lock and unlinks the file while holding it. Every
  acquirer checks, once it holds the lock, that the path still names the file it locked; if a
  cleanup unlinked it meanwhile, it locks the new file instead. So removing a lock file can never
  let two processes hold "the same" lock.
* `StoreLock(path)`: one shared/exclusive lock for the whole store. Every writer holds it shared
  while it moves objects into `objects/` and writes the manifest that references them (and while it
  creates a staging folder or writes a name); `gc`, `rm` and quarantining hold it exclusive. So gc
  never sees an object that is in `objects/` but not yet referenced by its manifest, and never sees a
  staging folder before its owner locked it. The windows are short (renames and one small write).

Where `fcntl` does not exist (Windows) the locks fall back to `filelock` and nothing is cleaned up.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

POLL_S = 0.05


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_ino, own.st_dev) == (st.st_ino, st.st_dev)


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)


class KeyLock:
    """An exclusive lock on `path`. `acquire(timeout)`: None or < 0 waits for ever, 0 tries once."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._fd: int | None = None
        self._fallback = None

    def acquire(self, timeout: float | None = None, on_wait: Callable[[], None] | None = None) -> bool:
        if fcntl is None:  # pragma: no cover
            return self._acquire_fallback(timeout, on_wait)
        forever = timeout is None or timeout < 0
        deadline = time.monotonic() + (timeout or 0)
        waited = False
        while True:
            fd = _open(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                if not self._wait(fd, forever, deadline):
                    os.close(fd)
                    return False
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.path):
                self._fd = fd
                return True
            os.close(fd)  # a cleanup removed the file while we waited: lock the one that is there now

    @staticmethod
    def _wait(fd: int, forever: bool, deadline: float) -> bool:
        """Block until `fd` is locked (True), or poll until the deadline (False when it passes)."""
        if forever:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            return True
        while time.monotonic() < deadline:
            time.sleep(POLL_S)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                continue
        return False

    def release(self) -> None:
        if self._fallback is not None:  # pragma: no cover
            self._fallback.release()
            self._fallback = None
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def _acquire_fallback(self, timeout, on_wait) -> bool:  # pragma: no cover - Windows
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if on_wait is not None:
                on_wait()
            try:
                lock.acquire(timeout=-1 if timeout is None else timeout)
            except Timeout:
                return False
        self._fallback = lock
        return True


def try_remove(path: Path) -> bool:
    """Delete a lock file nobody holds; False (and nothing done) when it is held."""
    if fcntl is None:  # pragma: no cover
        return False
    lock = KeyLock(path)
    if not lock.acquire(timeout=0):
        return False
    try:
        os.unlink(path)  # while holding it: later acquirers notice the file changed and relock
    except FileNotFoundError:
        pass
    finally:
        lock.release()
    return True


def held_by_someone(path: Path) -> bool:
    """Whether a live process holds the lock at `path` (a missing file is not held)."""
    if fcntl is None or not path.exists():  # pragma: no cover
        return False
    lock = KeyLock(path)
    if lock.acquire(timeout=0):
        lock.release()
        return False
    return True


class StoreLock:
    """The store-wide shared/exclusive lock. Re-entrant within a process; shared inside exclusive
    is allowed, exclusive inside shared is a programming error (it would wait for itself)."""

    _guard = threading.Lock()
    _held: dict[str, list] = {}  # path -> [mode, depth, fd]: flock is per open file, so one per process

    def __init__(self, path: Path | str):
        self.path = str(path)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._hold("shared"):
            yield

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._hold("exclusive"):
            yield

    @contextlib.contextmanager
    def _hold(self, mode: str) -> Iterator[None]:
        with self._guard:
            entry = self._held.get(self.path)
            if entry is not None:
                if mode == "exclusive" and entry[0] == "shared":
                    raise RuntimeError("store lock: exclusive requested while this process holds it shared")
                entry[1] += 1
                fd = None
            else:
                fd = _open(Path(self.path))
        if fd is not None:
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_SH if mode == "shared" else fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            with self._guard:
                self._held[self.path] = [mode, 1, fd]
        try:
            yield
        finally:
            with self._guard:
                entry = self._held[self.path]
                entry[1] -= 1
                if entry[1] == 0:
                    del self._held[self.path]
                    os.close(entry[2])
