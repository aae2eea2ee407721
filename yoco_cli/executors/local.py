"""`local`: a pool of worker processes on this machine, one torch thread each.

Why processes and not stacked models: on the 2-core development CPU, stacking 8-24 ConvNet-2
copies into one grouped-convolution step saved only 1.2-1.3x CPU per run (and changed the
bits), while a second process doubles the work done. One thread per worker keeps results
byte-identical to a run alone on one thread, and avoids torch's idle threads spinning on a
busy machine.

Workers are started with `spawn` (never `fork`: the driver may already hold torch's thread
pools) and talk to the driver over a pipe each, so the driver knows which worker runs which
task: a worker that dies mid-task is replaced and its task retried (up to `retries` times),
and Ctrl-C kills every worker (they ignore SIGINT themselves) while the driver keeps what it
already committed. Shared inputs go to each worker once.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as mp_wait

from .base import (
    Done,
    Executor,
    Failed,
    Task,
    execute,
    here,
    pack,
    setup_worker,
    unpack,
)

RETRIES = 2


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _worker_main(conn: Connection, threads: int) -> None:
    """A worker's loop; it ends quietly when its driver is gone (the pipe breaks: a SIGKILLed driver
    must not make every worker print a BrokenPipeError traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    try:
        _serve(conn, threads)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        return


def _serve(conn: Connection, threads: int) -> None:
    """Receive shared inputs and tasks, send back progress and results."""
    setup_worker(threads)
    shared: dict = {}
    where = here()
    while True:
        try:
            msg = pickle.loads(conn.recv_bytes())
        except EOFError:
            return
        if msg[0] == "stop":
            return
        if msg[0] == "shared":
            shared[msg[1]] = pickle.loads(msg[2])
            continue
        _, task_id, payload = msg
        fn, args = unpack(payload, shared)

        def progress(info, _id=task_id):
            conn.send_bytes(pickle.dumps(("progress", _id, info), protocol=pickle.HIGHEST_PROTOCOL))

        result = execute(task_id, fn, args, where, progress)
        conn.send_bytes(pickle.dumps(("result", result), protocol=pickle.HIGHEST_PROTOCOL))


@dataclass
class _Worker:
    proc: mp.process.BaseProcess
    conn: Connection
    task: Task | None = None
    has: set = field(default_factory=set)  # names of the Shared inputs it holds


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, max_parallel: int | None = None, threads: int = 1, retries: int = RETRIES):
        super().__init__(max_parallel)
        self.threads = max(1, threads)
        self.size = max(1, min(max_parallel or usable_cores() // self.threads, 64))
        self.retries = retries
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self._attempts: dict[str, int] = {}
        self._done: deque = deque()

    def describe(self) -> str:
        return f"local ({self.size} worker process{'es' if self.size > 1 else ''}, {self.threads} thread each)"

    def slots(self) -> int:
        return self.size

    def _start(self) -> _Worker:
        ours, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(theirs, self.threads), daemon=True,
                                 name="yoco-worker")
        proc.start()
        theirs.close()
        w = _Worker(proc, ours)
        self._workers.append(w)
        return w

    def submit(self, task: Task) -> None:
        idle = next((w for w in self._workers if w.task is None), None)
        if idle is None:
            if len(self._workers) >= self.size:
                raise RuntimeError("submit() with no free slot")
            idle = self._start()
        self._send(idle, task)
        self.submitted += 1

    def _send(self, w: _Worker, task: Task) -> None:
        payload, shared = pack((task.fn, task.args))
        for name, s in shared.items():
            if name not in w.has:
                w.conn.send_bytes(pickle.dumps(("shared", name, pickle.dumps(s.value, protocol=5)), protocol=5))
                w.has.add(name)
        w.conn.send_bytes(pickle.dumps(("task", task.id, payload), protocol=pickle.HIGHEST_PROTOCOL))
        w.task = task

    def wait(self, timeout: float | None = None) -> list[Done | Failed]:
        busy = [w for w in self._workers if w.task is not None]
        if not busy:
            return []
        ready = mp_wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout)
        out: list[Done | Failed] = []
        for w in busy:
            if w.conn in ready:
                out += self._read(w)
            elif w.proc.sentinel in ready:
                out += self._lost(w)
        return out

    def _read(self, w: _Worker) -> list[Done | Failed]:
        out = []
        try:
            while w.conn.poll():
                msg = pickle.loads(w.conn.recv_bytes())
                if msg[0] == "progress":
                    if self.on_progress is not None:
                        self.on_progress(msg[1], msg[2])
                else:
                    out.append(msg[1])
                    w.task = None
                    break
        except (EOFError, OSError):
            return self._lost(w)
        return out

    def _lost(self, w: _Worker) -> list[Done | Failed]:
        """The worker died (killed, out of memory): retry its task on a fresh worker, or give up."""
        task = w.task
        self._workers.remove(w)
        w.conn.close()
        w.proc.join(timeout=1)
        if task is None:
            return []
        n = self._attempts[task.id] = self._attempts.get(task.id, 0) + 1
        code = w.proc.exitcode
        if n > self.retries:
            return [Failed(task.id, "WorkerDied", f"the worker running {task.label} died (exit code {code}) "
                                                  f"{n} times", "see the system log (out of memory?)", 1,
                           where=here())]
        self._send(self._start(), task)
        return []

    def cancel(self) -> None:
        for w in self._workers:
            if w.proc.is_alive():
                w.proc.kill()
        for w in self._workers:
            w.proc.join(timeout=5)
            w.conn.close()
        self._workers.clear()

    def close(self) -> None:
        for w in self._workers:
            try:
                w.conn.send_bytes(pickle.dumps(("stop",)))
            except (OSError, BrokenPipeError):
                pass
        for w in self._workers:
            w.proc.join(timeout=5)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)
            w.conn.close()
        self._workers.clear()
