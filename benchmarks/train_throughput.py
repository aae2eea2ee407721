"""Training throughput: the engine's full step against a naive eager PyTorch step, like for like.

    python benchmarks/train_throughput.py                 # CPU: 32x32 and 8x8, ConvNet-3 width 128
    python benchmarks/train_throughput.py --quick         # fewer steps
    python benchmarks/train_throughput.py --threads 2     # torch threads of every child (default 1)
    python benchmarks/train_throughput.py --device cuda   # + N=5 seeds batched (vmap) vs sequential

naive   forward + backward + SGD (momentum 0.9, wd 5e-4) of ConvNet-3 on an in-memory batch of
        64, no augmentation: what the reference's training loop costs (its DataLoader and
        augmentation cost ~4% on top).
engine  `yoco_cli.nn.engine.train` as `yoco dynamics` runs it: data on the device, seeded
        permutation batches of 64, DSA color_crop_flip_scale_rotate, CutMix p=0.5, the
        per-batch dynamics hook (log-softmax -> Recorder), SGD, MultiStepLR, and torch.compile
        on >= 32 px (compile=auto). Timed over whole epochs of 640 images (10 full batches)
        after warm-up epochs that absorb compilation.

Like for like: the CLI always tunes glibc malloc (yoco_cli.nn.device.tune_malloc, ~1.4-1.6x on
32x32 CPU steps; `yoco_cli.tune_process()` for library users); the reference gets the very same settings from glibc's environment variables
(MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_TOP_PAD_=67108864), so the headline
pairs the engine with the naive step run under those variables. The untuned pair (naive with
glibc defaults, engine with YOCO_NO_MALLOPT=1) is printed too. Every child reports wall and
process CPU time of the same rounds; each variant runs in its own subprocess (malloc settings
are process-wide), rounds alternate between variants so background load hits all alike, and the
best round of each is reported. Also: the engine without compile, and the time of a 1000-epoch
CIFAR-10 IPC10 `yoco dynamics` run (400 decoded images, 7 batches/epoch) scaled in CPU time
from a shortened run (wall time of the measured part shown as measured).
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
    import torch

    from yoco_cli.nn.models import build_model

    torch.manual_seed(0)
    return build_model("convnet", 10, channels, size, width=width).to(device)


class Stamp:
    """Wall and process CPU seconds at one instant."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def since(self, other: Stamp) -> dict:
        return {"wall": self.wall - other.wall, "cpu": self.cpu - other.cpu}


def child_naive(a) -> dict:
    import torch
    import torch.nn.functional as F

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
    for _ in range(a.rounds):
        _sync(dev)
        t = Stamp()
        for i in range(a.steps):
            step(i)
        _sync(dev)
        rounds.append({"images": 64 * a.steps, **Stamp().since(t)})
    return {"rounds": rounds}


def child_engine(a) -> dict:
    import torch

    from yoco_cli.data.dynamics import Recorder
    from yoco_cli.nn import engine
    from yoco_cli.nn.device import tune_malloc
    from yoco_cli.nn.models import model_spec

    tune_malloc()  # what the CLI applies to every process (YOCO_NO_MALLOPT=1 turns it off)
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

    def on_epoch(ev):
        _sync(dev)
        stamps.append(Stamp())

    t0 = Stamp()
    res = engine.train(spec, x, y, cfg, seeds=seeds, device=dev, normalize=((0.5,) * ch, (0.25,) * ch),
                       hooks=[r.update for r in recs], on_epoch=on_epoch, batched=a.batched)
    rounds = []
    for r in range(a.rounds):
        i0 = a.warm_epochs + r * a.epochs - 1
        rounds.append({"images": len(seeds) * n * a.epochs, **stamps[i0 + a.epochs].since(stamps[i0])})
    return {"rounds": rounds, "compiled": res[0].compiled, "batched": res[0].batched,
            "warmup": stamps[a.warm_epochs - 1].since(t0)}


def child_evalbatch(a) -> dict:
    """Eval-mode forward cost by batch size, in wall and CPU seconds per image."""
    import torch

    from yoco_cli.nn.device import tune_malloc

    tune_malloc()
    dev = torch.device(a.device)
    m = _model(32, 3, a.width, dev).eval()
    x = torch.randn(a.images, 3, 32, 32).to(dev)
    out = {}
    with torch.no_grad():
        m(x[:64])
        for bs in (32, 64, 128, 256, 512):
            rounds = []
            for _ in range(a.rounds):
                _sync(dev)
                t = Stamp()
                for s in range(0, x.shape[0], bs):
                    m(x[s:s + bs])
                _sync(dev)
                rounds.append({"images": x.shape[0], **Stamp().since(t)})
            out[str(bs)] = rounds
    from yoco_cli.nn import engine, evalbatch

    engine.eval_pass(m, x, dev)  # what the engine's probe picks for this model here, now
    return {"by_batch": out, "probe": evalbatch.chosen(dev, engine.eval_key(m.spec, False, False))}


def _sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# -- parent --------------------------------------------------------------------------------------

THREADS = 1
GLIBC_TUNED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_TOP_PAD_": str(64 << 20)}


def run_child(kind: str, cold_compile: bool = False, env_extra: dict | None = None, **kw) -> dict:
    import tempfile

    args = [sys.executable, os.path.abspath(__file__), "--child", kind]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    env = {k: v for k, v in os.environ.items() if k not in GLIBC_TUNED and k != "YOCO_NO_MALLOPT"}
    env.update(OMP_NUM_THREADS=str(THREADS), BENCH_THREADS=str(THREADS), **(env_extra or {}))
    if cold_compile:  # an empty inductor cache: the warm-up a first run on a fresh machine pays
        env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="yoco-bench-inductor-")
    out = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child {kind} {kw} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def best(rounds: list[dict]) -> dict:
    """Images per wall second and per CPU second, each from its best round."""
    return {"wall": max(r["images"] / r["wall"] for r in rounds), "cpu": max(r["images"] / r["cpu"] for r in rounds)}


def compare(size: int, width: int, device: str, quick: bool) -> dict:
    steps = (10 if quick else 25) if size >= 32 else (50 if quick else 150)
    epochs = 2 if size >= 32 else 8
    common = {"size": size, "width": width, "device": device}
    compile_auto = "on" if (size >= 32 and device == "cpu") else "off"  # what compile=auto picks for a long run
    naive = dict(kind="naive", steps=steps, rounds=1, warmup=3, **common)
    engine = dict(kind="engine", epochs=epochs, rounds=1, warm_epochs=3, images=640, seeds=1, batched="off", **common)
    variants = {
        "naive": dict(naive),
        "naive_tuned": dict(naive, env_extra=GLIBC_TUNED),
        "engine": dict(engine, compile=compile_auto),
        "engine_untuned": dict(engine, compile=compile_auto, env_extra={"YOCO_NO_MALLOPT": "1"}),
    }
    if compile_auto == "on":
        variants["engine_eager"] = dict(engine, compile="off", warm_epochs=1)
    rounds: dict[str, list] = {k: [] for k in variants}
    info = {}
    for _ in range(2 if quick else 3):  # every variant once per round, so background load hits all alike
        for name, v in variants.items():
            v = dict(v)
            r = run_child(v.pop("kind"), **v)
            rounds[name] += r["rounds"]
            if name == "engine":
                info = {"compiled": r["compiled"], "warmup": r["warmup"]}
    return {"size": size, **{k: best(v) for k, v in rounds.items()}, **info}


def estimate_dynamics(device: str, quick: bool) -> dict:
    """A shortened CIFAR-10 IPC10 dynamics run (400 images, batch 64), scaled to 1000 epochs in CPU time."""
    epochs = 3 if quick else 6
    r = run_child("engine", cold_compile=True, size=32, width=128, device=device, epochs=epochs, rounds=1,
                  warm_epochs=3, images=400, compile="on" if device == "cpu" else "off", seeds=1, batched="off")
    [rnd] = r["rounds"]
    return {"epochs": epochs, "epoch_cpu": rnd["cpu"] / epochs, "epoch_wall": rnd["wall"] / epochs,
            "warmup": r["warmup"], "estimate_cpu_min": (r["warmup"]["cpu"] + 1000 * rnd["cpu"] / epochs) / 60}


def batched_vs_sequential(device: str, quick: bool) -> dict:
    out = {}
    for mode in ("on", "off"):
        r = run_child("engine", size=32, width=128, device=device, epochs=2 if quick else 4, rounds=2,
                      warm_epochs=2, images=640, compile="off", seeds=5, batched=mode)
        out[mode] = best(r["rounds"])
    return {"batched": out["on"], "sequential": out["off"]}


def _line(label: str, r: dict, base: dict | None = None) -> str:
    ratio = f"  {r['cpu'] / base['cpu']:.2f}x CPU, {r['wall'] / base['wall']:.2f}x wall" if base else ""
    return f"  {label:<40} {r['cpu']:8.0f} img/CPU-s {r['wall']:8.0f} img/wall-s{ratio}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every child")
    p.add_argument("--child", default=None)
    for name, default in (("size", 32), ("width", 128), ("steps", 20), ("rounds", 3), ("warmup", 3),
                          ("epochs", 2), ("warm_epochs", 3), ("images", 640), ("seeds", 1)):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=default)
    p.add_argument("--compile", default="auto")
    p.add_argument("--batched", default="off")
    a = p.parse_args()
    if a.child:
        import torch

        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
        fn = {"naive": child_naive, "engine": child_engine, "evalbatch": child_evalbatch}[a.child]
        print(json.dumps(fn(a)))
        return
    import torch

    global THREADS
    THREADS = a.threads
    if not a.json:
        print(f"naive = eager fwd+bwd+SGD of ConvNet-3 w128 (yoco's ConvNet module, as the engine) on in-memory batches of 64; engine = yoco's training "
              f"loop with DSA + CutMix + dynamics hook (+ torch.compile at 32 px); headline = engine vs naive with "
              f"the same glibc malloc settings; {a.threads} torch thread(s), wall and CPU time, device {a.device}",
              flush=True)
    results = {"threads": a.threads, "torch": torch.__version__, "cpus": os.cpu_count(),
               "load_start": os.getloadavg()[0],
               "steps": [compare(32, 128, a.device, a.quick), compare(8, 128, a.device, a.quick)]}
    if a.device == "cpu" or a.device.startswith("cuda"):
        results["dynamics_cifar10_ipc10"] = estimate_dynamics(a.device, a.quick)
    eb = run_child("evalbatch", device=a.device, width=128, rounds=2, images=1024 if a.quick else 2048)
    results["eval_batch"] = {k: best(v) for k, v in eb["by_batch"].items()}
    results["eval_batch_probe"] = eb["probe"]
    if a.device.startswith("cuda"):
        results["seeds5"] = batched_vs_sequential(a.device, a.quick)
    results["load_end"] = os.getloadavg()[0]
    if a.json:
        print(json.dumps(results, indent=2))
        return
    print(f"torch {results['torch']}, {results['cpus']} CPUs, load average {results['load_start']:.2f} at start, "
          f"{results['load_end']:.2f} at the end")
    for r in results["steps"]:
        print(f"{r['size']}x{r['size']} (compiled: {r['compiled']}, warm-up {r['warmup']['cpu']:.0f} CPU-s / "
              f"{r['warmup']['wall']:.0f} wall-s):")
        print(_line("naive, glibc malloc defaults", r["naive"]))
        print(_line("naive, glibc tuned by environment", r["naive_tuned"]))
        print(_line("engine, malloc tuning off", r["engine_untuned"], r["naive"]))
        if "engine_eager" in r:
            print(_line("engine, no compile", r["engine_eager"], r["naive_tuned"]))
        print(_line("engine", r["engine"], r["naive_tuned"]))
        print(f"  HEADLINE {r['size']}x{r['size']}: engine / naive step, same malloc settings: "
              f"{r['engine']['cpu'] / r['naive_tuned']['cpu']:.2f}x the images per CPU-s, "
              f"{r['engine']['wall'] / r['naive_tuned']['wall']:.2f}x per wall-s "
              f"(both untuned: {r['engine_untuned']['cpu'] / r['naive']['cpu']:.2f}x per CPU-s)")
    d = results.get("dynamics_cifar10_ipc10")
    if d:
        print(f"CIFAR-10 IPC10 dynamics, 1000 epochs x 400 images: {d['epoch_cpu']:.2f} CPU-s/epoch "
              f"({d['epoch_wall']:.2f} wall-s measured over {d['epochs']} epochs) + warm-up {d['warmup']['cpu']:.0f} CPU-s "
              f"incl. a cold compile -> {d['estimate_cpu_min']:.1f} CPU-min (scaled in CPU time)")
    print("eval forward, 32x32 width 128, images per CPU-s / per wall-s by batch: "
          + ", ".join(f"{k}: {v['cpu']:.0f}/{v['wall']:.0f}" for k, v in results["eval_batch"].items())
          + f"; the engine's probe picked {results['eval_batch_probe']}")
    s = results.get("seeds5")
    if s:
        print(f"5 seeds: batched {s['batched']['wall']:.0f} img/wall-s vs sequential {s['sequential']['wall']:.0f} "
              f"-> {s['batched']['wall'] / s['sequential']['wall']:.2f}x wall, "
              f"{s['batched']['cpu'] / s['sequential']['cpu']:.2f}x CPU")


if __name__ == "__main__":
    main()
