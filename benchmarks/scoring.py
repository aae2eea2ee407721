"""Importing and scoring a reference td pickle: yoco against a faithful replay of the reference's loop.

    python benchmarks/scoring.py                         # CIFAR-100 IPC 10 and IPC 50 sizes, all 1000 epochs
    python benchmarks/scoring.py --sizes ipc10           # one size
    python benchmarks/scoring.py --measure-epochs 200    # write and replay 200 epochs; CPU time scaled x5
    python benchmarks/scoring.py --model                 # also the model-based scores (entropy, loss, ssp)

Input: a td-ipc{F}.pickle in the reference's layout (docs/method.md §2.3), written here: per batch of 64 the
epoch, iteration, decoded indices and fp16 log-softmax outputs, pickled with plain `pickle.dump`
(torch's own storage serialisation, as the reference's get_training_dynamics.py does).
CIFAR-100 IPC 10: N = 4000 decoded images, 63,000 records, ~0.85 GB; IPC 50: N = 20,000,
313,000 records, ~4.2 GB.

The two sides, each in a fresh subprocess, both with 1 torch thread and the same (glibc default)
allocator settings, on the same file in the same run:

  reference-style  our own transcription of what generate_importance_score.py does with a td pickle:
                   plain `pickle.load` (every storage through torch's unrestricted `torch.load`), then
                   one pass over the records with small torch ops per record (exp, argmax, correctness,
                   forgetting, margin, per-epoch correct count and loss), then the LBPE passes: one
                   over the records of epochs [0, 10) for EL2N and one per top-K epoch (K = 10 of the
                   first 200), each walking the record list from its start as the reference does.
  yoco             what `yoco dynamics --from-file` + `yoco score` do: hash the file (the cache key),
                   `read_reference_pickle` (restricted bulk parse of the storages, one Recorder update
                   per epoch), save the dynamics artifact, load it, and compute the dynamics-based
                   scores (LBPE top-10 of 200, EL2N, forgetting, AUM, random).

The headline is the ratio of CPU seconds (yoco / reference-style), the acceptance bound is 0.5.
Wall seconds are printed beside CPU seconds; peak RSS is each child's own. With --measure-epochs
fewer epochs are written and replayed and both sides' CPU time is scaled by the same factor
(the work is linear in the record count); wall time is never scaled.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {"ipc10": 4000, "ipc50": 20000}  # CIFAR-100, factor 2: 100 classes x IPC x 4 decoded images
CLASSES, BATCH, STOP_EPOCH, TOP_K = 100, 64, 200, 10


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Clock:
    """CPU and wall seconds of a section (CPU: this process, all threads)."""

    def __init__(self):
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def lap(self) -> dict:
        now_cpu, now_wall = time.process_time(), time.perf_counter()
        out = {"cpu": now_cpu - self.cpu, "wall": now_wall - self.wall}
        self.cpu, self.wall = now_cpu, now_wall
        return out


def class_sorted_targets(n: int):
    import torch

    return torch.arange(CLASSES).repeat_interleave(n // CLASSES)


# -- the file -------------------------------------------------------------------------------------------
def child_write(a) -> dict:
    """Records of a run whose accuracy rises over training, pickled as the reference pickles them."""
    import pickle

    import torch

    g = torch.Generator().manual_seed(0)
    n, clock = a.samples, Clock()
    targets = class_sorted_targets(n)
    records = []
    for epoch in range(a.epochs):
        perm = torch.randperm(n, generator=g)
        confidence = 6.0 * epoch / max(1, a.epochs - 1)
        for it, s in enumerate(range(0, n, BATCH)):
            idx = perm[s:s + BATCH].clone()
            logits = torch.randn(len(idx), CLASSES, generator=g) * 2
            logits[torch.arange(len(idx)), targets[idx]] += confidence
            records.append({"epoch": epoch, "iteration": it, "idx": idx, "output": logits.log_softmax(1).half()})
    with open(a.path, "wb") as f:
        pickle.dump({"data-name": "cifar100", "training_dynamics": records}, f)
    return {"records": len(records), "mb": os.path.getsize(a.path) / 2**20, **clock.lap()}


# -- reference-style -----------------------------------------------------------------------------------
def child_reference(a) -> dict:
    """Our transcription of the reference's scoring of a td pickle (see the module doc)."""
    import pickle

    import torch
    import torch.nn.functional as F

    n = a.samples
    targets = class_sorted_targets(n)
    clock = Clock()
    with open(a.path, "rb") as f:
        records = pickle.load(f)["training_dynamics"]
    t_load = clock.lap()

    epochs = records[-1]["epoch"] + 1
    forgetting = torch.zeros(n, dtype=torch.int32)
    last = torch.zeros(n, dtype=torch.int32)
    correctness = torch.zeros(n, dtype=torch.int32)
    margin_sum = torch.zeros(n)
    correct_num = torch.zeros(epochs, dtype=torch.int32)
    loss_epoch = torch.zeros(epochs)
    for r in records:
        logp = r["output"].float()
        prob = logp.exp()
        pred = prob.argmax(1)
        idx = r["idx"].long()
        y = targets[idx]
        ok = (pred == y).int()
        forgetting[idx] += torch.logical_and(last[idx] == 1, ok == 0)
        last[idx] = ok
        correctness[idx] += last[idx]
        rows = torch.arange(len(idx))
        p_y = prob[rows, y]
        prob[rows, y] = 0
        margin_sum[idx] += p_y - prob.max(1).values
        correct_num[r["epoch"]] += ok.sum()
        loss_epoch[r["epoch"]] += F.cross_entropy(logp, y)
    t_pass = clock.lap()

    def window(start: int, stop: int):
        """Sum of ||p - e_y|| over epochs [start, stop), walking the records from the first one."""
        total = torch.zeros(n)
        for r in records:
            if r["epoch"] == stop:
                break
            if start <= r["epoch"] < stop:
                prob = r["output"].float().exp()
                idx = r["idx"].long()
                onehot = F.one_hot(targets[idx], CLASSES)
                total[idx] += (onehot - prob).pow(2).sum(1).sqrt()
        return total

    el2n = window(0, 10)
    top = correct_num[:STOP_EPOCH].topk(min(TOP_K, epochs)).indices.tolist()
    lbpe = sum(window(t, t + 1) for t in set(top))
    t_lbpe = clock.lap()
    assert el2n.shape == lbpe.shape == (n,)
    return {"load": t_load, "pass": t_pass, "lbpe": t_lbpe, "rss_mb": peak_rss_mb()}


# -- yoco ----------------------------------------------------------------------------------------------------
def child_yoco(a) -> dict:
    from yoco_cli.data.dynamics import Dynamics
    from yoco_cli.methods.scores import ScoreOptions, dynamics_scores
    from yoco_cli.stages.dynamics import read_reference_pickle
    from yoco_cli.store.store import sha256_file

    targets = class_sorted_targets(a.samples)
    clock = Clock()
    sha256_file(Path(a.path))
    t_hash = clock.lap()
    dyn, records = read_reference_pickle(Path(a.path), targets, CLASSES)
    t_read = clock.lap()
    art = Path(a.path).with_suffix(".safetensors")
    dyn.save(art)
    del dyn
    t_save = clock.lap()
    dyn = Dynamics.load(art)
    values, _ = dynamics_scores(dyn, ScoreOptions(), ("idc", "cifar100"))
    t_score = clock.lap()
    assert values["lbpe"].shape == (a.samples,) and dyn.epochs == a.epochs
    return {"hash": t_hash, "read": t_read, "save": t_save, "score": t_score, "records": records,
            "artifact_mb": art.stat().st_size / 2**20, "rss_mb": peak_rss_mb()}


# -- model-based scores (optional) --------------------------------------------------------------------------
def child_model(a) -> dict:
    import torch

    from yoco_cli.methods import select
    from yoco_cli.nn.engine import eval_pass
    from yoco_cli.nn.models import build_model
    from yoco_cli.stages.score import model_outputs

    torch.manual_seed(0)
    model = build_model("convnet", num_classes=CLASSES, channels=3, image_size=32)
    n = a.samples
    x = torch.rand(n, 3, 32, 32)
    y = class_sorted_targets(n)
    clock, out = Clock(), {}
    model_outputs(model, x, y, "cpu")
    out["entropy_loss"] = clock.lap()
    feats = eval_pass(model, x, "cpu", features=True)[1].numpy()
    out["embed"] = clock.lap()
    kept = select.kmeans_select(feats, y.numpy(), 4, 0, True, seed=0)
    out["ssp_to1"] = clock.lap()
    assert len(kept) == CLASSES * 4
    return out


CHILDREN = {"write": child_write, "reference": child_reference, "yoco": child_yoco, "model": child_model}


def run_child(name: str, a, samples: int, epochs: int, path: str, threads: int = 1) -> dict:
    args = [sys.executable, __file__, "--child", name, "--samples", str(samples), "--epochs", str(epochs),
            "--path", path]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("YOCO_NO_MALLOPT", None)
    res = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"child {name} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def total(parts: dict, keys: tuple[str, ...]) -> dict:
    return {k: sum(parts[p][k] for p in keys) for k in ("cpu", "wall")}


def fmt(t: dict, scale: float = 1.0) -> str:
    digits = 1 if t["cpu"] * scale >= 1 else 2
    return f"{t['cpu'] * scale:7.{digits}f} CPU-s {t['wall']:7.{digits}f} wall-s"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["ipc10", "ipc50"], choices=sorted(SIZES))
    p.add_argument("--epochs", type=int, default=1000, help="epochs of the recorded run")
    p.add_argument("--measure-epochs", type=int, default=0, help="write/replay only this many; scale CPU time")
    p.add_argument("--model", action="store_true", help="also time the model-based scores")
    p.add_argument("--samples", type=int, default=0)
    p.add_argument("--path", default="")
    p.add_argument("--child", default="")
    a = p.parse_args()
    if a.child:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        print(json.dumps(CHILDREN[a.child](a)))
        return
    measured = a.measure_epochs or a.epochs
    scale = a.epochs / measured
    scaled = f"; CPU time scaled x{scale:g} from {measured} measured epochs, wall as measured" if scale != 1 else ""
    print(f"reference-style = plain pickle.load + per-record loop + LBPE passes (our transcription of "
          f"generate_importance_score.py); yoco = hash + restricted bulk parse + per-epoch replay + save/load of "
          f"the dynamics artifact + scores; same td pickle, 1 torch thread each, same allocator{scaled}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    ratios = {}
    for size in a.sizes:
        n = SIZES[size]
        with tempfile.TemporaryDirectory(prefix="yoco-bench-scoring-") as d:
            path = str(Path(d) / f"td-{size}.pickle")
            wrote = run_child("write", a, n, measured, path)
            ref = run_child("reference", a, n, measured, path)
            ours = run_child("yoco", a, n, measured, path)
        ref_t, our_t = total(ref, ("load", "pass", "lbpe")), total(ours, ("hash", "read", "save", "score"))
        ratios[size] = our_t["cpu"] / ref_t["cpu"]
        print(f"\nCIFAR-100 {size.upper()} size: N={n}, {wrote['records']} records over {measured} epochs, "
              f"pickle {wrote['mb']:.0f} MiB (written in {wrote['wall']:.0f} s)")
        print(f"  reference-style {fmt(ref_t, scale)}   peak RSS {ref['rss_mb']:6.0f} MiB  "
              f"(unpickle {ref['load']['cpu'] * scale:.1f}, record pass {ref['pass']['cpu'] * scale:.1f}, "
              f"LBPE passes {ref['lbpe']['cpu'] * scale:.1f} CPU-s)")
        print(f"  yoco            {fmt(our_t, scale)}   peak RSS {ours['rss_mb']:6.0f} MiB  "
              f"(hash {ours['hash']['cpu'] * scale:.1f}, parse+replay {ours['read']['cpu'] * scale:.1f}, "
              f"save {ours['save']['cpu'] * scale:.2f}, load+scores {ours['score']['cpu'] * scale:.2f} CPU-s; "
              f"artifact {ours['artifact_mb']:.0f} MiB)")
        print(f"  scoring from yoco's stored dynamics alone (load + scores): {fmt(ours['score'], scale)}")
        print(f"  HEADLINE {size}: importing + scoring costs {ratios[size]:.2f}x the CPU time of the "
              f"reference-style replay (wall {our_t['wall'] / ref_t['wall']:.2f}x; goal <= 0.5x: "
              f"{'met' if ratios[size] <= 0.5 else 'NOT met'})")
    if a.model:
        n = SIZES[a.sizes[-1]]
        m = run_child("model", a, n, measured, "", threads=os.cpu_count() or 1)
        print(f"\nmodel-based scores, {n} 32x32 images, ConvNet-3 w128, {os.cpu_count()} threads: "
              f"entropy+loss {fmt(m['entropy_loss'])}, embed {fmt(m['embed'])}, ssp 50->1 {fmt(m['ssp_to1'])}")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
