"""What every executor shares: tasks, their results, and the code that runs one task in a worker.

A `Task` is one unit of independent work (usually one training run, on CUDA possibly several
seeds stacked into one model): a module-level function and picklable arguments. The worker
calls it, hashes every output file it returns and sends back a `Done` (files, digests, meta,
where it ran) or a `Failed` (the error as text, so it crosses process and machine boundaries).
The driver re-hashes the bytes it received before it commits anything to the store: the store
has one writer, and nothing is committed from bytes that do not match the worker's digests.

Large inputs many tasks share (a dataset's test split) are wrapped in `Shared`: executors send
each one once per worker (local pool) or put it once into Ray's object store, instead of once
per task. `pack`/`unpack` do this with pickle's persistent ids.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import YocoError


@dataclass(frozen=True)
class Resources:
    """What one task needs: CPU cores (= torch threads in the worker) and a fraction of a GPU."""
    cpus: int = 1
    gpu: float = 0.0


@dataclass
class Output:
    """One run's output files (name -> bytes) and manifest meta, as a job returns it."""
    files: dict[str, bytes]
    meta: dict = field(default_factory=dict)


@dataclass
class Task:
    id: str                                # unique in a sweep (the first run's cache key)
    label: str                             # for people: "eval digits/dm/ipc10 repeat 0"
    fn: Callable[..., list[Output]]        # module-level, so it pickles by reference
    args: tuple = ()
    cost: float = 1.0                      # relative cost: the longest tasks start first
    resources: Resources = Resources()


@dataclass
class Done:
    task_id: str
    outputs: list[Output]
    digests: list[dict[str, str]]          # sha256 of every file, computed where it ran
    where: str                             # "host pid 123" or "node 1a2b3c4d (127.0.0.1) pid 123"
    seconds: float
    cpu_seconds: float


@dataclass
class Failed:
    task_id: str
    kind: str                              # the exception's class name
    message: str
    hint: str | None = None
    exit_code: int = 1
    trace: str = ""
    where: str = ""


class Shared:
    """A large input used by many tasks, identified by `name` (e.g. its content digest)."""

    def __init__(self, name: str, value: Any):
        self.name, self.value = name, value

    def __repr__(self) -> str:
        return f"Shared({self.name[:12]})"


def pack(obj: Any) -> tuple[bytes, dict[str, Shared]]:
    """Pickle `obj` with every `Shared` inside replaced by its name; returns the bytes and the Shareds."""
    found: dict[str, Shared] = {}

    class _Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, Shared):
                found[o.name] = o
                return ("yoco-shared", o.name)
            return None

    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue(), found


def unpack(data: bytes, shared: dict[str, Any]) -> Any:
    """Inverse of `pack`: `shared` maps names to the values (already received by this worker)."""

    class _Unpickler(pickle.Unpickler):
        def persistent_load(self, pid):
            kind, name = pid
            if kind != "yoco-shared" or name not in shared:
                raise pickle.UnpicklingError(f"unknown shared input {name!r}")
            return Shared(name, shared[name])

    return _Unpickler(io.BytesIO(data)).load()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def here() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


def setup_worker(threads: int) -> None:
    """A worker process's settings (never the driver's: the library leaves its host process alone):
    one torch thread per task core (tiny models gain nothing from more, and on a busy machine
    torch's idle threads spin), and the malloc tuning the CLI applies to itself."""
    n = max(1, int(threads))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)  # before torch starts its pool, where it has not yet
    import torch

    from ..nn.device import tune_malloc

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    tune_malloc()


def execute(task_id: str, fn: Callable, args: tuple, where: str, progress: Callable | None = None) -> Done | Failed:
    """Run one task here; errors come back as `Failed` (KeyboardInterrupt is not caught)."""
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        outputs = fn(*args, progress=progress)
    except YocoError as e:
        return Failed(task_id, type(e).__name__, e.message, e.hint, e.exit_code, traceback.format_exc(), where)
    except Exception as e:  # noqa: BLE001  a bug in the job: it comes back as Failed, traceback kept for --debug
        return Failed(task_id, type(e).__name__, str(e) or type(e).__name__, None, 1, traceback.format_exc(), where)
    digests = [{name: sha256(data) for name, data in out.files.items()} for out in outputs]
    return Done(task_id, outputs, digests, where, time.perf_counter() - t0, time.process_time() - c0)


class Executor:
    """Runs tasks; the driver (`stages.sweep`) keeps the queue, the store and the commits.

    `slots()` is how many tasks may run at once; `submit` starts one; `wait` returns the
    results that finished (blocking up to `timeout` s for at least one); `cancel` stops
    everything outstanding (Ctrl-C); `close` releases workers. `progress` callbacks from
    jobs (per-epoch) reach `on_progress(task_id, info)` where the executor can carry them.
    """

    name = "executor"

    def __init__(self, max_parallel: int | None = None):
        self.max_parallel = max_parallel
        self.on_progress: Callable[[str, Any], None] | None = None
        self.submitted = 0  # tasks sent out over this executor's life (a cached sweep sends none)

    def slots(self) -> int:
        raise NotImplementedError

    def submit(self, task: Task) -> None:
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> list[Done | Failed]:
        raise NotImplementedError

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.name

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
