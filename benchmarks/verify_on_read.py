"""What verifying every object on read costs: a CIFAR-100 IPC 50 sized dynamics artifact.

    python benchmarks/verify_on_read.py              # 5 alternating rounds, 1 thread
    python benchmarks/verify_on_read.py --rounds 9 --err-dtype float32

Size: N = 20 000 decoded images (CIFAR-100, IPC 50, factor 2), E = 1000 epochs, the real file format
(`data.dynamics.Dynamics`: per-(epoch, sample) error, correctness bits, margins, per-epoch sums). The
error is float16 today (41 MiB); `--err-dtype float32` fabricates the float32 layout (80 MiB) that
issue 11 moves to, to show the cost scales with the bytes.

Both sides are the same `Dynamics.load` on the same stored object, alternating, warm page cache:

    unverified   safetensors' safe_open on the object's path (what stages did before: no check)
    verified     `store.read_output`: read the whole file into one buffer, sha256 it, parse the
                 tensors in place from that buffer (what stages do now)

and, for scale, `sha256` alone of the same bytes. Each side reports the median wall and CPU time of
its rounds; the headline is the verified / unverified ratio of CPU time (valid on a shared machine).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fabricate(store, n: int, e: int, err_dtype: str):
    """A dynamics object in the store (random statistics of the right shapes and dtypes)."""
    import torch

    from yoco_cli.data.dynamics import Dynamics
    from yoco_cli.store import StageResult, run_cached

    g = torch.Generator().manual_seed(0)
    targets = torch.arange(100).repeat_interleave(n // 100)
    correct = torch.rand(e, n, generator=g) < 0.6
    dyn = Dynamics(targets, torch.rand(e, n, generator=g), correct, torch.randn(n, generator=g),
                   correct.sum(1), torch.rand(e, generator=g), {"num_classes": 100, "epochs": e})
    if err_dtype == "float32":  # issue 11's layout: save the error as float32
        dyn.err = dyn.err.float()
        real_half = torch.Tensor.half
        torch.Tensor.half = lambda t: t  # keep float32 in Dynamics.save (benchmark only)
        try:
            path = dyn.save(Path(tempfile.mkdtemp()) / "d.safetensors")
        finally:
            torch.Tensor.half = real_half
    else:
        path = dyn.save(Path(tempfile.mkdtemp()) / "d.safetensors")
    m, _ = run_cached(store, "bench-dynamics", 1, {"n": n, "e": e, "dtype": err_dtype}, {},
                      lambda tmp, key: StageResult({"stats": path}))
    return m


def timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--err-dtype", choices=["float16", "float32"], default="float16")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from yoco_cli.data.dynamics import Dynamics
    from yoco_cli.store import Store

    store = Store(Path(tempfile.mkdtemp()) / "home").ensure()
    m = fabricate(store, args.samples, args.epochs, args.err_dtype)
    path = store.object_path(m.digest("stats"))
    size = path.stat().st_size
    sides = {
        "unverified": lambda: Dynamics.load(path),
        "verified": lambda: Dynamics.load(store.read_output(m, "stats")),
        "sha256 only": lambda: hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    for fn in sides.values():  # warm the page cache and the code paths
        fn()
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
    for _ in range(args.rounds):
        for name, fn in sides.items():
            got[name].append(timed(fn))
    load = os.getloadavg()
    print(f"verify on read: Dynamics.load of a CIFAR-100 IPC 50 dynamics object ({args.samples} samples x "
          f"{args.epochs} epochs, err {args.err_dtype}, {size / 2**20:.1f} MiB), {args.rounds} alternating rounds, "
          f"{args.threads} thread(s), warm page cache, load average {load[0]:.2f}")
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in got.items()}
    for name, (w, c) in med.items():
        print(f"  {name:<12} wall {w * 1000:7.1f} ms   cpu {c * 1000:7.1f} ms")
    (wu, cu), (wv, cv) = med["unverified"], med["verified"]
    print(f"headline: verified / unverified = {cv / cu:.2f}x CPU time ({(cv - cu) * 1000:+.1f} ms), "
          f"{wv / wu:.2f}x wall ({(wv - wu) * 1000:+.1f} ms) per load; sha256 runs at "
          f"{size / 2**20 / med['sha256 only'][1]:.0f} MiB/s of CPU")


if __name__ == "__main__":
    main()
