"""A sweep on the local executor and on a two-node Ray cluster on this machine: same grid, same bytes.

    python benchmarks/sweep.py                  # 12 evaluation runs of digits (IPC 10, 30 epochs)
    python benchmarks/sweep.py --runs 24 --epochs 60

local  `--executor local`: a pool of one worker process per core, one torch thread each.
ray    `--executor ray` on a Ray cluster of two nodes on 127.0.0.1 (a head and a worker node, each
       with one CPU, started like the tests' cluster: tests/raycluster.py), so both sides have the
       same two cores. Inputs go through Ray's object store, results come back as bytes and are
       committed by the driver.
Both sides compute the same grid into fresh stores and must produce the same artifact digests.
Each executor is warmed first (workers started, torch imported) with a one-run grid; the overhead
per task is the extra wall time per run of the Ray sweep over the local one (two slots on each side).
The figures depend on the machine's load: the first and last lines print it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))  # the loopback cluster helper


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _grid(home: str, runs: int, epochs: int, executor) -> tuple[float, dict]:
    from yoco_cli.stages import condense, evaluate
    from yoco_cli.stages.sets import load_set
    from yoco_cli.stages.sweep import run as run_sweep
    from yoco_cli.store import Store

    store = Store(home).ensure()
    res = condense.run(store, condense.Request(dataset="digits", method="random", ipc=10))
    m = res.manifest
    plan = evaluate.plan_eval(store, evaluate._set_target(store, m, load_set(store, m)), repeats=runs,
                              epochs=epochs, device="cpu")
    t0 = time.perf_counter()
    report = run_sweep(store, plan.jobs, executor)
    wall = time.perf_counter() - t0
    return wall, {k: {n: o["digest"] for n, o in mm.outputs.items()} for k, mm in report.manifests.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=12)
    p.add_argument("--epochs", type=int, default=30)
    a = p.parse_args()
    from raycluster import Cluster

    from yoco_cli.executors.local import LocalExecutor

    print(f"sweep: {a.runs} evaluation runs of a digits IPC-10 set ({a.epochs} epochs, ConvNet-2 w64) on the local "
          f"executor (2 worker processes x 1 thread) and on a 2-node Ray cluster on 127.0.0.1 (1 CPU per node); "
          f"{_load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="yoco-bench-sweep-") as tmp:
        with LocalExecutor(max_parallel=2) as ex:
            warm_local = _grid(os.path.join(tmp, "warm"), 2, 1, ex)[0]  # workers started before timing
            local_wall, local_digests = _grid(os.path.join(tmp, "local"), a.runs, a.epochs, ex)
        with Cluster(cpus_per_node=1) as cluster:
            os.environ.update(cluster.env)
            from yoco_cli.executors.ray_cluster import RayExecutor

            with RayExecutor(cluster.address) as ex:
                warm_ray = _grid(os.path.join(tmp, "ray-warm"), 2, 1, ex)[0]
                ray_wall, ray_digests = _grid(os.path.join(tmp, "ray"), a.runs, a.epochs, ex)
                nodes = len(ex.ray.nodes())
    same = "identical" if ray_digests == local_digests else "DIFFERENT"
    print(f"{'executor':8s} {'warm-up s':>9s} {'grid wall s':>12s} {'per run s':>10s}")
    print(f"{'local':8s} {warm_local:9.1f} {local_wall:12.1f} {local_wall / a.runs:10.2f}")
    print(f"{'ray':8s} {warm_ray:9.1f} {ray_wall:12.1f} {ray_wall / a.runs:10.2f}")
    extra = 2 * (ray_wall - local_wall) / a.runs  # two slots on each side: per-task latency added
    print(f"ray ({nodes} nodes) takes {ray_wall / local_wall:.2f}x the local executor's wall time for the same grid "
          f"(overhead {1000 * extra:.0f} ms per task); artifacts {same}; {_load()}")


if __name__ == "__main__":
    main()
