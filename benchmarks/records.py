"""What exact errors and `--records` cost: artifact sizes at CIFAR-100 IPC 50, training time with and without records.

    python benchmarks/records.py                 # sizes + a side-by-side timing on digits-sized data
    python benchmarks/records.py --epochs 40     # shorter timing run

Sizes (written, not estimated): a dynamics artifact (`stats`, float32 error since issue 11) and a
records file at the shape of CIFAR-100 IPC 50 (N = 20 000 decoded images, C = 100, E = 1000
epochs), from synthetic values in the real formats; the records file is extrapolated from
E_rec written epochs (it is linear in E) because 4 GB do not belong on a shared disk.

Timing: the same `compute_dynamics` call (same seed, same set, same settings) with and without
`records=True`, alternating, 3 rounds each, process CPU time and wall time, 1 thread; then the
td-*.pickle export of the recorded run. Statistics are checked identical between the two.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sizes(tmp: Path, n: int = 20_000, c: int = 100, e: int = 1000, e_rec: int = 20) -> dict:
    import torch

    from yoco_cli.data.dynamics import Dynamics, Records

    g = torch.Generator().manual_seed(0)
    dyn = Dynamics(torch.arange(c).repeat_interleave(n // c), torch.rand(e, n, generator=g),
                   torch.rand(e, n, generator=g) > 0.5, torch.rand(n), torch.randint(0, n, (e,)), torch.rand(e),
                   {"num_classes": c, "epochs": e})
    stats = dyn.save(tmp / "stats.safetensors").stat().st_size
    batches = -(-n // 64)
    rows = e_rec * n
    sizes_ = torch.full((e_rec * batches,), 64, dtype=torch.int32)
    sizes_[batches - 1::batches] = n - 64 * (batches - 1)
    rec = Records(torch.arange(e_rec, dtype=torch.int32).repeat_interleave(batches),
                  torch.arange(batches, dtype=torch.int32).repeat(e_rec), sizes_,
                  torch.randint(0, n, (rows,), dtype=torch.int32), torch.randn(rows, c).half())
    part = rec.save(tmp / "records.safetensors", {}).stat().st_size
    return {"stats_MiB": stats / 2**20, "records_GiB": part * e / e_rec / 2**30,
            "records_bytes_per_sample_epoch": part / rows}


def timing(epochs: int, rounds: int = 3) -> dict:
    import torch

    from yoco_cli.data.condensed import CondensedSet
    from yoco_cli.stages import dynamics as D
    from yoco_cli.stages.datasets import load_real
    from yoco_cli.stages.sets import set_result
    from yoco_cli.store import Store, run_cached

    torch.set_num_threads(1)
    ds = load_real("digits")
    idx = torch.cat([torch.nonzero(ds.train_y == c).flatten()[:40] for c in range(10)])  # 400 images
    cset = CondensedSet(ds.train_x[idx].clone(), ds.train_y[idx].clone(), "digits", 10, factor=1,
                        value_space="raw01", meta={"method": "bench"})
    out: dict[str, list] = {"plain": [], "records": []}
    groups = {}
    for r in range(rounds):
        for mode in ("plain", "records"):
            with tempfile.TemporaryDirectory() as home:
                store = Store(home).ensure()
                m, _ = run_cached(store, "bench-set", 1, {}, {}, lambda tmp, key: set_result(tmp, cset, "bench"))
                c0, w0 = cpu(), time.perf_counter()
                group, _ = D.compute_dynamics(store, m, cset, seeds=1, device="cpu", epochs=epochs,
                                              records=mode == "records")
                out[mode].append((cpu() - c0, time.perf_counter() - w0))
                groups[mode] = [getattr(D.load_dynamics(store, group)[0][0], k).clone()
                                for k in ("err", "correct", "margin_sum", "correct_num", "loss_epoch")]
                if mode == "records" and r == 0:
                    c0, w0 = cpu(), time.perf_counter()
                    [path] = D.export_reference(store, group, Path(home) / "td.pickle").values()
                    export = (cpu() - c0, time.perf_counter() - w0, path.stat().st_size)
                    rec_size = group.outputs["seed0/records"]["size"]
    same = all(torch.equal(a, b) for a, b in zip(groups["plain"], groups["records"]))
    best = {k: min(v) for k, v in out.items()}
    return {"epochs": epochs, "images": 400, "same_statistics": same,
            "plain_cpu_s": best["plain"][0], "plain_wall_s": best["plain"][1],
            "records_cpu_s": best["records"][0], "records_wall_s": best["records"][1],
            "records_overhead_cpu": best["records"][0] / best["plain"][0] - 1,
            "records_file_MiB": rec_size / 2**20, "export_cpu_s": export[0], "export_wall_s": export[1],
            "td_pickle_MiB": export[2] / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=100)
    a = ap.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average) on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        s = sizes(Path(tmp))
    print(f"CIFAR-100 IPC 50 (20 000 images x 1000 epochs): dynamics artifact {s['stats_MiB']:.1f} MiB; "
          f"records {s['records_GiB']:.2f} GiB ({s['records_bytes_per_sample_epoch']:.1f} bytes per image-epoch)")
    t = timing(a.epochs)
    print(f"digits, 400 images x {t['epochs']} epochs, 1 thread, best of 3: plain {t['plain_cpu_s']:.2f} CPU-s "
          f"({t['plain_wall_s']:.2f} s wall), --records {t['records_cpu_s']:.2f} CPU-s ({t['records_wall_s']:.2f} s "
          f"wall): {100 * t['records_overhead_cpu']:+.1f} % CPU; statistics identical: {t['same_statistics']}")
    print(f"records file {t['records_file_MiB']:.2f} MiB; td-*.pickle export {t['export_cpu_s']:.2f} CPU-s "
          f"({t['export_wall_s']:.2f} s wall), {t['td_pickle_MiB']:.2f} MiB")


if __name__ == "__main__":
    main()
