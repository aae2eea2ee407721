"""Per-setting constants of the reference: LBPE's (stop_epoch, K) and CCS's hard-cut ratio beta.

Both tables are read off the reference code (docs/method.md §3.2, §3.8). They are facts about what
the paper ran, so they live here as data, and every value can be overridden on the CLI.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from ..errors import UsageError

# The reference records 1000 epochs of dynamics; its stop epochs are absolute epochs of that run.
REFERENCE_EPOCHS = 1000

# (condense_key, dataset) -> (stop_epoch, K)   docs/method.md §3.2. DSA generates its scores with stop 100
# although its evaluation config reads an "ep10" file (docs/method.md §9.8): we follow the generation side.
LBPE_TABLE: dict[tuple[str, str], tuple[int, int]] = {
    ("idc", "cifar10"): (100, 10),
    ("idc", "cifar100"): (200, 10),
    ("idc", "imagenet10"): (200, 10),
    ("dream", "cifar10"): (200, 10),
    ("dream", "cifar100"): (200, 10),
    ("mtt", "cifar10"): (10, 3),
    ("dsa", "cifar10"): (100, 3),
    ("kip", "cifar10"): (50, 3),
}
# Anything else (digits, our own condensations): IDC CIFAR-10's proportions, stop = E/10, K = 10.
GENERIC = (100, 10)

# dataset -> {(ipc_from, ipc_to): beta}   docs/method.md §3.8 (argument.py of the reference)
CCS_BETA: dict[str, dict[tuple[int, int], float]] = {
    "cifar10": {(10, 1): 0.3, (10, 2): 0.1, (10, 5): 0.0,
                (50, 1): 0.3, (50, 2): 0.3, (50, 5): 0.3, (50, 10): 0.1},
    "cifar100": {(10, 1): 0.5, (10, 2): 0.4, (10, 5): 0.2, (20, 1): 0.5, (20, 2): 0.5, (20, 5): 0.3,
                 (50, 1): 0.5, (50, 2): 0.5, (50, 5): 0.5, (50, 10): 0.3},
    "imagenet10": {(10, 1): 0.3, (10, 2): 0.2, (10, 5): 0.1, (20, 1): 0.3, (20, 2): 0.3, (20, 5): 0.2},
}
CCS_STRATA = 50


@dataclass(frozen=True)
class LbpePreset:
    stop_epoch: int
    k: int
    source: str              # where the numbers came from, recorded in the score artifact
    reference: tuple = ()    # the table's (stop_epoch, K) for 1000-epoch dynamics
    scaled: bool = False     # True: both were scaled to dynamics of another length

    def as_dict(self) -> dict:
        return {"stop_epoch": self.stop_epoch, "k": self.k, "source": self.source,
                "reference": list(self.reference), "scaled": self.scaled}


def _dataset_key(dataset: str) -> str:
    return "imagenet10" if dataset in ("imagenet", "imagenet10") else dataset


def lbpe_preset(condense_key: str | None, dataset: str, epochs: int) -> LbpePreset:
    """(stop_epoch, K) for a setting, fitted to dynamics of `epochs` epochs.

    The table's values belong to 1000-epoch runs and are used unscaled there (the reference's
    exact behaviour). Dynamics of another length keep the paper's *proportions*: the window is
    the same fraction of training, stop = round(stop * E / 1000) (at least 2), and K keeps its
    ratio to the window, K = round(K * stop' / stop), clamped to [1, stop' - 1]. So K < stop
    always holds and LBPE stays a real top-K choice; scaling stop alone while K stayed put made
    K == stop on a 100-epoch run, and LBPE was then exactly EL2N (the sum over [0, stop)).
    """
    ds = _dataset_key(dataset)
    key = (condense_key or "").lower()
    if (key, ds) in LBPE_TABLE:
        (stop, k), src = LBPE_TABLE[(key, ds)], f"reference table ({key}, {ds})"
    elif ("idc", ds) in LBPE_TABLE:
        (stop, k), src = LBPE_TABLE[("idc", ds)], f"reference table (idc, {ds}) for {key or 'unknown'} sets"
    else:
        (stop, k), src = GENERIC, "generic (IDC CIFAR-10 proportions)"
    if epochs == REFERENCE_EPOCHS:
        return LbpePreset(stop, k, src + ", unscaled", (stop, k), False)
    new_stop = min(epochs, max(2, round(stop * epochs / REFERENCE_EPOCHS)))
    new_k = max(1, min(new_stop - 1, round(k * new_stop / stop)))
    if new_stop < 2:  # a 1-epoch run has no choice to make: K = stop = 1 (warned about by window_notes)
        new_k = new_stop
    src += f", (stop {stop}, K {k}) scaled to {epochs}-epoch dynamics"
    return LbpePreset(new_stop, new_k, src, (stop, k), True)


def first_lr_drop(epochs: int, schedule: str = "iteration") -> int | None:
    """The epoch in which the learning rate first drops (MultiStepLR at 2/3 of training, docs/method.md §2.2)."""
    return None if schedule == "constant" else (2 * epochs) // 3


def window_notes(k: int, stop_epoch: int, epochs: int, schedule: str = "iteration") -> list[str]:
    """One-line warnings about an LBPE window that is not what the paper's LBPE is."""
    notes = []
    if k == stop_epoch:
        notes.append(f"LBPE with K={k} = stop epoch {stop_epoch} takes every epoch of [0, {stop_epoch}): it is the "
                     f"plain sum over that window (EL2N's), not a top-K choice; use --k below --stop-epoch")
    drop = first_lr_drop(epochs, schedule)
    if drop is not None and stop_epoch > drop:
        notes.append(f"LBPE's window [0, {stop_epoch}) runs past the first learning-rate drop (epoch {drop} of "
                     f"{epochs}); the paper's window is the first 10-20 % of training, before it")
    return notes


def check_lbpe(stop_epoch: int, k: int, epochs: int) -> None:
    if k < 1:
        raise UsageError(f"--k must be at least 1, got {k}")
    if stop_epoch < k:
        raise UsageError(f"stop epoch {stop_epoch} is smaller than K={k}: LBPE needs K epochs before the stop epoch",
                         "raise --stop-epoch or lower --k")
    if stop_epoch > epochs:
        raise UsageError(f"stop epoch {stop_epoch} is past the {epochs} epochs the dynamics recorded",
                         f"use --stop-epoch {epochs} or less")


def ccs_beta(dataset: str, ipc_from: int, ipc_to: int) -> float:
    """The reference's hard-cut ratio; a setting it never ran is a usage error, not a crash (docs/method.md §9.10)."""
    table = CCS_BETA.get(_dataset_key(dataset), {})
    if (ipc_from, ipc_to) not in table:
        known = "; ".join(f"{d} from IPC {', '.join(sorted({str(a) for a, _ in t}, key=int))}"
                          for d, t in CCS_BETA.items())
        raise UsageError(f"the reference has no CCS cut ratio for {dataset} {ipc_from}->{ipc_to}",
                         f"pass --ccs-beta (e.g. 0.3); its table covers {known}")
    return table[(ipc_from, ipc_to)]


# a dataset without a row of its own borrows the row of the reference dataset with as many classes
CCS_TWIN = {10: ("cifar10", "CIFAR-10"), 100: ("cifar100", "CIFAR-100")}


def ccs_beta_for(dataset: str, num_classes: int, ipc_from: int, ipc_to: int) -> tuple[float, str | None]:
    """(beta, note) for `yoco prune` and `yoco pipeline` alike: the reference's ratio for the dataset;
    for a dataset the reference never ran (digits, folder:...), the ratio of its dataset with as many
    classes at the same IPCs, and a note that says so; otherwise a usage error asking for --ccs-beta."""
    if _dataset_key(dataset) not in CCS_BETA and num_classes in CCS_TWIN:
        twin, label = CCS_TWIN[num_classes]
        beta = CCS_BETA[twin].get((ipc_from, ipc_to))
        if beta is not None:
            return beta, (f"no CCS cut ratio for {dataset} {ipc_from}->{ipc_to} in the reference; using "
                          f"{label}'s ({beta}), a dataset with as many classes (--ccs-beta sets another)")
    return ccs_beta(dataset, ipc_from, ipc_to), None


def cut_count(beta: float, n: int) -> int:
    """int(beta * n) in exact arithmetic: 0.29 * 100 is 28.999... in floats, 29 here (docs/method.md §9.17)."""
    if not 0.0 <= beta < 1.0:
        raise UsageError(f"--ccs-beta must lie in [0, 1), got {beta}")
    return int(Fraction(str(beta)) * n)
