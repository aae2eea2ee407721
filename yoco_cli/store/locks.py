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
from typing import Any, ClassVar

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
        self._fallback: Any = None  # a filelock.SoftFileLock where flock is missing (imported only then)

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


class _State:
    """One process's hold on one store lock: which threads hold it and how (guarded by `cond`)."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.fd: int | None = None
        self.sharers: dict[int, int] = {}  # thread id -> depth
        self.owner: int | None = None  # the thread holding it exclusive (or taking it)
        self.depth = 0  # the owner's depth, shared holds inside exclusive included
        self.busy = False  # a thread is taking the flock for the sharers: the others wait for it


class StoreLock:
    """The store-wide shared/exclusive lock, correct across processes (flock) and across the threads
    of one process (a readers-writer lock in front of the flock: flock is per open file, so the
    threads of a process share one descriptor and the process holds the flock while any thread does).

    Re-entrant per thread: shared inside shared, shared inside exclusive. Exclusive inside shared on
    the same thread is a programming error (it would wait for itself); exclusive while *another*
    thread holds it shared waits for that thread, as it waits for another process."""

    _guard = threading.Lock()
    _states: ClassVar[dict[str, _State]] = {}

    def __init__(self, path: Path | str):
        self.path = str(path)
        with self._guard:
            self._state = self._states.setdefault(self.path, _State())

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        self._acquire_shared()
        try:
            yield
        finally:
            self._release()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        self._acquire_exclusive()
        try:
            yield
        finally:
            self._release()

    def _acquire_shared(self) -> None:
        st, me = self._state, threading.get_ident()
        with st.cond:
            if st.owner == me or me in st.sharers:
                self._deepen(me)
                return
            st.cond.wait_for(lambda: st.owner is None and not st.busy)
            if st.sharers:  # the process already holds the flock shared: join
                st.sharers[me] = 1
                return
            st.busy = True
        fd = None
        try:
            fd = self._flock(fcntl.LOCK_SH if fcntl is not None else 0)
        finally:
            with st.cond:  # one step: a waiter that wakes sees the sharer and the descriptor together
                st.busy = False
                if fd is not None:
                    st.fd, st.sharers[me] = fd, 1
                st.cond.notify_all()

    def _acquire_exclusive(self) -> None:
        st, me = self._state, threading.get_ident()
        with st.cond:
            if st.owner == me:
                st.depth += 1
                return
            if me in st.sharers:
                raise RuntimeError("store lock: exclusive requested while this thread holds it shared")
            st.cond.wait_for(lambda: st.owner is None and not st.busy and not st.sharers)
            st.owner, st.depth = me, 1  # reserved: other threads wait while the flock is taken
        try:
            fd = self._flock(fcntl.LOCK_EX if fcntl is not None else 0)
        except BaseException:
            with st.cond:
                st.owner, st.depth = None, 0
                st.cond.notify_all()
            raise
        with st.cond:
            st.fd = fd

    @contextlib.contextmanager
    def try_exclusive(self) -> Iterator[bool]:
        """Exclusive if nobody (no thread, no process) holds the lock right now, without waiting:
        yields whether it got it (for tidying that may just as well wait for the next time)."""
        got = self._try_acquire_exclusive()
        try:
            yield got
        finally:
            if got:
                self._release()

    def _try_acquire_exclusive(self) -> bool:
        st, me = self._state, threading.get_ident()
        with st.cond:
            if st.owner is not None or st.sharers or st.busy:
                return False
            st.owner, st.depth = me, 1
        fd, got = None, False
        try:
            fd = _open(Path(self.path))
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            got = True
        except BlockingIOError:
            pass  # another process holds it
        finally:
            if not got and fd is not None:
                os.close(fd)
            with st.cond:
                if got:
                    st.fd = fd
                else:
                    st.owner, st.depth = None, 0
                    st.cond.notify_all()
        return got

    def _deepen(self, me: int) -> None:
        st = self._state
        if st.owner == me:
            st.depth += 1
        else:
            st.sharers[me] += 1

    def _flock(self, op: int) -> int:
        fd = _open(Path(self.path))
        try:
            if fcntl is not None:
                fcntl.flock(fd, op)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _release(self) -> None:
        st, me = self._state, threading.get_ident()
        with st.cond:
            if st.owner == me:
                st.depth -= 1
                last = st.depth == 0
                if last:
                    st.owner = None
            else:
                st.sharers[me] -= 1
                if st.sharers[me] == 0:
                    del st.sharers[me]
                last = not st.sharers
            if last and st.fd is not None:
                os.close(st.fd)  # closing the descriptor drops the flock
                st.fd = None
            if last:
                st.cond.notify_all()

    @classmethod
    def _forget_after_fork(cls) -> None:
        """A forked child holds none of its parent's locks: drop the copied state (and its copies of
        the descriptors, which would otherwise keep the parent's flock alive after the parent drops it)."""
        for st in cls._states.values():
            if st.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(st.fd)
        cls._states = {}
        cls._guard = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=StoreLock._forget_after_fork)
