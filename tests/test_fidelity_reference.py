"""yoco against a float32 transcription of the reference's scoring and selection (issue 11).

The fixture is a reference-format `td-*.pickle` (docs/method.md §2.3) written here, with many samples the
network is all but certain of (p_y within 1e-4..1e-6 of 1): the easy samples YOCO keeps, where
the algebraic error sqrt(sum p^2 - 2 p_y + 1) cancels to noise. The transcription below restates
docs/method.md §3.2, §3.3, §3.8, §4 the way the reference computes them (float32 torch, per record), written
from docs/method.md, not copied.
"""
from __future__ import annotations

import pickle

import pytest
import torch

from yoco_cli.data.condensed import CondensedSet
from yoco_cli.methods import select
from yoco_cli.methods.scores import ScoreOptions
from yoco_cli.stages import dynamics as D
from yoco_cli.stages import prune as P
from yoco_cli.stages.datasets import load_real as load
from yoco_cli.stages.score import ensure_scores, load_scores
from yoco_cli.stages.sets import set_result
from yoco_cli.store import run_cached

EPOCHS, BATCH, CLASSES, STOP, K = 40, 64, 10, 30, 5


def stored_set(store, ipc: int = 10, factor: int = 2):
    """IPC-`ipc` random digits (factor 2: 4 decoded images each), class-sorted, as a stored set."""
    ds = load("digits")
    g = torch.Generator().manual_seed(0)
    idx = torch.cat([torch.nonzero(ds.train_y == c).flatten()[
        torch.randperm(int((ds.train_y == c).sum()), generator=g)[:ipc]] for c in range(10)])
    cset = CondensedSet(ds.train_x[idx].clone(), ds.train_y[idx].clone(), "digits", 10, factor=factor,
                        value_space="raw01", meta={"method": "test-random"})
    m, _ = run_cached(store, "test-subset", 1, {"ipc": ipc, "factor": factor}, {},
                      lambda tmp, key: set_result(tmp, cset, "digits random"), ref="fid/ipc10")
    return m, cset


def confident_records(targets: torch.Tensor, seed: int = 0) -> list[dict]:
    """Records whose log-softmax grows sure of the label over training, many samples to p_y ~ 1 - 1e-6."""
    g = torch.Generator().manual_seed(seed)
    n = len(targets)
    skill = torch.rand(n, generator=g) * 16  # per-sample final margin in logits: 0 .. 16
    records = []
    for e in range(EPOCHS):
        perm = torch.randperm(n, generator=g)
        for it, s in enumerate(range(0, n, BATCH)):
            idx = perm[s:s + BATCH]
            logits = torch.randn(len(idx), CLASSES, generator=g)
            logits[torch.arange(len(idx)), targets[idx]] += skill[idx] * (e + 1) / EPOCHS
            records.append({"epoch": e, "iteration": it, "idx": idx.clone(),
                            "output": torch.log_softmax(logits, 1).half()})
    return records


# -- the reference, transcribed (float32, record by record) ------------------------------------------
def reference_scores(records, targets, stop: int, k: int) -> dict:
    n = len(targets)
    per_epoch = torch.zeros(EPOCHS, n, dtype=torch.float32)
    el2n = torch.zeros(n, dtype=torch.float32)
    correct_num = torch.zeros(EPOCHS, dtype=torch.int64)
    for r in records:
        p = torch.exp(r["output"].float())
        y = targets[r["idx"]]
        err = torch.norm(p - torch.nn.functional.one_hot(y, CLASSES).float(), dim=1)  # float32, as the reference
        per_epoch[r["epoch"], r["idx"]] = err
        if r["epoch"] < 10:
            el2n[r["idx"]] += err
        correct_num[r["epoch"]] += int((p.argmax(1) == y).sum())
    # top-K epochs of correct_num[:stop]; ties by ascending epoch (yoco's documented order, docs/method.md §4.6)
    chosen = sorted(sorted(range(stop), key=lambda t: (-int(correct_num[t]), t))[:k])
    lbpe = torch.zeros(n, dtype=torch.float32)
    for t in chosen:
        lbpe += per_epoch[t]
    return {"lbpe": lbpe, "el2n": el2n, "epochs": chosen, "per_epoch": per_epoch}


def reference_order(score) -> list[int]:
    return sorted(range(len(score)), key=lambda i: (-float(score[i]), i))


def reference_balanced_easy(score, ipc_from: int, ipc_to: int, unit: int) -> list[int]:
    """yoco = per class (index ranges, docs/method.md §4.5), the tail of the descending order."""
    per_range, keep = ipc_from * unit, ipc_to * unit
    order = reference_order(score)
    out = []
    for c in range(CLASSES):
        mine = [i for i in order if c * per_range <= i < (c + 1) * per_range]
        out += mine[len(mine) - keep:]
    return sorted(out)


def reference_ccs(score, budget: int, beta: float, strata: int = 50) -> list[int]:
    """docs/method.md §3.8: drop the hardest int(beta N), 50 strata in float32, ascending-size budgets,
    first in order."""
    order = reference_order(score)
    pool = order[int(beta * len(order)):]
    s = score[pool].float()
    lo, hi = s.min(), s.max() * torch.tensor(1.0001, dtype=torch.float32)
    step = (hi - lo) / strata
    members = []
    for j in range(strata):
        a, b = lo + j * step, lo + (j + 1) * step
        members.append([pool[i] for i in range(len(pool)) if bool(s[i] >= a) and bool(s[i] < b)])
    kept, left = [], budget
    by_size = sorted(range(strata), key=lambda j: len(members[j]))
    for pos, j in enumerate(by_size):
        take = min(len(members[j]), left // (strata - pos))
        kept += members[j][:take]
        left -= take
    return sorted(kept)


@pytest.fixture
def imported(store, tmp_path):
    m, cset = stored_set(store)
    targets = cset.decoded()[1]
    records = confident_records(targets)
    path = tmp_path / "td-ipc10.pickle"
    with open(path, "wb") as f:
        pickle.dump({"data-name": "digits", "training_dynamics": records}, f)
    group, _ = D.import_dynamics(store, m, cset, [path])
    return m, cset, group, records, targets


def test_lbpe_and_el2n_match_the_reference_float32_to_1e6(store, imported):
    m, cset, group, records, targets = imported
    ref = reference_scores(records, targets, STOP, K)
    sm, _ = ensure_scores(store, group, m, cset, ScoreOptions(k=K, stop_epoch=STOP))
    table = load_scores(store, sm)
    assert sm.meta["info"]["lbpe"][0]["epochs"] == ref["epochs"]
    for name in ("lbpe", "el2n"):
        ours = torch.from_numpy(table.values(name, 0))
        rel = ((ours - ref[name].double()).abs() / ref[name].double()).max()
        assert rel < 1e-6, (name, float(rel))
    # the fixture does exercise the cancellation: the algebraic form is far off on its easy samples
    [(dyn, _, _)] = D.load_dynamics(store, group)
    p = torch.exp(records[-1]["output"].float())
    y = targets[records[-1]["idx"]]
    algebraic = (p.pow(2).sum(1) - 2 * p.gather(1, y[:, None]).squeeze(1) + 1).clamp_min(0).sqrt()
    exact = ref["per_epoch"][EPOCHS - 1, records[-1]["idx"]]
    assert ((algebraic - exact).abs() / exact).max() > 1e-3
    stored = dyn.err[EPOCHS - 1, records[-1]["idx"]]
    assert stored.dtype == torch.float32 and ((stored - exact).abs() / exact).max() < 1e-6


def test_lbpe_el2n_and_ccs_selections_match_index_for_index(store, imported):
    m, cset, group, records, targets = imported
    ref = reference_scores(records, targets, STOP, K)
    sm, _ = ensure_scores(store, group, m, cset, ScoreOptions(k=K, stop_epoch=STOP))
    table = load_scores(store, sm)
    unit, n = cset.unit, len(targets)
    for to in (1, 2):
        lbpe = P.prune(store, P.Source(m, cset, table), to, select.parse_key("yoco"), P.PruneOptions(score_run=0))[0]
        assert lbpe.meta["per_class"] == [to * unit] * CLASSES
        assert _kept(store, lbpe) == reference_balanced_easy(ref["lbpe"], cset.ipc, to, unit)
        el2n = P.prune(store, P.Source(m, cset, table), to, select.parse_key("el2n"), P.PruneOptions(score_run=0))[0]
        budget = CLASSES * to * unit
        assert _kept(store, el2n) == sorted(reference_order(ref["el2n"])[:budget])
        ccs = P.prune(store, P.Source(m, cset, table), to, select.parse_key("ccs"),
                      P.PruneOptions(score_run=0, ccs_beta=0.3))[0]
        assert _kept(store, ccs) == reference_ccs(ref["el2n"], budget, 0.3)
    assert n == 400


def _kept(store, m) -> list[int]:
    import json

    return json.loads(store.object_path(m.digest("indices")).read_text())["indices"]


def test_short_runs_keep_k_below_stop_and_say_how():
    from yoco_cli.methods import presets
    from yoco_cli.stages.dynamics import preset_for

    digits = presets.lbpe_preset("dm", "digits", preset_for("digits").epochs)
    assert digits.k < digits.stop_epoch and digits.scaled  # a real top-K choice on the embedded default
    assert (digits.stop_epoch, digits.k) == (10, 1)  # IDC CIFAR-10's 100/1000 window and 1/10 of it
    for key, ds in presets.LBPE_TABLE:
        for epochs in (2, 3, 10, 50, 100, 200, 999, 1000, 2000):
            p = presets.lbpe_preset(key, ds, epochs)
            assert 1 <= p.k < p.stop_epoch <= epochs, (key, ds, epochs, p)
    full = presets.lbpe_preset("idc", "cifar10", 1000)
    assert (full.stop_epoch, full.k, full.scaled) == (100, 10, False)  # the reference's own values, unscaled
    assert presets.window_notes(10, 10, 100)[0].startswith("LBPE with K=10 = stop epoch 10")
    assert "first learning-rate drop (epoch 66" in presets.window_notes(5, 80, 100)[0]
    assert presets.window_notes(1, 10, 100) == []
