"""`yoco dynamics`: per-seed runs + group manifest, determinism, the reference pickle path,
refusing code in pickles, and interruption."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
import torch.nn.functional as F

from yoco_cli.data.condensed import CondensedSet
from yoco_cli.data.dynamics import Recorder
from yoco_cli.stages import dynamics as D
from yoco_cli.stages.datasets import load_real as load
from yoco_cli.stages.sets import set_result
from yoco_cli.store import Store, run_cached

FAST = ["--epochs", "3", "--model", "convnet:width=8,depth=2"]


def digits_subset(store, ipc: int, seed: int = 0, factor: int = 1):
    """A random IPC-`ipc` subset of digits' train split, stored as a condensed set (tests only)."""
    ds = load("digits")
    g = torch.Generator().manual_seed(seed)
    idx = torch.cat([torch.nonzero(ds.train_y == c).flatten()[torch.randperm(int((ds.train_y == c).sum()),
                                                                            generator=g)[:ipc]] for c in range(10)])
    cset = CondensedSet(ds.train_x[idx].clone(), ds.train_y[idx].clone(), "digits", 10, factor=factor,
                        value_space="raw01", meta={"method": "test-random"})
    m, _ = run_cached(store, "test-subset", 1, {"ipc": ipc, "seed": seed, "factor": factor}, {},
                     lambda tmp, key: set_result(tmp, cset, f"digits random ipc{ipc}"), ref=f"t/ipc{ipc}")
    return m, cset


def test_cli_dynamics_layout_and_more_seeds(cli, store):
    digits_subset(store, 2, factor=2)
    r = cli("dynamics", "t/ipc2", "--seeds", "2", *FAST, "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert doc["ref"] == "t/ipc2@dynamics" and doc["num_samples"] == 80 and doc["computed"] == [0, 1]
    group = store.resolve("t/ipc2@dynamics")
    assert sorted(group.outputs) == ["seed0/model", "seed0/stats", "seed1/model", "seed1/stats"]
    for s, key in group.meta["runs"].items():
        run = store.load_run("dynamics-run", key)
        assert group.digest(f"seed{s}/stats") == run.digest("stats")  # same objects, no copies
    runs = D.load_dynamics(store, group)
    dyn, model, spec = runs[0]
    assert dyn.err.shape == (3, 80) and dyn.correct_num.shape == (3,) and spec["options"]["width"] == 8
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    assert torch.equal(dyn.targets, torch.arange(10).repeat_interleave(8))  # decoded order (docs/method.md §1.3)
    assert int(dyn.correct.sum(1)[0]) == int(dyn.correct_num[0])
    r = cli("dynamics", "t/ipc2", "--seeds", "3", *FAST, "--json")
    assert r.exit_code == 0 and r.json()["computed"] == [2]  # seeds 0 and 1 come from the cache
    r = cli("dynamics", "t/ipc2", "--seeds", "3", *FAST, "--json")
    assert r.json()["computed"] == []


def test_same_seed_twice_gives_identical_digests(store, tmp_path):
    other = Store(tmp_path / "other").ensure()
    digests = []
    for st in (store, other):
        m, cset = digits_subset(st, 3)
        group, _ = D.compute_dynamics(st, m, cset, seeds=1, device="cpu", epochs=3,
                                      model="convnet:width=8,depth=2")
        digests.append((group.key, group.digest("seed0/stats"), group.digest("seed0/model")))
    assert digests[0] == digests[1]


def fabricate_records(n: int, classes: int = 10, epochs: int = 3, b: int = 7, seed: int = 0):
    """A record stream in the reference's layout (docs/method.md §2.3): per batch epoch, iteration, idx,
    fp16 log-softmax."""
    g = torch.Generator().manual_seed(seed)
    records = []
    for e in range(epochs):
        perm = torch.randperm(n, generator=g)
        for it, s in enumerate(range(0, n, b)):
            idx = perm[s:s + b]
            out = F.log_softmax(3 * torch.randn(len(idx), classes, generator=g), 1).half()
            records.append({"epoch": e, "iteration": it, "idx": idx, "output": out})
    return records


def test_reference_pickle_equals_direct_recording(cli, store, tmp_path):
    _m, cset = digits_subset(store, 2)
    records = fabricate_records(20)
    path = tmp_path / "td-ipc2.pickle"
    with open(path, "wb") as f:
        pickle.dump({"data-name": "digits", "training_dynamics": records}, f)
    direct = Recorder(cset.labels, 3, 10)
    for r in records:
        direct.update(r["epoch"], r["idx"], r["output"])
    want = direct.result({})
    r = cli("dynamics", "t/ipc2", "--from-file", path, "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["source"] == "reference-pickle"
    [(got, model, _)] = D.load_dynamics(store, store.resolve("t/ipc2@dynamics"))
    assert model is None and got.meta["records"] == len(records)
    for name in ("targets", "err", "correct", "margin_sum", "correct_num", "loss_epoch"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name


def test_reference_checkpoint_weights_are_mapped(cli, store, tmp_path):
    digits_subset(store, 2)
    path = tmp_path / "td.pickle"
    with open(path, "wb") as f:
        pickle.dump({"data-name": "digits", "training_dynamics": fabricate_records(20, epochs=1)}, f)
    from yoco_cli.nn.models import build_model

    theirs = build_model("convnet", 10, 1, 8, width=8, depth=2)
    renamed = {f"layers.{i}.param": v for i, v in enumerate(theirs.state_dict().values())}
    torch.save({"model_state_dict": renamed, "epoch": 999}, tmp_path / "ckpt-last.pt")
    r = cli("dynamics", "t/ipc2", "--from-file", path, "--checkpoint", tmp_path / "ckpt-last.pt",
            "--model", "convnet:width=8,depth=2")
    assert r.exit_code == 0, r.stderr
    [(_, model, _spec)] = D.load_dynamics(store, store.resolve("t/ipc2@dynamics"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), theirs.state_dict().values()))
    r = cli("dynamics", "t/ipc2", "--from-file", path, "--checkpoint", tmp_path / "ckpt-last.pt")
    assert r.exit_code == 2 and "does not fit" in r.stderr  # preset width 64 != the file's 8


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_code_payload_is_refused_with_exit_3(cli, store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    digits_subset(store, 2)
    path = tmp_path / "evil.pickle"
    with open(path, "wb") as f:
        pickle.dump({"data-name": "digits", "training_dynamics": [_Payload()]}, f)
    r = cli("dynamics", "t/ipc2", "--from-file", path)
    assert r.exit_code == 3 and "refuses" in r.stderr
    assert not (tmp_path / "pwned-by-pickle").exists()
    with open(path, "wb") as f:
        pickle.dump({"data-name": "digits", "training_dynamics": fabricate_records(50)}, f)  # idx >= 20
    r = cli("dynamics", "t/ipc2", "--from-file", path)
    assert r.exit_code == 3 and "indexes sample" in r.stderr


def test_interrupt_leaves_cache_clean_and_rerun_resumes(cli, store, tmp_path, monkeypatch):
    monkeypatch.setattr(D, "CHECKPOINT_EVERY_S", 0.0)
    m, cset = digits_subset(store, 3)
    kw = {"seeds": 2, "device": "cpu", "epochs": 4, "model": "convnet:width=8,depth=2"}

    def stop(ev):
        if ev.seeds == [1] and ev.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        D.compute_dynamics(store, m, cset, on_epoch=stop, **kw)
    assert store.verify() == []
    assert len(store.all_runs("dynamics-run")) == 1 and not store.all_runs("dynamics")  # seed 0 kept
    assert list((store.root / "partial" / "dynamics-run").glob("*/engine.safetensors"))
    epochs = []
    group, info = D.compute_dynamics(store, m, cset, on_epoch=lambda ev: epochs.append(ev.epoch), **kw)
    assert info["computed"] == [1] and epochs == [2, 3]  # resumed seed 1 after its epoch 2
    assert not list((store.root / "partial").glob("*/*/*"))  # checkpoints removed on commit
    other = Store(tmp_path / "clean").ensure()
    m2, cset2 = digits_subset(other, 3)
    clean, _ = D.compute_dynamics(other, m2, cset2, **kw)
    assert clean.outputs == group.outputs  # resumed run is byte-identical to an uninterrupted one
    assert cli("cache", "verify").exit_code == 0


def test_cli_ctrl_c_exits_130_and_rerun_completes(cli, store, monkeypatch):
    digits_subset(store, 2)
    original = Recorder.update

    def interrupted(self, epoch, idx, lp):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch, idx, lp)

    monkeypatch.setattr(Recorder, "update", interrupted)
    r = cli("dynamics", "t/ipc2", "--seeds", "1", *FAST)
    assert r.exit_code == 130
    assert cli("cache", "verify").exit_code == 0
    monkeypatch.setattr(Recorder, "update", original)
    r = cli("dynamics", "t/ipc2", "--seeds", "1", *FAST, "--json")
    assert r.exit_code == 0 and r.json()["computed"] == [0]


def test_bad_input(cli, store):
    digits_subset(store, 2)
    assert cli("dynamics", "t/nope").exit_code == 2
    assert cli("dynamics", "t/ipc2", "--seeds", "0").exit_code == 2
    assert cli("dynamics", "t/ipc2", "--aug", "color_blur").exit_code == 2
    assert cli("dynamics", "t/ipc2", "--model", "vgg").exit_code == 2
    assert cli("dynamics", "t/ipc2", "--device", "cuda:7").exit_code == 2
    assert cli("dynamics", "t/ipc2", "--checkpoint", "x.pt").exit_code == 2
    assert cli("dynamics", "t/ipc2", "--from-file", "missing.pickle").exit_code == 2


def test_dynamics_file_is_small():
    # CIFAR-100 IPC10: 4000 decoded images, 1000 epochs; the reference pickle is about 0.9 GB (docs/method.md §8)
    from yoco_cli.data.dynamics import Dynamics

    n, e = 4000, 50  # measure 50 epochs and scale: every per-epoch tensor grows linearly
    dyn = Dynamics(torch.zeros(n, dtype=torch.long), torch.rand(e, n).half(), torch.rand(e, n) > 0.5,
                   torch.zeros(n), torch.zeros(e, dtype=torch.long), torch.zeros(e), {})
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        per_epoch = os.path.getsize(dyn.save(os.path.join(d, "x"))) / e
    assert per_epoch * 1000 * 50 < 0.9e9  # at least 50x smaller than the reference


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_dynamics_batched_seeds_are_deterministic(store):
    m, cset = digits_subset(store, 2)
    kw = {"seeds": 3, "device": "cuda", "epochs": 3, "model": "convnet:width=8,depth=2"}
    group, info = D.compute_dynamics(store, m, cset, **kw)
    assert info["computed"] == [0, 1, 2]
    assert all(store.load_run("dynamics-run", k).meta["batched"] for k in group.meta["runs"].values())
    other = Store(store.root.parent / "other").ensure()
    m2, cset2 = digits_subset(other, 2)
    assert D.compute_dynamics(other, m2, cset2, **kw)[0].outputs == group.outputs
