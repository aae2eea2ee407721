"""Issue 11 through the CLI: LBPE's window in `yoco score`, the per-seed protocol of prune/eval/report,
and the reference formats out of `yoco dynamics` and `yoco score`."""
from __future__ import annotations

import json
import pickle

import torch

from yoco_cli.data.condensed import CondensedSet
from yoco_cli.stages.datasets import load_real
from yoco_cli.stages.sets import set_result
from yoco_cli.store import run_cached

SMALL = ["--model", "convnet:width=8,depth=2"]


def digits_set(store, ipc: int = 2, name: str = "c/ipc2"):
    ds = load_real("digits")
    idx = torch.cat([torch.nonzero(ds.train_y == c).flatten()[:ipc] for c in range(10)])
    cset = CondensedSet(ds.train_x[idx].clone(), ds.train_y[idx].clone(), "digits", 10, factor=1,
                        value_space="raw01", meta={"method": "test-first"})
    m, _ = run_cached(store, "test-subset", 1, {"ipc": ipc}, {},
                      lambda tmp, key: set_result(tmp, cset, "digits first"), ref=name)
    return m, cset


def _lines(text: str, start: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(start)]


def test_score_on_the_digits_preset_is_a_real_top_k_and_differs_from_el2n(cli, store):
    digits_set(store, ipc=4, name="c/ipc4")
    # the digits preset: 100 epochs of dynamics (one seed here to stay quick)
    r = cli("score", "c/ipc4", "--dynamics-seeds", "1", "--json")
    assert r.exit_code == 0, r.stderr
    [line] = _lines(r.stderr, "LBPE window:")
    assert line.startswith("LBPE window: top K=1 of epochs [0, 10) by training accuracy (K < stop; scaled: ")
    assert "(stop 100, K 10) scaled to 100-epoch dynamics" in line and "warning" not in r.stderr
    doc = r.json()
    info = doc["info"]["lbpe"][0]
    assert info["window"] == "scaled" and info["k"] < info["stop_epoch"] and len(info["epochs"]) == 1
    assert doc["metrics"]["lbpe"]["spearman_lbpe"] == 1.0
    rho = doc["metrics"]["el2n"]["spearman_lbpe"]
    assert rho is not None and rho < 0.999  # a different ranking: LBPE is not EL2N on the embedded default
    # K == stop is allowed but warned about, in one line
    r = cli("score", "c/ipc4", "--dynamics-seeds", "1", "--k", "10", "--stop-epoch", "10")
    assert r.exit_code == 0, r.stderr
    [warn] = _lines(r.stderr, "warning:")
    assert "K=10 = stop epoch 10" in warn and "EL2N" in warn
    assert "(K = stop: the whole window; set by --k and --stop-epoch)" in _lines(r.stderr, "LBPE window:")[0]
    r = cli("score", "c/ipc4", "--dynamics-seeds", "1", "--stop-epoch", "90", "--k", "3")
    assert r.exit_code == 0 and "runs past the first learning-rate drop (epoch 66 of 100)" in r.stderr
    r = cli("prune", "c/ipc4", "--to", "1", "--dynamics", "c/ipc4@dynamics", "--k", "10", "--stop-epoch", "10")
    assert r.exit_code == 0 and len(_lines(r.stderr, "warning: LBPE with K=10 = stop epoch 10")) == 1


def test_dynamics_records_export_and_the_one_line_refusals(cli, store, tmp_path):
    digits_set(store)
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    r = cli("dynamics", "c/ipc2", "--seeds", "2", "--epochs", "3", *SMALL, "--export", tmp_path / "td.pickle")
    assert r.exit_code == 2 and "kept only with --records" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not store.all_runs("dynamics-run") and not list(tmp_path.iterdir())  # refused before training
    r = cli("dynamics", "c/ipc2", "--seeds", "2", "--epochs", "3", *SMALL, "--records",
            "--export", tmp_path / "td-ipc2-{seed}.pickle", "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert doc["records"] is True and doc["exported"] == [str(tmp_path / f"td-ipc2-{s}.pickle") for s in (0, 1)]
    with open(tmp_path / "td-ipc2-1.pickle", "rb") as f:
        td = pickle.load(f)
    assert td["data-name"] == "digits" and len(td["training_dynamics"]) == 3  # 20 images: one batch per epoch
    r = cli("dynamics", "c/ipc2", "--from-file", tmp_path / "td-ipc2-0.pickle", "--from-file",
            tmp_path / "td-ipc2-1.pickle", "--name", "c/back", "--json")
    assert r.exit_code == 0, r.stderr
    from yoco_cli.stages.dynamics import load_dynamics

    a = load_dynamics(store, store.resolve(doc["ref"]))
    b = load_dynamics(store, store.resolve("c/back"))
    for (x, _, _), (y, _, _) in zip(a, b):
        for name in ("err", "correct", "margin_sum", "correct_num", "loss_epoch"):
            assert torch.equal(getattr(x, name), getattr(y, name)), name
    # a score export of the imported runs, as JSON {metric: [score per decoded index]}
    r = cli("score", "c/back", "--export", tmp_path / "s.json", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["exported"] == [str(tmp_path / "s-run0.json"), str(tmp_path / "s-run1.json")]
    assert len(json.loads((tmp_path / "s-run1.json").read_text())["el2n"]) == 20
    r = cli("score", "c/back", "--export", tmp_path / "s.txt")
    assert r.exit_code == 2 and "export format of s.txt" in r.stderr


def test_prune_per_seed_by_default_eval_pools_report_separates_mean_scores(cli, store):
    digits_set(store)
    r = cli("dynamics", "c/ipc2", "--seeds", "2", "--epochs", "3", *SMALL)
    assert r.exit_code == 0, r.stderr
    r = cli("prune", "c/ipc2", "--to", "1", "--dynamics", "c/ipc2@dynamics", "--k", "1", "--stop-epoch", "2",
            "--json")
    assert r.exit_code == 0, r.stderr
    [res] = r.json()["results"]
    assert res["ref"] == "c/ipc2@lbpe-easy-balanced-ipc1" and res["protocol"] == "per-seed"
    assert [run["ref"] for run in res["runs"]] == [f"c/ipc2@lbpe-easy-balanced-ipc1-run{j}" for j in (0, 1)]
    assert [run["score_run"] for run in res["runs"]] == [0, 1]
    assert "each of the 2 dynamics runs pruned with its own scores" in r.stderr
    r = cli("show", "c/ipc2@lbpe-easy-balanced-ipc1")
    assert r.exit_code == 2 and "-run0" in r.stderr and "yoco eval" in r.stderr
    r = cli("prune", "c/ipc2", "--to", "1", "--dynamics", "c/ipc2@dynamics", "--k", "1", "--stop-epoch", "2",
            "--mean-scores", "--json")
    assert r.exit_code == 0, r.stderr
    [mean] = r.json()["results"]
    assert mean["ref"] == "c/ipc2@lbpe-easy-balanced-meanscores-ipc1" and mean["protocol"] == "mean-scores"
    ev = ["--repeats", "1", "--epochs", "2", *SMALL, "--json"]
    r = cli("eval", "c/ipc2@lbpe-easy-balanced-ipc1", "c/ipc2@lbpe-easy-balanced-meanscores-ipc1", *ev)
    assert r.exit_code == 0, r.stderr
    pooled, single = r.json()
    assert pooled["repeats"] == 2 and pooled["pooled_over"] == [f"c/ipc2@lbpe-easy-balanced-ipc1-run{j}"
                                                                   for j in (0, 1)]
    per = [run["per_repeat"][0]["best"] for run in pooled["runs"]]
    assert abs(pooled["best_mean"] - sum(per) / 2) < 1e-12 and single["repeats"] == 1
    r = cli("report", "--format", "markdown", "--table", "main")
    assert r.exit_code == 0, r.stderr
    tables = r.stdout.split("**Main comparison")[1:]
    assert len(tables) == 2 and "pruned with scores averaged over dynamics runs" in tables[1]
    assert ("LBPE window: the 1 highest-accuracy epoch(s) of [0, 2) (K < stop; set by --k/--stop-epoch); "
            "seed protocol: each of 2 dynamics runs prunes with its own scores") in tables[0]
    assert "seed protocol: scores averaged over 2 dynamics runs" in tables[1]
