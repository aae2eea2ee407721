"""The embedded pipeline's training work against a naive sequential loop of the same optimizer steps.

    python benchmarks/pipeline.py                     # the runs `make demo` trains (37k steps)
    python benchmarks/pipeline.py --quick             # the same runs at 1/4 of the epochs
    python benchmarks/pipeline.py --naive-threads 1   # the naive loop on one thread (default: torch's)
    python benchmarks/pipeline.py --executor serial   # the pipeline side one run at a time
    python benchmarks/pipeline.py --demo              # also `yoco pipeline` (make demo) serial vs auto

pipeline  what `yoco pipeline` trains on digits with its defaults (3 dynamics seeds x 100 epochs on the
          400 decoded images of the IPC-10 set; 73 evaluations x 200 epochs: the source and the 72
          sets pruned to IPC 1, 2, 5, 40-200 images), through the stages as the pipeline calls
          them: one sweep for the dynamics seeds, one for every evaluation, on `--executor`
          (default auto: a local pool, one process per core, one torch thread each), with DSA,
          CutMix, the dynamics recorder and the test passes. The source set is a seeded random
          subset (condensing first would not change the runs' shapes, only add a serial step).
naive     the same runs' optimizer steps (same architecture, batch sizes and epochs) as plain forward
          + backward + SGD on in-memory batches, no augmentation, no tests, one run after another in
          one process with torch's default thread count, on the ConvNet as a user writes it from
          stock torch.nn layers (the headline). Two more naive lines run the same loop on yoco's
          own ConvNet module (its CPU pooling kernel), with torch's threads and with one thread,
          so the gain from layers and the gain from scheduling read apart; the one-thread line,
          split over the pipeline's workers, is the ceiling printed last: the most any schedule of
          single-thread workers could reach with no augmentation, tests or store at all.
          `--naive-layers stock|yoco` runs just one naive loop.
Both sides run in subprocesses with the same glibc malloc settings (the engine's tuning; glibc's
environment variables for the naive side). CPU time is the process's plus its workers'. Figures
depend on the machine's load: the first and last lines print it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_TOP_PAD_": str(64 << 20)}


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- children ---------------------------------------------------------------------------------------

def _setup(home: str, dyn_epochs: int):
    """The source set, its dynamics, scores and pruned sets, made by `yoco pipeline` itself with
    one-epoch evaluations (untimed); returns (store, request, source manifest, set, pruned manifests)."""
    from yoco_cli.executors import Setting
    from yoco_cli.stages import pipeline
    from yoco_cli.stages.sets import load_set
    from yoco_cli.stages.sweep import Pool
    from yoco_cli.store import Store

    store = Store(home).ensure()
    req = pipeline.PipelineRequest(method="random", dynamics_epochs=dyn_epochs, eval_epochs=1)
    with Pool(Setting.parse("local")) as pool:
        result = pipeline.run(store, req, pool=pool)
    set_m = store.resolve(result["set"])
    return store, req, set_m, load_set(store, set_m), [store.resolve(k) for k in result["pruned"]]


def child_pipeline(a) -> dict:
    from yoco_cli.executors import Setting
    from yoco_cli.nn.device import tune_malloc
    from yoco_cli.stages import evaluate
    from yoco_cli.stages.dynamics import compute_dynamics
    from yoco_cli.stages.sweep import Pool

    tune_malloc()
    store, req, set_m, cset, pruned = _setup(a.home, a.dyn_epochs)
    for stage in ("dynamics-run",):  # the training runs are what is timed (evaluations: new epochs, new keys)
        for p in (store.runs / stage).glob("*.json"):
            p.unlink()
    w0, c0 = time.perf_counter(), _cpu()
    with Pool(Setting.parse(a.executor)) as pool:
        _, info = compute_dynamics(store, set_m, cset, seeds=req.seeds, pool=pool, epochs=a.dyn_epochs)
        tests: dict = {}
        plans = [evaluate.plan_eval(store, evaluate.set_target(store, m), repeats=1, epochs=a.eval_epochs,
                                    tests=tests) for m in [set_m] + pruned]
        report = pool.run(store, [j for p in plans for j in p.jobs], plans[0].device_type)
        executor = pool.ex.describe()
    wall, cpu = time.perf_counter() - w0, _cpu() - c0  # the pool is closed: its workers' CPU is counted
    runs = [(int(cset.decoded()[1].shape[0]), a.dyn_epochs)] * req.seeds
    runs += [(int(p.target.x.shape[0]), a.eval_epochs) for p in plans]
    assert len(info["computed"]) == req.seeds and len(report.computed) == len(plans)
    return {"wall": wall, "cpu": cpu, "runs": runs, "executor": executor, "where": len(report.where)}


def _stock_convnet():
    """ConvNet-2, width 64, instance norm, for 8x8 digits, from stock torch.nn layers (the reference's
    architecture, written the plain way)."""
    from torch import nn

    def block(cin):
        return [nn.Conv2d(cin, 64, 3, padding=1), nn.GroupNorm(64, 64, affine=True), nn.ReLU(inplace=True),
                nn.AvgPool2d(2)]

    return nn.Sequential(*block(1), *block(64), nn.Flatten(), nn.Linear(64 * 2 * 2, 10))


def child_naive(a) -> dict:
    import torch
    import torch.nn.functional as F

    from yoco_cli.nn.models import build_model

    if a.naive_threads:
        torch.set_num_threads(a.naive_threads)
    runs = json.loads(a.runs)
    threads = torch.get_num_threads()
    steps = 0
    w0, c0 = time.perf_counter(), _cpu()
    for i, (n, epochs) in enumerate(runs):
        torch.manual_seed(i)
        x, y = torch.rand(n, 1, 8, 8), torch.arange(n) % 10
        model = build_model("convnet", 10, 1, 8, width=64, depth=2) if a.naive_layers == "yoco" else _stock_convnet()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        for _ in range(epochs):
            perm = torch.randperm(n)
            for s in range(0, n, 64):
                idx = perm[s:s + 64]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
    return {"wall": time.perf_counter() - w0, "cpu": _cpu() - c0, "steps": steps, "threads": threads}


# -- the parent ----------------------------------------------------------------------------------------

def _run_child(kind: str, a, **extra) -> dict:
    args = [sys.executable, os.path.abspath(__file__), "--child", kind, "--eval-epochs", str(a.eval_epochs),
            "--dyn-epochs", str(a.dyn_epochs), "--executor", a.executor, "--naive-threads", str(a.naive_threads)]
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    env = {**os.environ, **MALLOC_ENV} if kind == "naive" else dict(os.environ)
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"{kind} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _steps(runs) -> int:
    return sum(e * -(-n // 64) for n, e in runs)


def _demo(a) -> None:
    """`yoco pipeline` as `make demo` runs it, one training at a time vs the default executor."""
    rows = []
    for name in ("serial", "auto"):
        with tempfile.TemporaryDirectory(prefix="yoco-bench-demo-") as home:
            env = {**os.environ, "YOCO_HOME": home}
            cmd = [sys.executable, "-m", "yoco_cli", "--json", "pipeline", "--executor", name]
            r0, w0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            wall, r1 = time.perf_counter() - w0, resource.getrusage(resource.RUSAGE_CHILDREN)
            if out.returncode != 0:
                sys.exit(f"yoco pipeline --executor {name} failed:\n{out.stderr[-3000:]}")
            cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
            rows.append((name, wall, cpu, json.loads(out.stdout).get("executor")))
            print(f"  yoco pipeline --executor {name:6s} {wall:8.1f} s wall {cpu:8.1f} CPU-s  ({rows[-1][3]})",
                  flush=True)
    print(f"make demo: --executor auto takes {rows[1][1] / rows[0][1]:.2f}x the wall time of one training at a "
          f"time ({rows[1][2] / rows[0][2]:.2f}x the CPU time); {_load()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a quarter of the epochs (same runs)")
    p.add_argument("--executor", default="local", help="the pipeline side's executor (default local)")
    p.add_argument("--naive-threads", type=int, default=0, help="0: torch's default")
    p.add_argument("--naive-layers", choices=["all", "stock", "yoco"], default="all",
                   help="the naive loop's ConvNet: stock torch.nn layers, yoco's module, or all: both, plus "
                        "yoco's on one thread for the ceiling (default)")
    p.add_argument("--demo", action="store_true")
    p.add_argument("--eval-epochs", type=int, default=0)
    p.add_argument("--dyn-epochs", type=int, default=0)
    p.add_argument("--child", choices=["pipeline", "naive"])
    p.add_argument("--home")
    p.add_argument("--runs")
    a = p.parse_args()
    a.eval_epochs = a.eval_epochs or (50 if a.quick else 200)
    a.dyn_epochs = a.dyn_epochs or (25 if a.quick else 100)
    if a.child:
        print(json.dumps(child_pipeline(a) if a.child == "pipeline" else child_naive(a)))
        return
    import torch

    threads = a.naive_threads or torch.get_num_threads()
    # (layers, threads): the headline loop, the same loop on yoco's layers, and one thread of it (the ceiling)
    variants = [("stock", threads), ("yoco", threads), ("yoco", 1)]
    if a.naive_layers != "all":
        variants = [(a.naive_layers, threads)]
    print(f"pipeline: the demo's dynamics ({a.dyn_epochs} epochs) and evaluation ({a.eval_epochs} epochs) runs through "
          f"the stages on --executor {a.executor} (DSA, CutMix, recorder, tests) vs naive: the same optimizer steps, "
          f"forward+backward+SGD only, one run after another in one process, {threads} thread(s), on a ConvNet of "
          f"stock torch.nn layers (headline); same malloc settings; {_load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="yoco-bench-pipeline-") as home:
        pipe = _run_child("pipeline", a, home=home)
    steps = _steps(pipe["runs"])
    naives = {}
    for layers, n in variants:
        b = argparse.Namespace(**{**vars(a), "naive_threads": n})
        naives[(layers, n)] = r = _run_child("naive", b, runs=json.dumps(pipe["runs"]), naive_layers=layers)
        assert r["steps"] == steps, (r["steps"], steps)
    print(f"{'side':27s} {'runs':>5s} {'steps':>7s} {'wall s':>8s} {'CPU s':>8s} {'steps/s':>8s} {'steps/CPU-s':>11s}")
    rows = [("pipeline", pipe)] + [(f"naive, {k} layers, {n} thr", r) for (k, n), r in naives.items()]
    for name, r in rows:
        print(f"{name:27s} {len(pipe['runs']):5d} {steps:7d} {r['wall']:8.1f} {r['cpu']:8.1f} "
              f"{steps / r['wall']:8.1f} {steps / r['cpu']:11.1f}")
    head = naives[variants[0]]
    print(f"pipeline on {pipe['executor']} ({pipe['where']} workers used) vs naive on {head['threads']} thread(s), "
          f"{variants[0][0]} layers: {head['wall'] / pipe['wall']:.2f}x the steps per wall second, "
          f"{head['cpu'] / pipe['cpu']:.2f}x per CPU second")
    for (layers, n), r in list(naives.items())[1:]:
        print(f"  vs naive, {layers} layers, {r['threads']} thread(s): {r['wall'] / pipe['wall']:.2f}x wall, "
              f"{r['cpu'] / pipe['cpu']:.2f}x CPU")
    one = naives.get(("yoco", 1))
    if one is not None:  # no augmentation, no tests, no store, perfect split: what the workers could reach
        floor = one["cpu"] / pipe["where"]
        print(f"ceiling: the naive steps alone on yoco's layers, one thread each, split perfectly over "
              f"{pipe['where']} workers: {floor:.1f} s wall, {head['wall'] / floor:.2f}x the headline naive loop; "
              f"the pipeline reaches {floor / pipe['wall']:.0%} of it")
    print(_load())
    if a.demo:
        _demo(a)


if __name__ == "__main__":
    main()
