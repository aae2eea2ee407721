"""Selection rules of docs/method.md §4: which decoded images a pruned set keeps.

One total order everywhere (docs/method.md §4.6): descending score, ties by ascending decoded index.
"hard" keeps the head of that order, "easy" the tail (for AUM, where high = easy, the head
and tail swap, so "hard" still means the hardest samples). Balanced (YOCO's Rule 2) applies
the same order within each class; imbalanced applies it to the whole set. Classes are read
from the decoded labels, not from index ranges (docs/method.md §9.6). Kept indices are returned ascending.

Also here: the reference's key grammar (docs/method.md §4.3), CCS's strata and budgets (§3.8),
and the k-means prototype selection behind "ssp" (docs/method.md §3.7).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from . import scores

# The reference's own key grammar (a file format, not our list of metrics): its key bases in the
# order the reference tests them (docs/method.md §4.3) -> our metric
KEY_BASES = [("entropy", "entropy"), ("accumulated_margin", "aum"), ("forgetting", "forgetting"),
             ("el2n", "el2n"), ("random", "random"), ("ssp", "ssp"), ("yoco", "lbpe")]


@dataclass(frozen=True)
class Rule:
    metric: str
    hard: bool
    balanced: bool
    key: str | None = None  # the reference key it was parsed from

    @property
    def direction(self) -> str:
        return "hard" if self.hard else "easy"

    @property
    def balance(self) -> str:
        return "balanced" if self.balanced else "imbalanced"

    @property
    def label(self) -> str:
        return f"{self.metric}-{self.direction}-{self.balance}"


def rule_for(metric: str, hard: bool | None = None, balanced: bool | None = None) -> Rule:
    """A rule from --metric/--easy/--hard/--balanced/--imbalanced, with the defaults of docs/method.md §4.2
    (each metric's registration declares them). A direction for an undirected metric, or a balance for one
    that decides it itself, is replaced by the default, so both spellings share one cache entry."""
    m = scores.get(metric)
    hard = m.hard if hard is None or not m.directed else hard
    balanced = m.balanced if balanced is None or m.fixed_balance else balanced
    return Rule(m.name, hard, balanced)


def parse_key(key: str) -> Rule:
    """The reference's `--pruning_key` grammar: <base>[_easy|_hard][_balance|_imbalance], any order.

    Suffixes are substrings: `_hard` wins over `_easy`, `_balance` over `_imbalance` (which does
    not contain `_balance`). `ccs` ignores every suffix. AUM's inversion is not a parsing matter:
    `hard` means "keep the hardest" for every metric and select() knows AUM's high = easy.
    """
    k = key.strip().lower()
    if "ccs" in k:
        r = rule_for("ccs")
        return Rule(r.metric, r.hard, r.balanced, key=key)
    hard = True if "_hard" in k else False if "_easy" in k else None
    balanced = True if "_balance" in k else False if "_imbalance" in k else None
    base = k
    for suffix in ("_hard", "_easy", "_imbalance", "_balance"):
        base = base.replace(suffix, "")
    for needle, metric in KEY_BASES:
        if needle in base:
            r = rule_for(metric, hard, balanced)
            return Rule(r.metric, r.hard, r.balanced, key)
    bases = ", ".join(n for n, _ in KEY_BASES) + ", ccs"
    raise UsageError(f"unknown pruning key {key!r}",
                     f"the reference's keys contain one of {bases}; loss and raw LBPE are reachable with --metric")


# -- counts (docs/method.md §4.1; integers only, §9.17) ----------------------------------------
def keep_counts(ipc_from: int, ipc_to: int, unit: int, n: int) -> tuple[int, int]:
    """(kept per class when balanced, kept in total when imbalanced).

    unit = decoded images per IPC (f^2). Per class m = to * f^2; in total M = N * to // from,
    the reference's int(to / from * N) in exact arithmetic (= C * to * f^2 for a regular set).
    """
    if ipc_to < 1:
        raise UsageError(f"--to must be at least 1, got {ipc_to}")
    if ipc_to >= ipc_from:
        raise UsageError(f"--to {ipc_to} is not smaller than the set's IPC {ipc_from}", "prune to a smaller IPC")
    return ipc_to * unit, n * ipc_to // ipc_from


# -- score-based selection ------------------------------------------------------------------------
def total_order(scores):
    """Positions sorted by descending score, ties by ascending index (docs/method.md §4.6)."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    if np.isnan(s).any():
        from ..errors import IntegrityError

        raise IntegrityError(f"the scores contain {int(np.isnan(s).sum())} NaN values")
    return np.lexsort((np.arange(len(s)), -s))


def _take(order, count: int, keep_high: bool):
    count = min(count, len(order))
    if count == 0:
        return order[:0]
    return order[:count] if keep_high else order[len(order) - count:]


def select_by_score(scores, labels, rule: Rule, per_class: int, total: int, high_is_hard: bool = True):
    """Kept decoded indices (ascending) for a score-based rule."""
    import numpy as np

    order = total_order(scores)
    keep_high = rule.hard == high_is_hard
    if not rule.balanced:
        return np.sort(_take(order, total, keep_high))
    lab = np.asarray(labels)[order]
    kept = [_take(order[lab == c], per_class, keep_high) for c in np.unique(lab)]
    return np.sort(np.concatenate(kept)) if kept else order[:0]


def random_select(labels, per_class: int, total: int, balanced: bool, seed: int):
    """Uniform without replacement, seeded: `random` / `random_balance` (docs/method.md §3.9)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    if not balanced:
        return np.sort(rng.choice(len(labels), size=min(total, len(labels)), replace=False))
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        out.append(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
    return np.sort(np.concatenate(out))


# -- CCS (docs/method.md §3.8) ---------------------------------------------------------------------
def ccs_strata(scores, strata: int = 50):
    """Stratum id of each score: `strata` equal-width bins over [min, hi).

    hi = max + 1e-4 * |max|, which is the reference's 1.0001 * max for positive scores, but
    also contains the maximum for zero or negative scores (docs/method.md §9.7); the top id is clamped, so the
    maximum is always in the last stratum whatever rounding does.
    """
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s.astype(np.int64)
    lo, mx = s.min(), s.max()
    hi = mx + 1e-4 * abs(mx)
    if hi <= mx:  # max == 0 (or a tiny magnitude): widen by a fraction of the range instead
        hi = mx + max(1e-4 * (mx - lo), np.finfo(np.float64).tiny)
    step = (hi - lo) / strata
    edges = lo + step * np.arange(1, strata)
    return np.minimum(np.searchsorted(edges, s, side="right"), strata - 1)


def ccs_budgets(sizes, budget: int):
    """Visit strata by ascending size (ties by stratum id); each takes min(size, remaining // strata left)."""
    import numpy as np

    sizes = np.asarray(sizes, dtype=np.int64)
    out = np.zeros_like(sizes)
    remaining = int(budget)
    order = np.argsort(sizes, kind="stable")
    for i, j in enumerate(order):
        b = min(int(sizes[j]), remaining // (len(order) - i))
        out[j] = b
        remaining -= b
    return out


def ccs_select(scores, budget: int, cut: int, strata: int = 50, random: bool = False, seed: int = 0):
    """Coverage-centric selection over EL2N: drop the `cut` hardest, stratify, allocate, pick.

    Within a stratum the reference takes the first b_j in pool order, i.e. the hardest left
    (its flag is inverted, docs/method.md §9.7): that is the default. random=True samples uniformly (seeded),
    as the CCS paper intended.
    """
    import numpy as np

    order = total_order(scores)  # the pool order: hardest first
    pool = order[cut:]
    s = np.asarray(scores, dtype=np.float64)[pool]
    ids = ccs_strata(s, strata)
    budgets = ccs_budgets(np.bincount(ids, minlength=strata), budget)
    rng = np.random.default_rng(seed)
    kept = []
    for j in range(strata):
        members = pool[ids == j]
        if budgets[j] == 0:
            continue
        if random:
            kept.append(rng.choice(members, size=int(budgets[j]), replace=False))
        else:
            kept.append(members[: budgets[j]])
    return np.sort(np.concatenate(kept)) if kept else pool[:0]


# -- k-means prototypes (docs/method.md §3.7, "ssp") -----------------------------------------------
def kmeans_prototypes(features, n_clusters: int, seed: int, duplicates: str = "fill"):
    """Positions of the samples nearest to each of `n_clusters` k-means centroids.

    scikit-learn KMeans, random-point init like the reference, one init, seeded. Two centroids
    can share their nearest sample: duplicates="fill" gives the later centroid (in centroid
    order) its nearest *unused* sample, so exactly n_clusters distinct samples come back;
    "keep" returns the reference's list, repeats included (the pruned set then holds that image
    twice and fewer distinct ones).
    """
    import numpy as np
    from sklearn.cluster import KMeans

    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    if duplicates not in ("fill", "keep"):
        raise UsageError(f"unknown duplicate policy {duplicates!r}", "use fill or keep")
    if n_clusters >= n:
        return np.arange(n)
    if n_clusters <= 0:
        return np.zeros(0, dtype=np.int64)
    km = KMeans(n_clusters=n_clusters, init="random", n_init=1, max_iter=100, tol=1e-4, random_state=seed)
    km.fit(x)
    return nearest_to_centroids(x, km.cluster_centers_, duplicates)


def nearest_to_centroids(x, centers, duplicates: str = "fill"):
    """For each centroid in order, its nearest sample (ties: lowest index); see kmeans_prototypes."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    n = len(x)
    used = np.zeros(n, dtype=bool)
    out = np.empty(len(centers), dtype=np.int64)
    x2 = (x * x).sum(1)
    chunk = max(1, (1 << 24) // max(n, 1))  # bound each distance block at ~128 MB of float64
    for a in range(0, len(centers), chunk):
        c = centers[a:a + chunk]
        d = x2[None, :] - 2 * c @ x.T + (c * c).sum(1)[:, None]
        for r, row in enumerate(d):
            pick = int(np.argmin(row))
            if duplicates == "fill" and used[pick]:
                cand = np.argsort(row, kind="stable")
                pick = int(cand[~used[cand]][0])
            used[pick] = True
            out[a + r] = pick
    return out


def kmeans_select(features, labels, per_class: int, total: int, balanced: bool, seed: int,
                  duplicates: str = "fill"):
    """ssp: per class `per_class` prototypes (kmeans_k) or `total` over everything (imbalance_kmeans_k).

    Decoded indices, ascending (with duplicates="keep" a repeated index appears repeatedly).
    """
    import numpy as np

    labels = np.asarray(labels)
    if not balanced:
        idx = kmeans_prototypes(features, total, seed, duplicates)
    else:
        parts = []
        for c in np.unique(labels):
            members = np.flatnonzero(labels == c)
            parts.append(members[kmeans_prototypes(np.asarray(features)[members], per_class, seed, duplicates)])
        idx = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return np.sort(idx)
