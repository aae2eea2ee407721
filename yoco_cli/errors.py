"""One exception family for every failure a user can cause or meet.

The CLI turns any `YocoError` into a single line on stderr and the exit code below;
anything else is a bug (exit 1, traceback only with --debug). Library code raises
these and never calls sys.exit itself.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 3
EXIT_FETCH = 4
EXIT_LOCK = 5
EXIT_INTERRUPTED = 130


class YocoError(Exception):
    """A failure with a message for people, an optional hint and an exit code."""

    exit_code = EXIT_BUG

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return join_hint(self.message, self.hint)


def join_hint(message: str, hint: str | None) -> str:
    """'message. hint', without doubling the message's own end mark ("did you mean 'prune'? see ...")."""
    text = message.rstrip()
    if not hint:
        return text.rstrip(".")
    if text.endswith(("?", "!")):
        return f"{text} {hint}"
    return f"{text.rstrip('.')}. {hint}"


class UsageError(YocoError):
    """Bad arguments or input the user can fix (exit 2)."""

    exit_code = EXIT_USAGE


class IntegrityError(YocoError):
    """A hash mismatch, a missing object or a file in the wrong format (exit 3)."""

    exit_code = EXIT_INTEGRITY


class FetchError(YocoError):
    """Network, offline mode or a remote refusing us (exit 4)."""

    exit_code = EXIT_FETCH


class LockTimeout(YocoError):
    """Another process held a stage's lock for too long (exit 5)."""

    exit_code = EXIT_LOCK


class ResourceError(UsageError):
    """The machine refused: a full disk, a name or path too long, a read-only or forbidden place,
    a missing optional dependency (exit 2: the user can fix it; the cache is left consistent)."""


_RESOURCE = {  # errno name -> (what happened, what to do)
    "ENOSPC": ("no space left on the device", "free some space, or point --home / YOCO_HOME at a disk with room"),
    "EDQUOT": ("the disk quota is exceeded", "free some space, or point --home / YOCO_HOME at a disk with room"),
    "EFBIG": ("a file grew past the size this system allows", "point --home / YOCO_HOME at another filesystem"),
    "ENAMETOOLONG": ("a file name or path is too long", "use a shorter name, path or --home"),
    "EROFS": ("the filesystem is read-only", "choose a writable --home or output path"),
    "EACCES": ("permission denied", "choose a writable --home or output path"),
    "EPERM": ("operation not permitted", "choose a writable --home or output path"),
    "EMFILE": ("too many open files", "raise the limit (ulimit -n) and run again"),
}


def resource_error(e: OSError) -> ResourceError | None:
    """The one-line error for an OSError the user's environment caused, or None (then it is a bug)."""
    import errno

    name = errno.errorcode.get(e.errno or -1, "")
    if name not in _RESOURCE:
        return None
    what, hint = _RESOURCE[name]
    where = f" ({e.filename})" if e.filename else ""
    return ResourceError(f"{what}{where}; nothing was half-written into the cache", hint)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what the interrupted work kept: the CLI prints `hint` after "interrupted"
    (a KeyboardInterrupt still, so every `except KeyboardInterrupt` cleanup runs as before)."""

    def __init__(self, hint: str):
        super().__init__(hint)
        self.hint = hint
