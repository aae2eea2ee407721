"""`serial`: one task at a time in this process (what yoco did before executors existed).

Errors propagate as raised (with their own type and traceback), progress callbacks are
direct calls, and the thread count is whatever this process uses.
"""
from __future__ import annotations

import time
from collections import deque

from .base import Done, Executor, Failed, Task, here, sha256


class SerialExecutor(Executor):
    name = "serial"

    def __init__(self, max_parallel: int | None = None):
        super().__init__(max_parallel)
        self._queue: deque[Task] = deque()

    def slots(self) -> int:
        return 1

    def submit(self, task: Task) -> None:
        self._queue.append(task)
        self.submitted += 1

    def wait(self, timeout: float | None = None) -> list[Done | Failed]:
        if not self._queue:
            return []
        task = self._queue.popleft()
        progress = None
        if self.on_progress is not None:
            def progress(info, _id=task.id):
                self.on_progress(_id, info)
        t0, c0 = time.perf_counter(), time.process_time()
        outputs = task.fn(*task.args, progress=progress)  # exceptions propagate unchanged
        digests = [{n: sha256(b) for n, b in o.files.items()} for o in outputs]
        return [Done(task.id, outputs, digests, here(), time.perf_counter() - t0, time.process_time() - c0)]

    def cancel(self) -> None:
        self._queue.clear()
