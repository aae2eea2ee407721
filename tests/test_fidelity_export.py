"""Reference formats out (issue 11): td-*.pickle from recorded runs, data-score pickles and JSON."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest
import torch

from yoco_cli.data.condensed import CondensedSet
from yoco_cli.errors import UsageError
from yoco_cli.methods.scores import ScoreOptions
from yoco_cli.stages import dynamics as D
from yoco_cli.stages import score as S
from yoco_cli.stages.datasets import load_real as load
from yoco_cli.stages.sets import set_result
from yoco_cli.store import run_cached

FAST = {"epochs": 4, "model": "convnet:width=8,depth=2"}
STATS = ("targets", "err", "correct", "margin_sum", "correct_num", "loss_epoch")


def small_set(store, ipc: int = 3):
    ds = load("digits")
    idx = torch.cat([torch.nonzero(ds.train_y == c).flatten()[:ipc] for c in range(10)])
    cset = CondensedSet(ds.train_x[idx].clone(), ds.train_y[idx].clone(), "digits", 10, factor=1,
                        value_space="raw01", meta={"method": "test-first"})
    m, _ = run_cached(store, "test-subset", 1, {"ipc": ipc}, {},
                      lambda tmp, key: set_result(tmp, cset, "digits first"), ref=f"x/ipc{ipc}")
    return m, cset


@pytest.fixture
def recorded(store):
    m, cset = small_set(store)
    group, _ = D.compute_dynamics(store, m, cset, seeds=2, device="cpu", records=True, **FAST)
    return m, cset, group


def test_records_export_loads_with_plain_pickle_and_round_trips_exactly(store, recorded, tmp_path):
    m, cset, group = recorded
    assert D.has_records(group) and group.meta["records"] is True
    paths = D.export_reference(store, group, tmp_path / "td-ipc3.pickle")
    assert sorted(p.name for p in paths.values()) == ["td-ipc3-seed0.pickle", "td-ipc3-seed1.pickle"]
    # a fresh interpreter with torch and nothing of yoco's (importing yoco_cli would fail there)
    probe = ("import pickle, sys; sys.modules['yoco_cli'] = None; "
             f"d = pickle.load(open({str(paths[0])!r}, 'rb')); r = d['training_dynamics']; "
             "print(d['data-name'], len(r), sorted(r[0]), r[0]['idx'].dtype, r[0]['output'].dtype, "
             "r[1]['epoch'], r[1]['iteration'])")
    out = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    # 30 images, batch 64: one record per epoch, 4 epochs
    assert out.stdout.split() == ["digits", "4", "['epoch',", "'idx',", "'iteration',", "'output']",
                                  "torch.int64", "torch.float16", "1", "0"]
    trained = D.load_dynamics(store, group)
    back, _ = D.import_dynamics(store, m, cset, [paths[0], paths[1]])
    for (a, _, _), (b, _, _) in zip(trained, D.load_dynamics(store, back)):
        for name in STATS:
            assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_records_do_not_change_the_statistics_and_cost_what_the_docs_say(store, recorded):
    m, cset, group = recorded
    plain, _ = D.compute_dynamics(store, m, cset, seeds=2, device="cpu", **FAST)
    assert plain.key != group.key and not D.has_records(plain)
    for (a, _, _), (b, _, _) in zip(D.load_dynamics(store, plain), D.load_dynamics(store, group)):
        for name in STATS:
            assert torch.equal(getattr(a, name), getattr(b, name)), name
    rec_bytes = group.outputs["seed0/records"]["size"]
    rows, classes = 4 * 30, 10
    assert rows * (2 * classes + 4) <= rec_bytes < rows * (2 * classes + 4) + 4096  # + header and per-record ints


def test_export_without_records_names_the_option(store, tmp_path):
    m, cset = small_set(store)
    group, _ = D.compute_dynamics(store, m, cset, seeds=1, device="cpu", **FAST)
    with pytest.raises(UsageError) as e:
        D.export_reference(store, group, tmp_path / "td.pickle")
    assert "--records" in e.value.one_line() and "\n" not in e.value.one_line()
    assert not (tmp_path / "td.pickle").exists()


def test_score_export_pickle_is_the_reference_layout_and_reads_back(store, recorded, tmp_path):
    m, cset, group = recorded
    sm, _ = S.ensure_scores(store, group, m, cset, ScoreOptions(k=2, stop_epoch=3))
    table = S.load_scores(store, sm)
    paths = S.export_scores(store, sm, tmp_path / "data-score-ipc3-ep3.pickle", device="cpu")
    assert sorted(paths) == [0, 1]
    with open(paths[1], "rb") as f:
        doc = pickle.load(f)
    [(_dyn, _, _), (dyn1, _, _)] = D.load_dynamics(store, group)
    epochs = sm.meta["info"]["lbpe"][1]["epochs"]
    assert len(epochs) == 2 and "LBPE_top2" in doc and "el2n" in doc and doc["LBPE_0_10"] is doc["el2n"]
    assert all(f"LBPE_{t}_{t + 1}" in doc for t in epochs)
    assert torch.equal(doc["LBPE_top2"], table.tensors["lbpe/seed1"])
    assert torch.equal(doc["accumulated_margin"], table.tensors["aum/seed1"])
    assert doc["targets"].dtype == torch.int32 and doc["correct_num"].tolist() == dyn1.correct_num.tolist()
    assert torch.equal(doc["forgetting"].float(), table.tensors["forgetting/seed1"])
    assert doc["correctness"].tolist() == dyn1.correct.sum(0).tolist()
    # k-means lists at the IPCs the set allows (3 per class here: IPC 1 and 2), duplicates kept
    assert {k for k in doc if "kmeans" in k} == {"kmeans_1", "kmeans_2", "imbalance_kmeans_1", "imbalance_kmeans_2"}
    assert len(doc["kmeans_2"]) == 20 and all(isinstance(i, int) for i in doc["kmeans_2"])
    # yoco reads its own export back as the reference's file, same numbers
    back, _ = S.from_file(store, paths[1], name="ref/back")
    again = S.load_scores(store, back)
    for metric in ("lbpe", "el2n", "forgetting", "aum", "entropy", "loss"):
        assert torch.allclose(again.tensors[f"{metric}/seed0"], table.tensors[f"{metric}/seed1"]), metric
    assert again.ssp_list("kmeans_1").tolist() == doc["kmeans_1"]


def test_score_export_json_and_bad_names(store, recorded, tmp_path):
    m, cset, group = recorded
    sm, _ = S.ensure_scores(store, group, m, cset, ScoreOptions())
    table = S.load_scores(store, sm)
    paths = S.export_scores(store, sm, tmp_path / "scores-{run}.json")
    assert [p.name for p in paths.values()] == ["scores-0.json", "scores-1.json"]
    doc = json.loads(paths[0].read_text())
    assert sorted(doc) == sorted(table.metrics) and len(doc["lbpe"]) == 30
    assert doc["el2n"] == pytest.approx(table.tensors["el2n/seed0"].tolist())
    with pytest.raises(UsageError) as e:
        S.export_scores(store, sm, tmp_path / "scores.csv")
    assert "export format of scores.csv" in e.value.one_line() and "*.pickle" in e.value.one_line()
