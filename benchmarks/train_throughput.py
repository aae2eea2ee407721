"""Training throughput: the engine's full step against a naive eager PyTorch step.

    python benchmarks/train_throughput.py                 # CPU: 32x32 and 8x8, ConvNet-3 width 128
    python benchmarks/train_throughput.py --quick         # fewer steps
    python benchmarks/train_throughput.py --device cuda   # + N=5 seeds batched (vmap) vs sequential
    python benchmarks/train_throughput.py --clock cpu     # 1 thread, process CPU time: robust on a
                                                          # machine shared with other jobs

naive   forward + backward + SGD (momentum 0.9, wd 5e-4) of ConvNet-3 on an in-memory batch of
        64, no augmentation, default process settings: what the reference achieves on a CPU
        (its DataLoader and augmentation cost ~4% on top).
engine  `yoco_cli.nn.engine.train` as `yoco dynamics` runs it: data on the device, seeded
        permutation batches of 64, DSA color_crop_flip_scale_rotate, CutMix p=0.5, the
        per-batch dynamics hook (log-softmax -> Recorder), SGD, MultiStepLR, plus the engine's
        levers (glibc malloc tuning, torch.compile on >= 32 px). Timed over whole epochs of
        640 images (10 full batches) after warm-up epochs that absorb compilation.

Each variant runs in its own subprocess (malloc settings are process-wide and cannot be
undone), alternating naive/engine rounds so background load hits both alike; the best
round of each is reported. Also: the naive step with the malloc lever alone, the engine
without compile, and an estimate of a 1000-epoch CIFAR-10 IPC10 `yoco dynamics` run
(400 decoded images, 7 batches/epoch) from a timed shortened run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


# -- children ------------------------------------------------------------------------------------

def _model(size: int, channels: int, width: int, device):
    from yoco_cli.nn.models import build_model

    import torch

    torch.manual_seed(0)
    return build_model("convnet", 10, channels, size, width=width).to(device)


def _clock(a):
    # process CPU time (with 1 thread) is what a step costs, whatever else the machine runs
    return time.process_time if a.clock == "cpu" else time.perf_counter


def child_naive(a) -> dict:
    import torch
    import torch.nn.functional as F

    if a.mallopt:
        from yoco_cli.nn.device import tune_malloc

        tune_malloc()
    dev = torch.device(a.device)
    ch = 3 if a.size >= 32 else 1
    m = _model(a.size, ch, a.width, dev)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(8, 64, ch, a.size, a.size, generator=g).to(dev)
    ys = torch.randint(0, 10, (8, 64), generator=g).to(dev)

    def step(i):
        loss = F.cross_entropy(m(xs[i % 8]), ys[i % 8])
        opt.zero_grad()
        loss.backward()
        opt.step()

    for i in range(a.warmup):
        step(i)
    rounds = []
    clock = _clock(a)
    for _ in range(a.rounds):
        _sync(dev)
        t = clock()
        for i in range(a.steps):
            step(i)
        _sync(dev)
        rounds.append(64 * a.steps / (clock() - t))
    return {"img_s": max(rounds), "rounds": rounds}


def child_engine(a) -> dict:
    import torch

    from yoco_cli.data.dynamics import Recorder
    from yoco_cli.nn import engine
    from yoco_cli.nn.models import model_spec

    dev = torch.device(a.device)
    ch = 3 if a.size >= 32 else 1
    n = a.images
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, ch, a.size, a.size, generator=g)
    y = torch.arange(10).repeat_interleave(n // 10)
    spec = model_spec("convnet", 10, ch, a.size, width=a.width)
    epochs = a.warm_epochs + a.rounds * a.epochs
    cfg = engine.TrainConfig(epochs=epochs, compile=a.compile)
    seeds = list(range(a.seeds))
    recs = [Recorder(y.to(dev), epochs, 10) for _ in seeds]
    stamps = []

    clock = _clock(a)

    def on_epoch(ev):
        _sync(dev)
        stamps.append(clock())

    t0 = clock()
    res = engine.train(spec, x, y, cfg, seeds=seeds, device=dev, normalize=((0.5,) * ch, (0.25,) * ch),
                       hooks=[r.update for r in recs], on_epoch=on_epoch, batched=a.batched)
    rounds = []
    for r in range(a.rounds):
        i0 = a.warm_epochs + r * a.epochs - 1
        dt = stamps[i0 + a.epochs] - stamps[i0]
        rounds.append(len(seeds) * n * a.epochs / dt)
    return {"img_s": max(rounds), "rounds": rounds, "compiled": res[0].compiled, "batched": res[0].batched,
            "warmup_s": stamps[a.warm_epochs - 1] - t0, "epoch_s": n * len(seeds) / max(rounds)}


def child_evalbatch(a) -> dict:
    """Eval-mode forward throughput by batch size (the engine's test passes use the fastest)."""
    import torch

    from yoco_cli.nn.device import tune_malloc

    tune_malloc()
    dev = torch.device(a.device)
    m = _model(32, 3, a.width, dev).eval()
    x = torch.randn(2048, 3, 32, 32).to(dev)
    out = {}
    with torch.no_grad():
        for bs in (32, 64, 128, 256, 512):
            best = 0.0
            for _ in range(a.rounds):
                _sync(dev)
                t = time.perf_counter()
                for s in range(0, x.shape[0], bs):
                    m(x[s:s + bs])
                _sync(dev)
                best = max(best, x.shape[0] / (time.perf_counter() - t))
            out[str(bs)] = best
    return out


def _sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# -- parent --------------------------------------------------------------------------------------

CLOCK = "wall"


def run_child(kind: str, cold_compile: bool = False, **kw) -> dict:
    import tempfile

    args = [sys.executable, os.path.abspath(__file__), "--child", kind, "--clock", CLOCK]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    env = dict(os.environ)
    if cold_compile:  # an empty inductor cache: the warm-up a first run on a fresh machine pays
        env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="yoco-bench-inductor-")
    if CLOCK == "cpu":  # CPU time is only a fair cost measure for one thread
        env.update(BENCH_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"child {kind} {kw} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(size: int, width: int, device: str, quick: bool) -> dict:
    steps = (10 if quick else 25) if size >= 32 else (50 if quick else 150)
    epochs = 2 if size >= 32 else 8
    rounds = 2 if quick else 3
    common = dict(size=size, width=width, device=device)
    auto_compile = "on" if (size >= 32 and device == "cpu") else "off"
    naive, naive_m, eng, eng_eager = [], [], [], []
    for _ in range(rounds):  # every variant once per round, so background load hits all alike
        naive.append(run_child("naive", steps=steps, rounds=1, warmup=3, mallopt=0, **common)["img_s"])
        # "on" at 32 px, "off" at 8 px: what compile=auto picks for a full-length run
        eng.append(run_child("engine", epochs=epochs, rounds=1, warm_epochs=3, images=640, compile=auto_compile,
                             seeds=1, batched="off", **common))
        naive_m.append(run_child("naive", steps=steps, rounds=1, warmup=3, mallopt=1, **common)["img_s"])
        eng_eager.append(run_child("engine", epochs=epochs, rounds=1, warm_epochs=1, images=640, compile="off",
                                   seeds=1, batched="off", **common)["img_s"])
    best = max(eng, key=lambda r: r["img_s"])
    return {"size": size, "width": width, "device": device, "naive": max(naive), "naive_mallopt": max(naive_m),
            "engine": best["img_s"], "engine_no_compile": max(eng_eager), "compiled": best["compiled"],
            "compile_warmup_s": best["warmup_s"], "ratio": best["img_s"] / max(naive),
            "naive_rounds": naive, "engine_rounds": [r["img_s"] for r in eng]}


def estimate_dynamics(device: str, quick: bool) -> dict:
    """Time a shortened CIFAR-10 IPC10 dynamics run (400 images, batch 64) and scale to 1000 epochs."""
    r = run_child("engine", cold_compile=True, size=32, width=128, device=device, epochs=3 if quick else 6,
                  rounds=1, warm_epochs=3,
                  images=400, compile="on" if device == "cpu" else "off", seeds=1, batched="off")
    return {"epoch_s": r["epoch_s"], "warmup_s": r["warmup_s"], "compiled": r["compiled"],
            "estimate_min": (r["warmup_s"] + 1000 * r["epoch_s"]) / 60}


def batched_vs_sequential(device: str, quick: bool) -> dict:
    out = {}
    for mode in ("on", "off"):
        r = run_child("engine", size=32, width=128, device=device, epochs=2 if quick else 4, rounds=2,
                      warm_epochs=2, images=640, compile="off", seeds=5, batched=mode)
        out[mode] = r["img_s"]
    return {"batched_img_s": out["on"], "sequential_img_s": out["off"], "ratio": out["on"] / out["off"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", default=None)
    for name, default in (("size", 32), ("width", 128), ("steps", 20), ("rounds", 3), ("warmup", 3),
                          ("mallopt", 0), ("epochs", 2), ("warm_epochs", 3), ("images", 640), ("seeds", 1)):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=default)
    p.add_argument("--compile", default="auto")
    p.add_argument("--batched", default="off")
    p.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                   help="wall: elapsed time (quiet machine); cpu: process CPU time with 1 thread, robust to load")
    a = p.parse_args()
    if a.child:
        import torch

        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
        fn = {"naive": child_naive, "engine": child_engine, "evalbatch": child_evalbatch}[a.child]
        print(json.dumps(fn(a)))
        return
    import torch

    global CLOCK
    CLOCK = a.clock
    threads = 1 if a.clock == "cpu" else torch.get_num_threads()
    results = {"clock": a.clock, "threads": threads, "torch": torch.__version__, "cpus": os.cpu_count(),
               "steps": [compare(32, 128, a.device, a.quick), compare(8, 128, a.device, a.quick)]}
    if a.device == "cpu" or a.device.startswith("cuda"):
        results["dynamics_cifar10_ipc10"] = estimate_dynamics(a.device, a.quick)
    results["eval_batch"] = run_child("evalbatch", device=a.device, width=128, rounds=2)
    if a.device.startswith("cuda"):
        results["seeds5"] = batched_vs_sequential(a.device, a.quick)
    if a.json:
        print(json.dumps(results, indent=2))
        return
    clock = "process CPU time" if a.clock == "cpu" else "wall clock"
    print(f"torch {results['torch']}, {results['threads']} thread(s), {results['cpus']} CPUs, device {a.device}, "
          f"{clock}")
    print(f"{'input':>8} {'naive':>9} {'naive+malloc':>13} {'engine eager':>13} {'engine':>9} {'ratio':>6}  (images/s)")
    for r in results["steps"]:
        print(f"{r['size']:>5}x{r['size']:<2} {r['naive']:>9.0f} {r['naive_mallopt']:>13.0f} "
              f"{r['engine_no_compile']:>13.0f} {r['engine']:>9.0f} {r['ratio']:>5.2f}x"
              f"  (compiled: {r['compiled']}, warm-up {r['compile_warmup_s']:.0f} s)")
    d = results.get("dynamics_cifar10_ipc10")
    if d:
        print(f"CIFAR-10 IPC10 dynamics, 1000 epochs x 400 images: {d['epoch_s']:.2f} s/epoch + "
              f"{d['warmup_s']:.0f} s warm-up (3 epochs incl. a cold compile) -> estimate {d['estimate_min']:.1f} min")
    eb = results["eval_batch"]
    print("eval forward, 32x32 width 128, images/s by batch: "
          + ", ".join(f"{k}: {v:.0f}" for k, v in eb.items()))
    s = results.get("seeds5")
    if s:
        print(f"5 seeds: batched {s['batched_img_s']:.0f} img/s vs sequential {s['sequential_img_s']:.0f} img/s "
              f"-> {s['ratio']:.2f}x")


if __name__ == "__main__":
    main()
