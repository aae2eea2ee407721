"""Paired differences with a 95% paired-t interval (stages/paired.py, docs/statistics.md)."""
from __future__ import annotations

import math

import pytest

from yoco_cli.stages import paired


def test_t_table_matches_scipy():
    from scipy.special import stdtrit

    for df in range(1, 35):
        assert paired.t_quantile(df) == pytest.approx(float(stdtrit(df, 0.975)), abs=1e-4)


def test_interval_is_mean_plus_minus_t_sd_over_root_n():
    d = paired.interval([1.0, 2.0, 3.0, 6.0], "YOCO")
    sd = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 3)
    half = 3.1824 * sd / 2
    assert (d.mean, d.n, d.vs) == (3.0, 4, "YOCO")
    assert d.lo == pytest.approx(3 - half, abs=1e-4) and d.hi == pytest.approx(3 + half, abs=1e-4)
    assert (d.lo, d.hi, d.sd) == (-0.4374, 6.4374, 2.1602)  # 3 ± 3.1824 · 2.1602 / 2 includes 0
    assert not d.distinguishable
    assert paired.interval([1.0, 2.0, 3.0, 4.0], "YOCO").distinguishable  # 2.5 ± 2.05 excludes it


def test_an_interval_that_includes_zero_is_not_distinguishable_and_says_so():
    d = paired.interval([2.0, -1.0, 1.5], "SSP")
    assert d.lo < 0 < d.hi and not d.distinguishable
    assert d.text().endswith(" ~") and d.text().startswith("Δ +0.83 [")
    one = paired.interval([4.0], "SSP")
    assert (one.lo, one.hi, one.sd, one.distinguishable) == (None, None, None, False)
    assert one.text() == "Δ +4.00 (n=1)"


def test_paired_uses_only_shared_keys():
    a = {"run0/repeat0": 60.0, "run1/repeat0": 62.0, "run2/repeat0": 70.0}
    b = {"run0/repeat0": 50.0, "run1/repeat0": 51.0}
    d = paired.paired(a, b, "b")
    assert d.n == 2 and d.mean == 10.5
    assert paired.paired(a, {"run9/repeat0": 1.0}, "b") is None
    assert paired.run_key(2, 1) == "run2/repeat1" and paired.run_key(None, 0) == "repeat0"


def test_pairs_to_settle_is_the_smallest_n_whose_interval_would_exclude_zero():
    d = paired.interval([3.0, -1.0, 2.0], "SSP")  # mean 1.33, sd 2.08: not settled at n=3
    n = paired.pairs_to_settle(d)
    assert n is not None and n > 3
    assert paired.t_quantile(n - 1) * d.sd / math.sqrt(n) < abs(d.mean)
    assert paired.t_quantile(n - 2) * d.sd / math.sqrt(n - 1) >= abs(d.mean)
    assert paired.pairs_to_settle(paired.interval([5.0], "x")) is None  # no spread measured
    settled = paired.interval([9.0, 10.0, 11.0], "x")
    assert settled.distinguishable and paired.pairs_to_settle(settled) == 3


def test_a_rule_that_reads_no_scores_pairs_with_score_rules_at_one_dynamics_run():
    """With one dynamics run, random's set names no run (it reads no scores) and lbpe's says run 0:
    both are the pruning of that run, so their repeats pair."""
    from yoco_cli.stages.report import EvalRecord, keyed_values

    def rec(metric, score_run):
        return EvalRecord("digits", "digits/random/ipc10", 10, 1, metric, "easy", "balanced", "convnet",
                          best=[50.0, 52.0], last=[49.0, 51.0], score_run=score_run, repeats=[0, 1])

    random_keys = [k for k, _ in keyed_values(rec("random", None), "best")]
    lbpe_keys = [k for k, _ in keyed_values(rec("lbpe", 0), "best")]
    assert random_keys == lbpe_keys == ["run0/repeat0", "run0/repeat1"]
