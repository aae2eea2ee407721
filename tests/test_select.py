"""Selection rules (docs/method.md §4): counts, direction, balance, key grammar, CCS, k-means, determinism."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yoco_cli.errors import UsageError
from yoco_cli.methods import scores, select
from yoco_cli.methods.select import Rule

FAST = settings(max_examples=60, deadline=None)


@st.composite
def scored_sets(draw):
    """A decoded set laid out like docs/method.md §1.3 (class-sorted), with tie-prone scores."""
    classes = draw(st.integers(1, 6))
    ipc_from = draw(st.integers(2, 6))
    ipc_to = draw(st.integers(1, ipc_from - 1))
    f = draw(st.integers(1, 3))
    n = classes * ipc_from * f * f
    labels = np.repeat(np.arange(classes), ipc_from * f * f)
    scores = np.array(draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n)), dtype=np.float64)
    return classes, ipc_from, ipc_to, f, labels, scores


def _split(kept, n):
    mask = np.zeros(n, dtype=bool)
    mask[kept] = True
    return mask


@FAST
@given(scored_sets(), st.booleans(), st.booleans())
def test_counts_and_direction(data, hard, high_is_hard):
    classes, ipc_from, ipc_to, f, labels, scores = data
    per_class, total = select.keep_counts(ipc_from, ipc_to, f * f, len(labels))
    assert total == classes * ipc_to * f * f  # the integer form of int(to / from * N)
    keep_high = hard == high_is_hard  # AUM (high = easy) swaps head and tail
    for balanced in (True, False):
        kept = select.select_by_score(scores, labels, Rule("x", hard, balanced), per_class, total, high_is_hard)
        assert len(np.unique(kept)) == len(kept) and list(kept) == sorted(kept)
        mask = _split(kept, len(labels))
        groups = [np.arange(len(labels))] if not balanced else [np.flatnonzero(labels == c) for c in range(classes)]
        for g in groups:
            k, d = scores[g][mask[g]], scores[g][~mask[g]]
            if balanced:
                assert len(k) == ipc_to * f * f
            if len(d):
                assert (k.min() >= d.max()) if keep_high else (k.max() <= d.min())
        if not balanced:
            assert len(kept) == classes * ipc_to * f * f


def test_ties_follow_one_total_order():
    scores = np.zeros(6)
    labels = np.zeros(6, dtype=int)
    # descending score, ties by ascending index: hard takes the head, easy the tail
    assert select.select_by_score(scores, labels, Rule("x", True, False), 2, 2).tolist() == [0, 1]
    assert select.select_by_score(scores, labels, Rule("x", False, False), 2, 2).tolist() == [4, 5]
    assert select.total_order([1.0, 3.0, 3.0, 2.0]).tolist() == [1, 2, 3, 0]


def test_balanced_uses_labels_not_index_ranges():
    labels = np.array([1, 0, 1, 0, 1, 0])
    scores = np.array([5.0, 4, 3, 2, 1, 0])
    kept = select.select_by_score(scores, labels, Rule("x", False, True), 1, 2)
    assert kept.tolist() == [4, 5]  # lowest of class 1 is index 4, of class 0 index 5


def test_counts_reject_growing():
    with pytest.raises(UsageError):
        select.keep_counts(10, 10, 4, 400)
    assert select.keep_counts(10, 1, 4, 400) == (4, 40)  # CIFAR-10 10 -> 1 keeps 40 of 400 (docs/method.md §4.1)
    assert select.keep_counts(10, 1, 9, 900) == (9, 90)  # ImageNet-10


BASES = {"entropy": "entropy", "accumulated_margin": "aum", "forgetting": "forgetting", "el2n": "el2n",
         "random": "random", "ssp": "ssp", "yoco": "lbpe"}


@pytest.mark.parametrize("base", sorted(BASES) + ["ccs"])
def test_every_suffix_combination_parses(base):
    for d, b in itertools.product(["", "_easy", "_hard"], ["", "_balance", "_imbalance"]):
        for key in {base + d + b, base + b + d}:
            rule = select.parse_key(key)
            if base == "ccs":  # suffixes ignored (the base is replaced by el2n first)
                assert (rule.metric, rule.balanced) == ("ccs", False), key
                continue
            metric = BASES[base]
            declared = scores.get(metric)
            want_hard = declared.hard if (not d or not declared.directed) else d == "_hard"
            want_bal = declared.balanced if not b else b == "_balance"
            assert (rule.metric, rule.hard, rule.balanced, rule.key) == (metric, want_hard, want_bal, key), key


def test_key_defaults_match_the_reference():
    assert select.parse_key("yoco") == Rule("lbpe", False, True, "yoco")
    assert select.parse_key("yoco_imbalance") == Rule("lbpe", False, False, "yoco_imbalance")
    assert select.parse_key("forgetting_easy_balance") == Rule("forgetting", False, True, "forgetting_easy_balance")
    am = select.parse_key("accumulated_margin")
    assert (am.metric, am.hard, am.balanced) == ("aum", True, False)
    assert select.parse_key("random_balance").balanced is True
    assert select.parse_key("ssp_balance") == Rule("ssp", True, True, "ssp_balance")
    for bad in ("loss", "LBPE_top10", "nothing"):
        with pytest.raises(UsageError, match="unknown pruning key"):
            select.parse_key(bad)


def test_aum_hard_keeps_the_lowest_margin():
    aum = np.array([5.0, -1.0, 3.0, 0.0])
    labels = np.zeros(4, dtype=int)
    hard = select.select_by_score(aum, labels, select.parse_key("accumulated_margin"), 2, 2, high_is_hard=False)
    easy = select.select_by_score(aum, labels, select.parse_key("accumulated_margin_easy"), 2, 2, high_is_hard=False)
    assert hard.tolist() == [1, 3] and easy.tolist() == [0, 2]


# -- CCS ---------------------------------------------------------------------------------------------
@FAST
@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=300), st.integers(1, 60))
def test_ccs_strata_contain_the_max_and_budgets_sum(values, strata):
    s = np.array(values)
    ids = select.ccs_strata(s, strata)
    assert ids.min() >= 0 and ids.max() < strata
    assert ids[np.argmax(s)] == (strata - 1 if s.max() > s.min() else 0)
    sizes = np.bincount(ids, minlength=strata)
    for budget in (0, 1, len(s) // 3, len(s), len(s) + 5):
        b = select.ccs_budgets(sizes, budget)
        assert (b <= sizes).all() and b.sum() == min(budget, len(s))


def test_ccs_negative_scores_keep_their_max():
    s = np.array([-10.0, -5.0, -1.0])  # the reference's 1.0001 * max would exclude -1 (docs/method.md §9.7)
    ids = select.ccs_strata(s, 50)
    assert ids.tolist() == [0, 27, 49]  # (-5 + 10) / (9.0001 / 50) = 27.8


def test_ccs_by_hand_fixed_vs_random():
    scores = np.arange(100, dtype=float)  # 50 strata of two values each: {0,1}, {2,3}, ...
    assert np.bincount(select.ccs_strata(scores, 50)).tolist() == [2] * 50
    b = select.ccs_budgets([2] * 50, 25)
    assert b.tolist() == [0] * 25 + [1] * 25  # ascending size, ties by stratum id: the last 25 get one
    fixed = select.ccs_select(scores, 25, cut=0)
    assert fixed.tolist() == list(range(51, 100, 2))  # first in pool order = the harder of each pair
    cut = select.ccs_select(scores, 10, cut=20)  # the 20 hardest (80..99) are gone first
    assert cut.max() < 80 and len(cut) == 10
    r1 = select.ccs_select(scores, 25, cut=0, random=True, seed=1)
    r2 = select.ccs_select(scores, 25, cut=0, random=True, seed=1)
    assert r1.tolist() == r2.tolist() and len(r1) == 25
    assert r1.tolist() != fixed.tolist() or select.ccs_select(scores, 25, 0, random=True, seed=2).tolist() != fixed.tolist()
    assert all(v // 2 >= 25 for v in r1)  # one per stratum 25..49, whichever member


# -- random and k-means --------------------------------------------------------------------------------
@FAST
@given(st.integers(0, 2**31 - 1), st.booleans())
def test_same_seed_same_random_selection(seed, balanced):
    labels = np.repeat(np.arange(4), 10)
    a = select.random_select(labels, 3, 12, balanced, seed)
    b = select.random_select(labels, 3, 12, balanced, seed)
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 12
    if balanced:
        assert np.bincount(labels[a]).tolist() == [3, 3, 3, 3]


def test_nearest_to_centroids_duplicate_policies():
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    centers = np.array([[0.2], [0.4], [10.6]])  # the first two share sample 0 as nearest
    assert select.nearest_to_centroids(x, centers, "keep").tolist() == [0, 0, 3]
    assert select.nearest_to_centroids(x, centers, "fill").tolist() == [0, 1, 3]


def test_kmeans_select_counts_any_ipc_and_seeded():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    feats = rng.normal(size=(90, 5)) + labels[:, None] * 10.0
    for per_class in (1, 3, 7):  # not only 1/2/5/10 (docs/method.md §9.5)
        kept = select.kmeans_select(feats, labels, per_class, 0, True, seed=0)
        assert np.bincount(labels[kept], minlength=3).tolist() == [per_class] * 3
        assert len(set(kept.tolist())) == 3 * per_class
    g1 = select.kmeans_select(feats, labels, 0, 11, False, seed=4)
    g2 = select.kmeans_select(feats, labels, 0, 11, False, seed=4)
    assert g1.tolist() == g2.tolist() and len(set(g1.tolist())) == 11
