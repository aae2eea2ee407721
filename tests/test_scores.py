"""Scores on a hand-written record stream, checked against values computed by hand (docs/method.md §3).

Stream: 4 samples, 3 classes, 6 epochs, one batch per epoch. Probability vectors:
  A = (.8,.1,.1) predicts 0   B = (.1,.8,.1) predicts 1   Cc = (.1,.1,.8) predicts 2
  s0 (y=0): B A B A B A   correct 0 1 0 1 0 1  -> forgotten twice
  s1 (y=1): A A A A A A   never learned        -> forgetting 0 (reference), max+1 (Toneva)
  s2 (y=2): Cc x6         always correct
  s3 (y=0): A A A Cc Cc Cc correct 1 1 1 0 0 0 -> forgotten once
correct_num = [2, 3, 2, 2, 1, 2]: epoch 1 is best, then four epochs tie at 2.
"""
from __future__ import annotations

import math

import pytest

A, B, CC = (0.8, 0.1, 0.1), (0.1, 0.8, 0.1), (0.1, 0.1, 0.8)
Y = [0, 1, 2, 0]
STREAM = [  # STREAM[t][i]
    [B, A, CC, A], [A, A, CC, A], [B, A, CC, A], [A, A, CC, CC], [B, A, CC, CC], [A, A, CC, CC],
]


def err(p, y):
    return math.sqrt(sum((pk - (1.0 if k == y else 0.0)) ** 2 for k, pk in enumerate(p)))


def margin(p, y):
    return p[y] - max(pk for k, pk in enumerate(p) if k != y)


def make_dynamics(stream=STREAM, y=Y, seed=0):
    import torch

    from yoco_cli.data.dynamics import Recorder

    rec = Recorder(torch.tensor(y), epochs=len(stream), num_classes=3)
    for t, rows in enumerate(stream):
        # reversed index order inside the batch: scores must not depend on batch order
        idx = torch.tensor(list(range(len(y)))[::-1])
        lp = torch.tensor([rows[i] for i in idx.tolist()]).log().half()  # the reference's fp16 log-softmax
        rec.update(t, idx, lp)
    return rec.result({"seed": seed})


@pytest.fixture(scope="module")
def dyn():
    return make_dynamics()


def close(got, want, tol=2e-3):
    got = [float(v) for v in got]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert abs(g - w) <= tol * max(1.0, abs(w)), (got, want)


def test_correct_num_matches_hand_count(dyn):
    assert dyn.correct_num.tolist() == [2, 3, 2, 2, 1, 2]


def test_top_k_epochs_total_order(dyn):
    from yoco_cli.methods.scores import top_k_epochs

    # best epoch 1 (3 correct), then ties at 2 broken by ascending epoch: 0, 2 (not 5, 3)
    assert top_k_epochs(dyn.correct_num, 3, 6) == [0, 1, 2]
    assert top_k_epochs(dyn.correct_num, 1, 6) == [1]
    # stop_epoch excludes epoch 1: the ties at 2 in [0, 1) -> only epoch 0
    assert top_k_epochs(dyn.correct_num, 1, 1) == [0]
    # epochs 3..5 only would pick 3 then 5 (value 2) over 4 (value 1); stop 6 window includes 4
    assert top_k_epochs(dyn.correct_num, 5, 6) == [0, 1, 2, 3, 5]


def test_lbpe_top_k_by_hand(dyn):
    from yoco_cli.methods.scores import lbpe

    values, info = lbpe(dyn, k=3, stop_epoch=6)
    assert info["epochs"] == [0, 1, 2]
    want = [sum(err(STREAM[t][i], Y[i]) for t in (0, 1, 2)) for i in range(4)]
    close(values, want)


def test_lbpe_use_loss_picks_smallest_loss_epochs(dyn):
    from yoco_cli.methods.scores import lbpe

    loss = [sum(-math.log(STREAM[t][i][Y[i]]) for i in range(4)) / 4 for t in range(6)]
    close(dyn.loss_epoch, loss)
    smallest = sorted(sorted(range(6), key=lambda t: (round(loss[t], 6), t))[:2])
    values, info = lbpe(dyn, k=2, stop_epoch=6, use_loss=True)
    # epoch 1 is lowest; epochs 0, 2, 3, 5 tie next -> ascending epoch picks 0
    assert info["epochs"] == smallest == [0, 1]
    close(values, [sum(err(STREAM[t][i], Y[i]) for t in smallest) for i in range(4)])


def test_stop_epoch_smaller_than_k_is_a_usage_error(dyn):
    from yoco_cli.errors import UsageError
    from yoco_cli.methods.scores import lbpe

    with pytest.raises(UsageError, match="smaller than K"):
        lbpe(dyn, k=3, stop_epoch=2)
    with pytest.raises(UsageError, match="past the 6 epochs"):
        lbpe(dyn, k=3, stop_epoch=7)


def test_el2n_window(dyn):
    from yoco_cli.methods.scores import el2n

    v, info = el2n(dyn)  # [0, 10) on 6 epochs: what exists
    assert info["window"] == [0, 6]
    close(v, [sum(err(STREAM[t][i], Y[i]) for t in range(6)) for i in range(4)])
    v, _ = el2n(dyn, 2, 4)
    close(v, [sum(err(STREAM[t][i], Y[i]) for t in (2, 3)) for i in range(4)])


def test_forgetting_twice_never_learned_and_toneva_option(dyn):
    from yoco_cli.methods.scores import forgetting

    v, _ = forgetting(dyn)
    assert v.tolist() == [2, 0, 0, 1]
    v, info = forgetting(dyn, never_learned="max")
    assert v.tolist() == [2, 3, 0, 1] and info["never_learned_count"] == 1


def test_aum_is_the_probability_margin_sum(dyn):
    from yoco_cli.methods.scores import REGISTRY, aum

    v, info = aum(dyn)
    close(v, [sum(margin(STREAM[t][i], Y[i]) for t in range(6)) for i in range(4)])
    assert info["space"] == "probability" and REGISTRY["aum"].high_is_hard is False
    vm, _ = aum(dyn, mean=True)
    close(vm, [float(x) / 6 for x in v])


def test_random_is_seeded_permutation(dyn):
    from yoco_cli.methods.scores import random_scores

    a, _ = random_scores(dyn, seed=3)
    b, _ = random_scores(dyn, seed=3)
    assert a.tolist() == b.tolist() and sorted(a.tolist()) == [0, 1, 2, 3]


def test_scores_average_over_seeds():
    from yoco_cli.methods.scores import ScoreOptions, average, dynamics_scores

    d1 = make_dynamics(seed=0)
    flipped = [[row[0], row[1], row[2], A if t < 3 else B] for t, row in enumerate(STREAM)]
    d2 = make_dynamics(flipped, seed=1)
    opts = ScoreOptions(k=3, stop_epoch=6)
    v1, _ = dynamics_scores(d1, opts, ("idc", "cifar10"))
    v2, i2 = dynamics_scores(d2, opts, ("idc", "cifar10"))
    assert v1["forgetting"].tolist() == [2, 0, 0, 1] and v2["forgetting"].tolist() == [2, 0, 0, 1]
    mean = average([v1["lbpe"], v2["lbpe"]])
    close(mean, [(float(a) + float(b)) / 2 for a, b in zip(v1["lbpe"], v2["lbpe"])], tol=1e-6)
    assert i2["lbpe"]["epochs"] == [0, 1, 2]


def test_presets_table_and_scaling():
    from yoco_cli.errors import UsageError
    from yoco_cli.methods import presets

    p = presets.lbpe_preset("idc", "cifar100", 1000)
    assert (p.stop_epoch, p.k) == (200, 10)
    assert (presets.lbpe_preset("mtt", "cifar10", 1000).stop_epoch, presets.lbpe_preset("mtt", "cifar10", 1000).k) == (10, 3)
    short = presets.lbpe_preset("idc", "cifar10", 50)
    # issue 11: both stop and K scale (K/stop kept), so K < stop and LBPE stays a top-K choice
    assert (short.stop_epoch, short.k) == (5, 1) and short.scaled and "scaled" in short.source
    assert presets.ccs_beta("cifar100", 10, 2) == 0.4
    with pytest.raises(UsageError, match="no CCS cut ratio") as e:
        presets.ccs_beta("cifar10", 20, 1)  # a missing entry crashes the reference (docs/method.md §9.10)
    assert "--ccs-beta" in e.value.hint
    assert presets.cut_count(0.29, 100) == 29  # int(0.29 * 100) == 28 in floats


def test_entropy_and_loss_from_the_final_model():
    import torch

    from yoco_cli.stages.score import model_outputs

    class Logits(torch.nn.Module):  # logits = the input; embed = its double
        def forward(self, x):
            return x.flatten(1)

        def embed(self, x):
            return 2 * x.flatten(1)

    x = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, -1.0]]).view(2, 3, 1, 1)
    y = torch.tensor([1, 0])
    out = model_outputs(Logits(), x, y, "cpu", batch_size=1, want_features=True)
    z = math.exp(2) + 1 + math.exp(-1)
    q1 = [math.exp(2) / z, 1 / z, math.exp(-1) / z]
    close(out["entropy"], [math.log(3), -sum(q * math.log(q) for q in q1)], tol=1e-5)
    close(out["loss"], [math.log(3), -math.log(q1[0])], tol=1e-5)
    assert out["features"].tolist() == [[0.0, 0.0, 0.0], [4.0, 0.0, -2.0]]


def test_spearman_with_ties():
    from yoco_cli.methods.scores import ranks, spearman

    assert ranks([3, 1, 3, 2]).tolist() == [2.5, 0.0, 2.5, 1.0]
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
