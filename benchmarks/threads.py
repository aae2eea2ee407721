"""Threads per workload: where a second (third, ...) intra-op thread starts to pay, quiet and busy.

    python benchmarks/threads.py                # every workload, 1 vs all cores, quiet machine
    python benchmarks/threads.py --busy 2       # the same with 2 busy-loop processes running
    python benchmarks/threads.py --quick        # fewer steps

One training step = forward + backward + SGD (momentum 0.9, wd 5e-4) of a ConvNet on an
in-memory batch, the step `yoco dynamics`, `yoco eval` and DM's matching repeat thousands of
times. Each workload is timed with 1 thread and with every core, in alternating rounds (so
background load hits both alike), with OMP_WAIT_POLICY as the CLI sets it (passive) unless
--spin is given; the best round of each is kept. Printed per workload: the work of one step
(conv multiply-adds, the figure `yoco_cli.nn.device.step_macs` computes), ms per step in wall
and CPU time for each thread count, and the wall ratio. yoco's `--threads auto` takes one
thread below the crossover this table shows (device.MULTI_THREAD_MACS) and every free core
above it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

# (label, channels, image size, width, depth, batch)
WORKLOADS = [
    ("digits dynamics 8x8x1 w64 d2", 1, 8, 64, 2, 64),
    ("digits DM 8x8x1 w64 d2 b128", 1, 8, 64, 2, 128),
    ("16x16x3 w64 d3", 3, 16, 64, 3, 64),
    ("16x16x3 w128 d3", 3, 16, 128, 3, 64),
    ("MNIST 28x28x1 w128 d3", 1, 28, 128, 3, 64),
    ("CIFAR 32x32x3 w32 d3", 3, 32, 32, 3, 64),
    ("CIFAR 32x32x3 w128 d3", 3, 32, 128, 3, 64),
]


def _step_time(channels, size, width, depth, batch, threads, steps):
    import torch

    from yoco_cli.nn.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("convnet", 10, channels, size, width=width, depth=depth)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(batch, channels, size, size)
    y = torch.randint(0, 10, (batch,))

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - w0) / steps * 1e3, (time.process_time() - c0) / steps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=int, default=0, help="busy-loop processes to run alongside")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--spin", action="store_true", help="leave OMP_WAIT_POLICY unset (torch's spinning default)")
    args = ap.parse_args()
    if not args.spin and "OMP_WAIT_POLICY" not in os.environ:
        # must be set before libgomp starts: re-exec with it (the CLI sets it the same way)
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    from yoco_cli.nn.device import step_macs

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        print(f"threads: training step (fwd+bwd+SGD), 1 thread vs {cores}; {args.busy} busy loop(s); "
              f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset (spin)')}; load {os.getloadavg()[0]:.2f}")
        print(f"{'workload':32} {'MMAC/step':>10} {'1t wall':>8} {'1t cpu':>8} {f'{cores}t wall':>8} "
              f"{f'{cores}t cpu':>8} {'wall 1t/Nt':>10}")
        for label, ch, size, width, depth, batch in WORKLOADS:
            macs = step_macs(ch, size, width, depth, batch)
            steps = max(3, int((10 if args.quick else 40) * 2e8 / max(macs, 1e6)))
            steps = min(steps, 200)
            best = {1: (1e9, 0.0), cores: (1e9, 0.0)}
            for _ in range(args.rounds):
                for t in (1, cores):
                    w, c = _step_time(ch, size, width, depth, batch, t, steps)
                    if w < best[t][0]:
                        best[t] = (w, c)
            (w1, c1), (wn, cn) = best[1], best[cores]
            print(f"{label:32} {macs / 1e6:10.1f} {w1:8.2f} {c1:8.2f} {wn:8.2f} {cn:8.2f} {w1 / wn:10.2f}",
                  flush=True)
        print(f"load after: {os.getloadavg()[0]:.2f}")
    finally:
        for p in busy:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
