"""`ray`: tasks on a Ray cluster (`pip install "yoco-cli[ray]"`; see docs/ray.md).

Inputs travel through Ray's object store (each `Shared` input is put there once per sweep),
outputs come back as bytes with their digests; the driver verifies and commits them, so the
workers need no access to the driver's store or filesystem. Every node needs the same yoco
(and torch) installed; a worker with another yoco version refuses the task.

Resources: every task asks for `Resources.cpus` CPUs (its torch threads) and, where the
cluster has GPUs and the device allows CUDA, `Resources.gpu` of one GPU (see `gpu_fraction`).
A worker or node that dies mid-task is retried elsewhere by Ray (`max_retries`); a task's own
error is not retried. Ctrl-C cancels every outstanding task (force-killing its worker).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from .._version import __version__
from ..errors import UsageError
from .base import Done, Executor, Failed, Task, execute, unpack

RETRIES = 3
_remote = None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray, which is not installed",
                         'pip install "yoco-cli[ray]" (on every node of the cluster)') from None
    return ray


def _run_on_worker(version: str, task_id: str, payload: bytes, threads: int, names: list[str], *values) -> Any:
    """The Ray task: unpack the job with its shared inputs (resolved by Ray), run it, return a Done/Failed."""
    import ray

    from .base import setup_worker

    ctx = ray.get_runtime_context()
    where = f"node {ctx.get_node_id()[:8]} ({ray.util.get_node_ip_address()}) pid {os.getpid()}"
    if version != __version__:
        return Failed(task_id, "UsageError", f"this Ray worker runs yoco {__version__}, the driver {version}",
                      "install the same yoco on every node", 2, where=where)
    setup_worker(threads)
    fn, args = unpack(payload, dict(zip(names, values)))
    return execute(task_id, fn, args, where)


def _messages_to_stderr(ray) -> None:
    """Ray's driver prints cluster news ('the node ... died') to stdout from a thread of its own;
    yoco's stdout carries data only (`--json`), so send those lines to stderr like every message."""
    try:
        import ray._private.worker as ray_worker
    except ImportError:
        return
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "_yoco", False):
        return

    def to_stderr(data, *args, **kwargs):
        return original({**data, "is_err": True}, *args, **kwargs)

    to_stderr._yoco = True  # type: ignore[attr-defined]  # marks this process's ray as patched already
    ray_worker.print_to_stdstream = to_stderr


LOOPBACK = "127.0.0.1"
AUTH_ENV = "RAY_AUTH_MODE"
CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_warned: set[str] = set()


class RayExposureWarning(UserWarning):
    """yoco joined a Ray cluster that anyone on the network may be able to run code on."""


@contextlib.contextmanager
def _loopback_only(private: bool) -> Iterator[None]:
    """While `ray.init()` starts yoco's private one-machine cluster: every process of it on 127.0.0.1.

    Ray binds its processes to the machine's outward address (it even turns 127.0.0.1 into that
    address), where anyone who can reach the ports can run code on the cluster. Its "no cluster"
    mode (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, the default on macOS and Windows) keeps a local
    instance on the loopback address: set it for the processes `ray.init()` starts, and in this
    process while it starts them (Ray read the variable when it was imported). Token
    authentication, which `ray.init()` turns on for a new local cluster, stays as Ray sets it."""
    if not private:
        yield
        return
    import ray._private.ray_constants as constants

    old_env, old = os.environ.get(CLUSTER_ENV), constants.ENABLE_RAY_CLUSTER
    os.environ[CLUSTER_ENV], constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = old
        if old_env is None:
            os.environ.pop(CLUSTER_ENV, None)
        else:
            os.environ[CLUSTER_ENV] = old_env


def _warn_if_exposed(address: str | None) -> None:
    """Joining a cluster on another machine without token authentication: warn once per address."""
    if address is None or address in _warned:
        return
    host = _host(address)
    if host is None or _is_loopback(host) or os.environ.get(AUTH_ENV, "").lower() == "token":
        return
    _warned.add(address)
    import warnings

    warnings.warn(f"the Ray cluster at {address} is reached over the network without token authentication: "
                  f"anyone who can reach its ports can run code on it; start it with {AUTH_ENV}=token and set "
                  "the same here (docs/ray.md)", RayExposureWarning, stacklevel=4)


def _host(address: str) -> str | None:
    """The host of HOST:PORT or ray://HOST:PORT; None for "auto" and "local" (this machine's cluster)."""
    if address in ("auto", "local"):
        return None
    rest = address.split("://", 1)[-1]
    if rest.startswith("["):  # [IPv6]:PORT
        return rest[1:].split("]", 1)[0]
    return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None = None, max_parallel: int | None = None, retries: int = RETRIES):
        super().__init__(max_parallel)
        ray = self.ray = _import_ray()
        self.address = address
        self.retries = retries
        _messages_to_stderr(ray)
        self._started_here = not ray.is_initialized()
        if self._started_here:
            try:
                # address None starts a private one-machine cluster; "auto" or HOST:PORT joins one
                _warn_if_exposed(address)
                with _loopback_only(address is None):  # "local": a new cluster, never one found on the machine
                    ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                             configure_logging=False, logging_level="ERROR")
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UsageError(f"could not connect to the Ray cluster at {address or 'a new local cluster'}: "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}",
                                 "start it with `ray start --head` (docs/ray.md) or check --address") from None
        self._pending: dict[Any, Task] = {}
        self._objects: dict[str, Any] = {}   # Shared name -> ObjectRef, put once per executor

    def describe(self) -> str:
        res = self.ray.cluster_resources()
        gpus = f", {res.get('GPU', 0):g} GPUs" if res.get("GPU") else ""
        return f"ray ({len(self.ray.nodes())} nodes, {res.get('CPU', 0):g} CPUs{gpus})"

    def cluster_cpus(self) -> int:
        return int(self.ray.cluster_resources().get("CPU", 1))

    def cluster_gpus(self) -> float:
        return float(self.ray.cluster_resources().get("GPU", 0))

    def gpu_request(self, share: float) -> float:
        """A task's GPU share, raised so that a GPU never holds more tasks than there are CPUs per GPU
        to drive them (a CPU-only cluster gets none: the task's device 'auto' is then the CPU)."""
        gpus = self.cluster_gpus()
        if not share or gpus <= 0:
            return 0.0
        per_gpu = max(1.0, self.cluster_cpus() / gpus)
        return min(1.0, max(share, 1.0 / per_gpu))

    def slots(self) -> int:
        # as many in flight as the cluster can run (more would only wait in Ray's queue, and
        # the progress bar could not tell queued from running), capped by --max-parallel
        n = max(1, self.cluster_cpus())
        return min(n, self.max_parallel) if self.max_parallel else n

    def submit(self, task: Task) -> None:
        global _remote
        from .base import pack

        if _remote is None:
            _remote = self.ray.remote(_run_on_worker)
        payload, shared = pack((task.fn, task.args))
        names = sorted(shared)
        for n in names:
            if n not in self._objects:
                self._objects[n] = self.ray.put(shared[n].value)
        opts: dict[str, int | float | bool] = {"num_cpus": task.resources.cpus, "max_retries": self.retries,
                                               "retry_exceptions": False}
        gpus = self.gpu_request(task.resources.gpu)
        if gpus:
            opts["num_gpus"] = gpus
        ref = _remote.options(**opts).remote(__version__, task.id, payload, task.resources.cpus, names,
                                             *[self._objects[n] for n in names])
        self._pending[ref] = task
        self.submitted += 1

    def wait(self, timeout: float | None = None) -> list[Done | Failed]:
        if not self._pending:
            return []
        ready, _ = self.ray.wait(list(self._pending), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            task = self._pending.pop(ref)
            try:
                out.append(self.ray.get(ref))
            except self.ray.exceptions.RayError as e:  # retries exhausted: the worker or node kept dying
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                out.append(Failed(task.id, type(e).__name__, f"{task.label} failed on the Ray cluster: {first}",
                                  "see `ray status` and the Ray logs", 1))
        return out

    def cancel(self) -> None:
        for ref in list(self._pending):
            with contextlib.suppress(Exception):  # already finished or its worker is gone
                self.ray.cancel(ref, force=True)
        self._pending.clear()

    def close(self) -> None:
        self._objects.clear()
        if self._started_here and self.ray.is_initialized():
            self.ray.shutdown()  # disconnects; stops the cluster only if ray.init started it
