"""Writing user-named output files: checked before work starts, written atomically, refusals as usage errors."""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from .errors import UsageError


def check_output_file(path: Path, folder: bool = False) -> None:
    """Fail before any work on a destination that cannot be written (checked again when writing)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UsageError(f"the folder {path.parent} does not exist", "create it first")
    if path.is_dir() and not folder:
        raise UsageError(f"{path} is a directory", "give a file name")
    if path.exists() and not path.is_dir() and folder:
        raise UsageError(f"{path} is a file; this layout is written into a folder", "give a folder name")


def atomic_write(out: Path, write) -> None:
    """`write(tmp)` into a temp file next to `out`, then rename it into place (a crash leaves the
    old file or none). The OS refusing the destination (read-only folder, a directory in the way,
    a full disk) is the user's to fix: a usage error naming `out`, not an internal error."""
    out = Path(out)
    try:
        # the temp name is clipped: `out` may be just under the filesystem's 255-byte limit
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name[:64]}.", suffix=".tmp")
    except OSError as e:
        raise UsageError(f"cannot write to {out.parent} ({e.strerror or e})", "choose a writable folder") from None
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except OSError as e:
        _discard(tmp)
        if e.filename not in (None, tmp, str(out)):  # a source that could not be read: not about `out`
            raise
        raise UsageError(f"cannot write {out} ({e.strerror or e})", "choose a writable file name") from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


# -- reading user-named input files --------------------------------------------------------------
def stamp(path: Path) -> tuple:
    """What changes when a file is rewritten: size, modification time (ns), inode."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev


def check_unchanged(path: Path, before: tuple) -> None:
    """A file hashed for a cache key must not change before it has been read: else the key would
    name bytes that were not the ones read (a copy still being written, say)."""
    from .errors import IntegrityError

    if stamp(path) != before:
        raise IntegrityError(f"{path} changed while yoco was reading it",
                             "wait until it is completely written, then run the command again")


class BoundedReader(io.RawIOBase):
    """A stream whose reads never ask for more than the `size` bytes left: a length field of 2^60 in a
    pickle (or a 7 GiB string opcode in an archive member) gets a short read and fails, instead of
    Python allocating a buffer that large before finding the file short."""

    def __init__(self, f, size: int):
        self._f, self._left = f, size

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        b = self._f.read(self._left if n is None or n < 0 else min(n, self._left))
        self._left -= len(b)
        return b

    def readinto(self, buf) -> int:
        view = memoryview(buf)[:self._left]
        n = self._f.readinto(view)
        self._left -= n
        return n

    def readline(self, limit: int | None = -1) -> bytes:
        b = self._f.readline(self._left if limit is None or limit < 0 else min(limit, self._left))
        self._left -= len(b)
        return b
