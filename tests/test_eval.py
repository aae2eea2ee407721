"""`yoco eval`: the protocol on digits (full > IPC 10 > IPC 1), caching, repeats, interruption."""
from __future__ import annotations

import pytest
from test_dynamics import digits_subset  # tests/ is on sys.path (no __init__.py)

from yoco_cli.errors import UsageError
from yoco_cli.stages import evaluate as E
from yoco_cli.stages import training

FAST = ["--epochs", "20", "--model", "convnet:width=16,depth=2"]


def test_digits_full_beats_ipc10_beats_ipc1(cli, store):
    digits_subset(store, 1)
    digits_subset(store, 10)
    r = cli("eval", "digits", "t/ipc10", "t/ipc1", "--repeats", "1", *FAST, "--json")
    assert r.exit_code == 0, r.stderr
    full, ipc10, ipc1 = r.json()
    assert full["train_images"] == 1438 and ipc10["train_images"] == 100 and ipc1["train_images"] == 10
    assert full["best_mean"] > ipc10["best_mean"] + 0.1 > ipc1["best_mean"] + 0.2
    assert all(not row["cached"] for row in (full, ipc10, ipc1))
    assert sorted(map(int, full["per_repeat"][0]["evals"])) == [5, 10, 15, 20]  # E/4, E/2, 3E/4, E
    r = cli("eval", "t/ipc1", "--repeats", "1", *FAST, "--json")
    assert r.json()[0]["cached"] and r.json()[0]["best_mean"] == ipc1["best_mean"]


def test_repeats_are_cached_per_seed_and_stats_are_right(store):
    m, cset = digits_subset(store, 1)
    kw = {"epochs": 4, "model": "convnet:width=8,depth=2", "device": "cpu"}
    g2, info = E.run_eval(store, m, cset, repeats=2, **kw)
    assert info["computed"] == [0, 1]
    g3, info = E.run_eval(store, m, cset, repeats=3, **kw)
    assert info["computed"] == [2] and g3.meta["repeats"] == 3
    best = [p["best"] for p in g3.meta["per_repeat"]]
    mean = sum(best) / 3
    assert g3.meta["best_mean"] == pytest.approx(mean)
    assert g3.meta["best_std"] == pytest.approx((sum((b - mean) ** 2 for b in best) / 3) ** 0.5)
    assert g3.meta["per_repeat"][:2] == g2.meta["per_repeat"]
    assert E.evaluate_set(store, m, cset, repeats=3, **kw).key == g3.key


def test_interrupted_eval_resumes_cleanly(cli, store):
    m, cset = digits_subset(store, 1)
    kw = {"repeats": 2, "epochs": 4, "model": "convnet:width=8,depth=2", "device": "cpu"}

    def stop(ev):
        if ev.seeds == [1] and ev.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        E.run_eval(store, m, cset, on_epoch=stop, **kw)
    assert store.verify() == [] and len(store.all_runs("eval-run")) == 1
    _, info = E.run_eval(store, m, cset, **kw)
    assert info["computed"] == [1]
    assert cli("cache", "verify").exit_code == 0


def test_presets_and_epoch_rule():
    assert [training.ipc_epochs(ipc, 3) for ipc in (1, 5, 10, 20, 50, 100)] == [2000, 1500, 1000, 1000, 500, 300]
    spec, cfg = E.plan("imagenet10", 10, 3, 224, 10, 3)
    assert spec["name"] == "resnet10_ap" and cfg.epochs == 1000 and cfg.dsa == "" and cfg.cutmix_p == 1.0
    assert cfg.imagenet_aug and cfg.schedule == "epoch" and cfg.eval_at == (250, 500, 750, 1000)
    spec, cfg = E.plan("cifar10", 10, 3, 32, 10, 2)
    assert spec["options"] == {} and cfg.dsa == "color_crop_flip_scale_rotate" and cfg.cutmix_p == 0.5
    spec, cfg = E.plan("cifar10", 10, 3, 32, 10, 2, model="densenet", aug="none", cutmix=0.0, epochs=8)
    assert spec["name"] == "densenet" and cfg.dsa == "" and cfg.cutmix_p == 0 and cfg.eval_at == (2, 4, 6, 8)


def test_bad_input(cli, store):
    m, cset = digits_subset(store, 1)
    assert cli("eval", "t/nothing").exit_code == 2
    assert cli("eval", "t/ipc1", "--repeats", "0").exit_code == 2
    assert cli("eval", "t/ipc1", "--batched", "maybe").exit_code == 2
    cset.value_space = "zca"
    with pytest.raises(UsageError, match="ZCA"):
        E.evaluate_set(store, m, cset, repeats=1, epochs=1)
