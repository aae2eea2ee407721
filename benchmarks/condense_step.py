"""Time one IDC outer iteration (docs/method.md §6.1, CIFAR-10 settings) on CIFAR-10-shaped synthetic tensors.

    python benchmarks/condense_step.py                 # CPU, and CUDA when present
    python benchmarks/condense_step.py --device cpu --inner 3

Setting: ConvNet-3 width 128 instance norm, 10 classes, IPC 10, factor 2 (40 decoded
32x32 images per class), real batch 64, matching aug color_crop_cutout, net update of
n_data = 2000 real images per inner step with DSA color_crop + CutMix, inner_loop 100.
The real data are random tensors (5000 images): timing does not depend on content.

An outer iteration is 100 inner steps. On a CPU a full one takes many minutes, so by
default the CPU measures `--inner` inner steps (after one warm-up step) and scales their CPU
time (never their wall time: on a shared machine that would multiply the contention too) to
100; CUDA runs the whole outer iteration and reports wall time (a GPU's cost). Both print the
per-part split and the estimate for IDC's 2000 outer iterations, with the measured wall time
beside the CPU time.
"""
from __future__ import annotations

import argparse
import os
import time


def fake_cifar(n_per_class: int = 500):
    import torch

    from yoco_cli.data.real import STATS, RealDataset

    g = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat_interleave(n_per_class)
    x = torch.rand(len(y), 3, 32, 32, generator=g)
    mean, std = STATS["cifar10"]
    return RealDataset("cifar10", x, y, x[:10], y[:10], [str(i) for i in range(10)], mean, std)


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_outer(device, inner: int, warmup: int = 1) -> dict:
    """Run the IDC inner steps the way idc.run does, timing matching and net updates apart."""
    import torch

    from yoco_cli.condensation import common, idc
    from yoco_cli.data.decode import decode_zoom
    from yoco_cli.nn.augment import DSA

    real = fake_cifar()
    s = idc.preset("cifar10")
    ipc, f = 10, 2
    job = common.Job(real, ipc, f, 0, s, device)
    images, _ = common.mix_init(real, ipc, f)
    P, buf = images.to(device), torch.zeros_like(images, device=device)
    x_all, y_all = real.train_x.to(device), real.train_y.to(device)
    pools = common.class_indices(real.train_y, 10)
    everything = torch.arange(len(y_all))
    aug = DSA(s["match_aug"], siamese=True)
    gen = common.generator(1)
    lr = idc.image_lr(s, ipc, 32)
    clock = time.perf_counter if device.type == "cuda" else time.process_time  # what is scaled
    t0, w0 = clock(), time.perf_counter()
    model = idc.build_net(job, 0)
    opt = idc.net_optimizer(model, s)
    sync(device)
    t_build = clock() - t0
    t_match = t_net = wall = 0.0
    for step in range(warmup + inner):
        sync(device)
        a, w = clock(), time.perf_counter()
        for c in range(10):
            idc._class_step(model, P, buf, c, ipc, f, x_all, pools[c], s, real.normalize, aug, lr, gen, decode_zoom)
        sync(device)
        b = clock()
        idc.train_net(model, opt, x_all, y_all, idc.random_batches(everything, s["n_data"], s["net_batch"], gen),
                      s, real.normalize, gen)
        sync(device)
        c_ = clock()
        if step >= warmup:
            t_match += b - a
            t_net += c_ - b
            wall += time.perf_counter() - w
    per_inner = (t_match + t_net) / inner
    outer = t_build + s["inner_loop"] * per_inner
    return {"device": str(device), "inner_measured": inner, "match_s_per_inner": t_match / inner,
            "net_s_per_inner": t_net / inner, "wall_s_per_inner": wall / inner, "outer_s": outer,
            "idc_2000_outer_h": outer * 2000 / 3600, "total_wall_s": time.perf_counter() - w0}


def main() -> None:
    import torch

    from yoco_cli.nn.device import describe, tune_malloc

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="all", help="cpu | cuda | all (cpu, plus cuda when present)")
    ap.add_argument("--inner", type=int, default=0, help="inner steps to time (default: 3 on CPU, 100 on CUDA)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_malloc()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    print(f"one IDC outer iteration timed part by part (matching, net update) on synthetic CIFAR-10 tensors; CPU: "
          f"process CPU time of --inner inner steps scaled to 100 (wall shown as measured), {torch.get_num_threads()} "
          f"thread(s), load average {os.getloadavg()[0]:.2f}; CUDA: wall time of the whole iteration", flush=True)
    for name in devices:
        if name.startswith("cuda") and not torch.cuda.is_available():
            print("cuda: not available, skipped")
            continue
        device = torch.device(name)
        inner = args.inner or (3 if device.type == "cpu" else 100)
        r = time_outer(device, inner)
        unit = "wall-s" if device.type == "cuda" else "CPU-s"
        print(f"{describe(device)}: one IDC outer iteration (CIFAR-10 shape, IPC 10, f 2, 100 inner steps) "
              f"= {r['outer_s']:.1f} {unit}  [matching {r['match_s_per_inner']:.3f} + net update "
              f"{r['net_s_per_inner']:.3f} {unit} per inner step ({r['wall_s_per_inner']:.3f} wall-s measured), "
              f"{inner} inner steps measured]; 2000 outer iterations = {r['idc_2000_outer_h']:.1f} h "
              f"({unit[:-2]} time)", flush=True)


if __name__ == "__main__":
    main()
