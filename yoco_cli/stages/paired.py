"""Paired differences between two rules' accuracies, with a 95% paired-t interval (docs/statistics.md).

A report cell pools evaluation runs keyed by (dynamics run j, evaluation repeat r): run j of
every rule prunes with the scores of the same dynamics run, and repeat r trains with the same
seed, so the two rules' runs with one key share everything but the rule. Their difference is
the unit of comparison: n keys give n differences, and the interval is
mean ± t(0.975, n-1) · sd / sqrt(n) with the sample sd (ddof=1). A paired t and not a bootstrap:
with the 3 to 9 pairs a report usually has, a bootstrap's resamples take only a handful of
distinct values and its percentile interval is too narrow; the t interval is exact for normal
differences and robust enough at these n.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

LEVEL = 0.95
METHOD = "paired t, 95%"


def run_key(score_run: int | None, repeat: int) -> str:
    """The pairing key of one evaluation run: `run<j>/repeat<r>` (`repeat<r>` without a dynamics run)."""
    return (f"run{score_run}/" if score_run is not None else "") + f"repeat{repeat}"


@dataclass
class Diff:
    """`mean` of (this row - `vs`) over `n` matched runs, their sample `sd`, the 95% interval [lo, hi]
    (None with one pair: no spread was measured), and whether that interval excludes 0."""
    vs: str
    mean: float
    lo: float | None
    hi: float | None
    n: int
    distinguishable: bool
    sd: float | None = None

    def text(self) -> str:
        if self.lo is None or self.hi is None:
            return f"Δ {self.mean:+.2f} (n={self.n})"
        return f"Δ {self.mean:+.2f} [{self.lo:+.2f}, {self.hi:+.2f}]" + ("" if self.distinguishable else " ~")


# Student's t 0.975 quantiles for 1..30 degrees of freedom: the report's usual n needs no scipy import
# (half a second or more); tests/test_paired.py checks them against scipy.special.stdtrit
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
        2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
        2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (beyond the table: scipy, which
    comes with scikit-learn)."""
    if df < 1:
        raise ValueError(f"t quantile needs at least 1 degree of freedom, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    from scipy.special import stdtrit

    return float(stdtrit(df, 0.5 + LEVEL / 2))


def interval(diffs: list[float], vs: str) -> Diff:
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return Diff(vs, round(mean, 4), None, None, n, False)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    return Diff(vs, round(mean, 4), round(lo, 4), round(hi, 4), n, lo > 0 or hi < 0, round(sd, 4))


def paired(a: dict[str, float], b: dict[str, float], vs: str) -> Diff | None:
    """a - b over the keys both have; None when they share none."""
    keys = sorted(a.keys() & b.keys())
    return interval([a[k] - b[k] for k in keys], vs) if keys else None


def pairs_to_settle(d: Diff, cap: int = 200) -> int | None:
    """How many pairs would give an interval that excludes 0 if the measured mean and sd held (a
    planning guess, not a promise); None when no spread was measured or none up to `cap` would."""
    if d.sd is None or d.n < 2:
        return None
    if d.distinguishable:
        return d.n
    if d.sd == 0 or d.mean == 0:
        return None
    for n in range(d.n + 1, cap + 1):
        if t_quantile(n - 1) * d.sd / math.sqrt(n) < abs(d.mean):
            return n
    return None
