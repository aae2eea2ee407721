"""Where the independent runs of a stage execute: `serial`, `local` (processes) or `ray` (a cluster).

    with executors.choose("local", max_parallel=2) as ex:
        sweep.run(store, runs, ex)

`choose(name)`: name > YOCO_EXECUTOR > "auto". "auto" is `local` on a CPU with several cores
when there is enough work to pay for starting workers (about 2 s each), else `serial`; on
CUDA it is `serial`, where the engine stacks a set's seeds into one model instead. The Ray
address comes from `address` > YOCO_RAY_ADDRESS (none: Ray starts a private local cluster).
Importing this package imports neither torch nor ray.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UsageError
from .base import Done, Executor, Failed, Output, Resources, Shared, Task

NAMES = ("auto", "serial", "local", "ray")
# "auto" starts worker processes (about 2 s each, in parallel) only for sweeps estimated to need
# at least this many CPU seconds one after another (see `estimate_seconds`)
AUTO_MIN_SECONDS = 10.0
# training throughput in image-pixels per CPU second, measured on the 2-core development CPU with one
# thread: ConvNet-2 w64 on 8x8 digits ~100 steps of 64 images/s (410k), ConvNet-3 w128 on 32x32
# ~400-500 images/s (410-510k). Only used to decide whether a sweep is worth a process pool.
PIXELS_PER_CPU_SECOND = 4.0e5

__all__ = [
    "NAMES",
    "Done",
    "Executor",
    "Failed",
    "Output",
    "Resources",
    "Setting",
    "Shared",
    "Task",
    "choose",
    "resolve_name",
]


@dataclass(frozen=True)
class Setting:
    """Where a command's independent training runs go, validated once by the CLI or the API. It is
    never part of a result: the same runs give the same bytes on every executor."""
    name: str = "auto"
    address: str | None = None
    max_parallel: int | None = None

    @classmethod
    def parse(cls, name: str | None = None, address: str | None = None, max_parallel: int | None = None) -> Setting:
        value = resolve_name(name)
        check_max_parallel(max_parallel)
        if address and value not in ("ray", "auto"):
            raise UsageError(f"--address is for the ray executor, not {value}", "use --executor ray")
        return cls(value, address, max_parallel)


def resolve_name(name: str | None) -> str:
    value = (name or os.environ.get("YOCO_EXECUTOR") or "auto").strip().lower()
    if value not in NAMES:
        source = "--executor" if name else "YOCO_EXECUTOR"
        raise UsageError(f"{source} {value!r} is not an executor", f"use one of {', '.join(NAMES)}")
    return value


def check_max_parallel(n: int | None) -> int | None:
    if n is not None and n < 1:
        raise UsageError(f"--max-parallel must be at least 1, got {n}")
    return n


def choose(name: str | None = None, *, address: str | None = None, max_parallel: int | None = None,
           device_type: str = "cpu", tasks: int = 0, seconds: float = float("inf")) -> Executor:
    """An executor by name; "auto" decides from the device, the cores and the work (see module doc)."""
    value = Setting.parse(name, address, max_parallel).name
    address = address or os.environ.get("YOCO_RAY_ADDRESS") or None
    if value == "auto":
        # a cluster address (option or YOCO_RAY_ADDRESS) alone means the cluster
        value = "ray" if address else auto_name(device_type, tasks, seconds, max_parallel)
    if value == "serial":
        from .serial import SerialExecutor

        return SerialExecutor(max_parallel)
    if value == "local":
        from .local import LocalExecutor

        return LocalExecutor(max_parallel)
    from .ray_cluster import RayExecutor

    return RayExecutor(address, max_parallel)


def auto_name(device_type: str, tasks: int, seconds: float, max_parallel: int | None) -> str:
    from .local import usable_cores

    if device_type != "cpu" or tasks < 2 or max_parallel == 1 or usable_cores() < 2:
        return "serial"
    return "local" if seconds >= AUTO_MIN_SECONDS else "serial"


def estimate_seconds(steps: int, batch: int, pixels: int) -> float:
    """Rough CPU seconds of `steps` optimizer steps on batches of `batch` images of `pixels` pixels."""
    return steps * batch * pixels / PIXELS_PER_CPU_SECOND


def gpu_share(image_size: int) -> float:
    """The fraction of one GPU a training task asks for (Ray packs several onto one device).

    Small models on small images (ConvNet on 8-32 px) leave a GPU mostly idle and are bound by
    the CPU thread launching their kernels, so 8 share one device (each CUDA context costs
    ~0.5 GB, 8 of them fit any current GPU); 64-127 px runs take a quarter; ImageNet-sized
    inputs (>= 128 px, ResNetAP-10 at 224) a whole GPU. The Ray executor never packs more
    tasks on a GPU than the cluster has CPUs per GPU (see RayExecutor.gpu_request).
    """
    if image_size >= 128:
        return 1.0
    return 0.25 if image_size >= 64 else 0.125
