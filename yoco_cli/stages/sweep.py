"""The driver of a sweep: independent stage runs out to an executor, results back into the store.

    jobs = [Job([Run("eval-run", 1, params, inputs, "eval x repeat 0")], eval_job, spec, cost)]
    report = sweep.run(store, jobs, executor, on_status=print)

The store has one writer, this driver. A run whose manifest exists is never sent out. Every
other job goes to the executor (longest first); when its result comes back, the driver checks
each file against the digest computed where it ran, then commits it with the ordinary write
protocol (staging, objects, manifest last). So an interrupted sweep keeps every run committed
so far, and a rerun sends only the rest.

Two drivers on one store never compute the same run at once: a job is dispatched only while
its runs' lock files are held; a job whose lock another process holds waits until the queue is
empty, then for that lock, and is reused if the other process committed it.

The first failed job stops the sweep: nothing more is dispatched, the running jobs finish and
are committed, then the error is raised (with the job's own type and hint).
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import errors
from ..errors import IntegrityError, LockTimeout, YocoError
from ..executors import Done, Executor, Failed, Resources, Setting, Task
from ..store import Manifest, StageResult, Store
from ..store.manifest import run_key
from ..store.runner import commit

if TYPE_CHECKING:  # annotations only (Python 3.10 has no typing.Self)
    from typing_extensions import Self


@dataclass
class Run:
    """One stage run: what its cache key is made of, and how it is named for people."""
    stage: str
    version: int
    params: dict
    inputs: dict[str, str]
    label: str
    ref: str | None = None

    @property
    def key(self) -> str:
        return run_key(self.stage, self.version, self.params, self.inputs)


@dataclass
class Job:
    """Work for one task: `fn(spec, progress=None) -> [Output per run]`, run where the executor says.

    `spec` is a picklable object with a `partial` attribute: the driver sets it to the run's
    checkpoint folder when the worker shares this machine's store (serial, local), else None.
    """
    runs: list[Run]
    fn: Callable
    spec: Any
    cost: float = 1.0
    resources: Resources = field(default_factory=Resources)


@dataclass
class Status:
    total: int
    cached: int = 0
    done: int = 0
    running: int = 0
    queued: int = 0
    failed: int = 0
    last: str = ""


@dataclass
class Report:
    manifests: dict[str, Manifest] = field(default_factory=dict)  # run key -> manifest
    computed: list[str] = field(default_factory=list)             # run keys computed by this sweep
    where: Counter = field(default_factory=Counter)                # worker -> runs computed there
    seconds: float = 0.0
    executor: str = ""
    sent: int = 0                                                  # tasks sent to the executor

    def summary(self) -> str:
        """One line: where the computed runs ran (the issue's 'summary of where each run ran')."""
        if not self.computed:
            return "every run came from the cache; nothing was sent out"
        places = ", ".join(f"{n} on {w}" for w, n in sorted(self.where.items()))
        return f"{len(self.computed)} run(s) on {self.executor} in {self.seconds:.1f} s: {places}"


def _lookup(store: Store, run: Run) -> Manifest | None:
    try:
        return store.load_run(run.stage, run.key)
    except IntegrityError:
        return None  # damaged manifest: recompute (the commit replaces it)


def _all_stored(store: Store, runs: list[Run]) -> list[Manifest] | None:
    """The manifests of `runs` when the store holds every one, else None."""
    found = [_lookup(store, r) for r in runs]
    stored = [m for m in found if m is not None]
    return stored if len(stored) == len(found) else None


def run(store: Store, jobs: list[Job], executor: Executor, on_status: Callable[[Status], None] | None = None,
        on_progress: Callable[[Job, Any], None] | None = None,
        on_run: Callable[[str, bool], None] | None = None) -> Report:
    """Compute every run of `jobs` that the store lacks; return all their manifests.

    `on_status(Status)` hears the counts after every change, `on_progress(job, info)` a job's own
    per-epoch news (where the executor carries it), `on_run(key, computed)` each run once it is in."""
    store.ensure()
    report = Report(executor=executor.describe())
    status = Status(total=sum(len(j.runs) for j in jobs))
    todo: list[Job] = []
    ran = on_run or (lambda key, computed: None)
    for job in jobs:
        found = _all_stored(store, job.runs)
        if found is not None:
            report.manifests.update({r.key: m for r, m in zip(job.runs, found)})
            status.cached += len(job.runs)
            for r in job.runs:
                ran(r.key, False)
        else:
            todo.append(job)
    tell = on_status or (lambda s: None)
    if todo:
        _Driver(store, executor, report, status, tell, on_progress, ran).drive(todo)
    tell(status)
    return report


class _Driver:
    def __init__(self, store: Store, executor: Executor, report: Report, status: Status,
                 tell: Callable[[Status], None], on_progress: Callable[[Job, Any], None] | None,
                 ran: Callable[[str, bool], None]) -> None:
        self.store, self.ex, self.report, self.status, self.tell = store, executor, report, status, tell
        self.ran = ran
        self.running: dict[str, tuple[Job, contextlib.ExitStack]] = {}
        self.failure: Failed | None = None
        self.local_store = executor.name in ("serial", "local")  # workers see this machine's files
        # set on every sweep: an executor reused by a pool must not call an earlier sweep's hook
        executor.on_progress = None if on_progress is None else self._progress(on_progress)

    def _progress(self, on_progress):
        def forward(task_id: str, info) -> None:
            if task_id in self.running:  # news of a task this sweep already gave up on is dropped
                on_progress(self.running[task_id][0], info)
        return forward

    def drive(self, todo: list[Job]) -> None:
        t0 = time.perf_counter()
        queue = deque(sorted(todo, key=lambda j: -j.cost))  # longest first: a short tail at the end
        deferred: deque[Job] = deque()
        self.status.queued = sum(len(j.runs) for j in queue)
        try:
            while queue or self.running or deferred:
                while queue and len(self.running) < self.ex.slots() and self.failure is None:
                    job = queue.popleft()
                    locks = self._try_lock(job)
                    if locks is None:
                        deferred.append(job)
                    else:
                        self._dispatch(job, locks)
                if not self.running:
                    if self.failure is not None:
                        break
                    if deferred:  # only jobs another process is computing are left: wait for it
                        job = deferred.popleft()
                        self._dispatch(job, self._lock(job, blocking=True))
                    continue
                for result in self.ex.wait(timeout=0.5):
                    self._finish(result)
        except BaseException:
            self.ex.cancel()  # Ctrl-C or an error here: stop every outstanding task
            raise
        finally:
            for _, locks in self.running.values():
                locks.close()
            self.running.clear()
            self.report.seconds = time.perf_counter() - t0
            self.report.sent = self.ex.submitted
        if self.failure is not None:
            raise _error(self.failure, self.status)

    # -- locks -------------------------------------------------------------------------
    def _lock(self, job: Job, blocking: bool) -> contextlib.ExitStack:
        """Every run's lock; LockTimeout when one is held elsewhere and `blocking` is False."""
        stack = contextlib.ExitStack()
        try:
            for r in job.runs:
                stack.enter_context(self.store.lock(r.stage, r.key, timeout=None if blocking else 0))
        except BaseException:
            stack.close()
            raise
        return stack

    def _try_lock(self, job: Job) -> contextlib.ExitStack | None:
        try:
            return self._lock(job, blocking=False)
        except LockTimeout:
            return None

    # -- dispatch and commit -------------------------------------------------------------
    def _dispatch(self, job: Job, locks: contextlib.ExitStack) -> None:
        found = _all_stored(self.store, job.runs)  # another process may have finished it
        if found is not None:
            locks.close()
            self.report.manifests.update({r.key: m for r, m in zip(job.runs, found)})
            self.status.queued -= len(job.runs)
            self.status.cached += len(job.runs)
            for r in job.runs:
                self.ran(r.key, False)
            return
        spec = job.spec
        if hasattr(spec, "partial"):
            partial = str(self.store.partial_dir(job.runs[0].stage, job.runs[0].key)) if (
                self.local_store and len(job.runs) == 1) else None
            spec = dataclasses.replace(spec, partial=partial)
        task = Task(job.runs[0].key, job.runs[0].label, job.fn, (spec,), job.cost, job.resources)
        self.ex.submit(task)
        self.running[task.id] = (job, locks)
        self.status.queued -= len(job.runs)
        self.status.running += len(job.runs)
        self.status.last = job.runs[0].label
        self.tell(self.status)

    def _finish(self, result: Done | Failed) -> None:
        job, locks = self.running.pop(result.task_id)
        self.status.running -= len(job.runs)
        try:
            if isinstance(result, Failed):
                self.status.failed += len(job.runs)
                self.failure = self.failure or result
                self.status.last = f"failed: {job.runs[0].label}"
            else:
                self._commit(job, result)
                self.status.done += len(job.runs)
                self.status.last = job.runs[0].label
        finally:
            locks.close()
        self.tell(self.status)

    def _commit(self, job: Job, done: Done) -> None:
        if len(done.outputs) != len(job.runs):
            raise IntegrityError(f"{job.runs[0].label}: {len(done.outputs)} results for {len(job.runs)} runs")
        for run_, out, digests in zip(job.runs, done.outputs, done.digests):
            existing = _lookup(self.store, run_)
            if existing is not None:  # e.g. a stacked job redoing a run that exists
                self.report.manifests[run_.key] = existing
                self.ran(run_.key, False)
                continue

            def compute(tmp: Path, key: str, out=out, digests=digests, run_=run_) -> StageResult:
                paths = {}
                for name, data in out.files.items():
                    from ..executors.base import sha256

                    if digests.get(name) != sha256(data):
                        raise IntegrityError(f"output {name!r} of {run_.label} does not match the digest "
                                             f"computed on {done.where}: damaged on the way",
                                             "run the command again")
                    paths[name] = tmp / name.replace("/", "-")
                    paths[name].write_bytes(data)
                prov = {"executor": self.ex.name, "worker": done.where, "seconds": round(done.seconds, 3),
                        "cpu_seconds": round(done.cpu_seconds, 3)}
                return StageResult(paths, out.meta, prov)

            m = commit(self.store, run_.stage, run_.version, run_.key, run_.params, run_.inputs, compute,
                       ref=run_.ref)
            self.report.manifests[run_.key] = m
            self.report.computed.append(run_.key)
            self.report.where[done.where] += 1
            self.ran(run_.key, True)


class Pool:
    """An executor made when a sweep first needs one and reused by the sweeps after it (workers
    start once per pipeline). "auto" decides per sweep, from its work, until it picks a process
    pool or a cluster; the reports of every sweep make the summary of where runs ran."""

    def __init__(self, setting: Setting | None = None, executor: Executor | None = None):
        """`setting`: choose the executor from it when a sweep first needs one (default: auto, or
        YOCO_EXECUTOR); `executor`: use this one for every sweep (closed with the pool)."""
        from ..executors import Setting

        self.setting = setting or Setting.parse()
        self.ex: Executor | None = executor
        self.fixed = executor is not None
        self.reports: list[Report] = []

    def get(self, store: Store, jobs: list[Job], device_type: str) -> Executor:
        from ..executors import choose

        if self.ex is not None and (self.fixed or self.ex.name != "serial"):
            return self.ex
        todo = [j for j in jobs if any(_lookup(store, r) is None for r in j.runs)]
        s = self.setting
        ex = choose(s.name, address=s.address, max_parallel=s.max_parallel, device_type=device_type,
                    tasks=len(todo), seconds=sum(j.cost for j in todo))
        if self.ex is not None:
            self.ex.close()
        self.ex = ex
        return ex

    def run(self, store: Store, jobs: list[Job], device_type: str, on_status=None, on_progress=None,
            on_run=None) -> Report:
        report = run(store, jobs, self.get(store, jobs, device_type), on_status, on_progress, on_run)
        self.reports.append(report)
        return report

    def close(self) -> None:
        if self.ex is not None:
            self.ex.close()
            self.ex = None

    def summary(self) -> dict:
        """Where the runs computed now ran, and how many tasks went out (0 when all were stored)."""
        where = sum((r.where for r in self.reports), Counter())
        return {"executor": ", ".join(sorted({r.executor for r in self.reports if r.computed})),
                "where": dict(sorted(where.items())), "sent": sum(r.sent for r in self.reports)}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _error(f: Failed, status: Status) -> YocoError | RuntimeError:
    """The first failure as the error its job raised (same class and exit code where it is ours)."""
    cls = getattr(errors, f.kind, None)
    where = f" (on {f.where})" if f.where else ""
    if isinstance(cls, type) and issubclass(cls, YocoError):
        return cls(f.message + where, f.hint)
    err = SweepError(f"{f.kind}: {f.message}{where}", f.hint or "rerun with --debug for the worker's traceback")
    err.trace = f.trace
    return err


class SweepError(YocoError):
    """A job failed with an unexpected error (a bug): exit 1, the worker's traceback kept for --debug."""

    exit_code = errors.EXIT_BUG
    trace = ""
