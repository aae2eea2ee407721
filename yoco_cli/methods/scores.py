"""Every score of docs/method.md §3, one function per metric, registered by name.

The registry is the one list of metrics: a new score rule is one function under
`@register(Metric(name, source, high_is_hard, doc, label=..., options=...))` plus its test.
`select.rule_for`, the CLI's `--metric` choices, help and completion, `yoco score`, the main
table of `yoco report`, the pipeline's accepted metrics and the score stage's cache key
(`key_params`) all read it.

Dynamics-based scores read only the sufficient statistics of `yoco_cli.data.dynamics.Dynamics`
(err [E,N], correct [E,N], margin_sum [N], correct_num [E], loss_epoch [E]); model-based ones
(entropy, loss, and the features for ssp) need the final model of a dynamics run. Every
function returns (values [N] float32, info dict): info records what was actually used
(chosen epochs, window, options) so the score artifact says how each number was made.

Direction: `high_is_hard` in the registry. AUM is the one metric where high means easy.
Where the reference deviates from the original paper, the default is the reference (what
the paper measured) and the original is one keyword away:
  forgetting  never-learned samples score 0 (reference); never_learned="max" gives them
              max+1, i.e. "forgotten infinitely often", Toneva et al.'s rule, kept finite.
  aum         margins of *probabilities* summed over all epochs (reference). Pleiss et al.
              use logit margins; those equal log-probability margins (softmax shifts all
              logits of a sample by the same constant), but the dynamics artifact keeps only
              the probability-margin sum, so the logit version cannot be computed from it.
              mean=True divides by the epoch count (Pleiss's average; same ranking).
  ccs         scores are EL2N; the stratified selection lives in methods/select.py.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import UsageError
from . import presets


@dataclass(frozen=True)
class Metric:
    """One score or selection rule, declared once: every list of metrics (CLI choices and help,
    completion, selection defaults, report rows, the pipeline's accepted metrics, the reference
    file's keys, the score stage's cache key) is read from these fields."""
    name: str
    source: str          # "dynamics" | "model" | "selection" (ssp: chosen by k-means at prune time)
    high_is_hard: bool
    doc: str
    label: str = ""      # its row in `yoco report` ("EL2N"); the name when empty
    hard: bool = True    # the direction when the user gives none (docs/method.md §4.2)
    balanced: bool = False  # the balance when the user gives none
    directed: bool = True   # False: easy/hard means nothing (both share one cache entry)
    fixed_balance: bool = False  # True: the rule decides the balance itself (ccs's strata)
    reads: str | None = None     # selects by another metric's stored values (ccs reads el2n)
    version: int = 1     # bump when the same options now give other values: the score key follows
    options: Callable[[Resolved], dict[str, Any]] | None = None  # its keyword arguments from the options
    ref_keys: tuple[str, ...] = ()  # its keys in the reference's data-score pickle, preferred first
    aliases: tuple[str, ...] = ()   # other names `--metric` accepts (the reference's: yoco, ...)
    paper_row: int | None = None    # its row in the paper's Table 1; None: a row only where measured
    fn: Callable[..., tuple[Any, dict]] | None = None

    @property
    def needs_model(self) -> bool:
        """Reads the final model of a dynamics run, not only its recorded statistics."""
        return self.source != "dynamics"

    @property
    def stored(self) -> bool:
        """Computed by the score stage into the score table (ccs and ssp choose at prune time)."""
        return self.source in ("dynamics", "model") and self.reads is None

    @property
    def row_label(self) -> str:
        return self.label or self.name


REGISTRY: dict[str, Metric] = {}


def register(spec: Metric) -> Callable[[Callable[..., tuple[Any, dict]]], Callable[..., tuple[Any, dict]]]:
    """`@register(Metric(...))` over the function that computes it: a dynamics metric is called as
    `fn(dyn, **spec.options(resolved))`, a model metric as `fn(logits, labels)`."""
    def deco(fn: Callable[..., tuple[Any, dict]]) -> Callable[..., tuple[Any, dict]]:
        declare(replace(spec, fn=fn))
        return fn
    return deco


def declare(spec: Metric) -> Metric:
    """Add a metric to the registry (without a function: a selection rule such as ssp)."""
    taken = {n for m in REGISTRY.values() for n in (m.name, *m.aliases)}
    clash = [n for n in (spec.name, *spec.aliases) if n in taken]
    if clash:
        raise ValueError(f"metric name {clash[0]!r} is registered already")
    REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> Metric:
    """The metric by its name or one of its aliases (`yoco` is lbpe)."""
    if name in REGISTRY:
        return REGISTRY[name]
    for m in REGISTRY.values():
        if name in m.aliases:
            return m
    raise UsageError(f"unknown metric {name!r}", f"use one of {', '.join(REGISTRY)}")


def names() -> list[str]:
    """Every metric `--metric` accepts, in registry order."""
    return list(REGISTRY)


def choices_text(default: str | None = "lbpe") -> str:
    """The `--metric` help: every name, e.g. "lbpe (YOCO), el2n, ... or ssp (default: lbpe)."."""
    parts = [f"{m.name} ({m.label})" if m.label and m.label.lower() != m.name else m.name
             for m in REGISTRY.values()]
    tail = f" (default: {default})" if default else ""
    return f"{', '.join(parts[:-1])} or {parts[-1]}{tail}."


def stored() -> list[Metric]:
    """The metrics the score stage computes, in registry order."""
    return [m for m in REGISTRY.values() if m.stored]


def needs_model(metrics: list[str]) -> bool:
    """Whether any of these metrics reads the dynamics' final models."""
    return any(get(n).needs_model for n in metrics)


def paper_metrics() -> list[str]:
    """The rows of the paper's main table (Table 1), in its order."""
    rows = sorted((m.paper_row, m.name) for m in REGISTRY.values() if m.paper_row is not None)
    return [name for _, name in rows]


def table_order() -> list[Metric]:
    """Every metric in the main report table's order: the paper's rows, then the others as registered."""
    paper = paper_metrics()
    return [get(n) for n in paper] + [m for m in REGISTRY.values() if m.name not in paper]


# The stored metrics (and their versions) of score VERSION 1. While the registry stores exactly
# these, the score key stays as it was before the registry entered it (stores scored earlier keep
# their entries); any other set, or a bumped version, enters the key and scores afresh. History:
# never edit it, bump a metric's `version` instead.
_KEYED_AS_V1 = {"lbpe": 1, "el2n": 1, "forgetting": 1, "aum": 1, "random": 1, "entropy": 1, "loss": 1}


def key_params() -> dict[str, Any]:
    """What the registry adds to the score stage's params: {} for VERSION 1's metrics, else
    {"metrics": {name: version}} of every stored metric."""
    now = {m.name: m.version for m in stored()}
    return {} if now == _KEYED_AS_V1 else {"metrics": dict(sorted(now.items()))}


def reference_keys() -> dict[str, tuple[str, ...]]:
    """{metric: its keys in the reference's data-score pickle} for the stored metrics that have any."""
    return {m.name: m.ref_keys for m in stored() if m.ref_keys}


# -- epoch choice -------------------------------------------------------------------------------
def top_k_epochs(values, k: int, stop_epoch: int, largest: bool = True) -> list[int]:
    """The K best epochs in [0, stop_epoch), by one total order: best value first, ties by ascending epoch.

    largest=True ranks by descending value (correct_num), False by ascending (loss_epoch).
    `torch.topk` leaves ties to chance (docs/method.md §9.11); a stable sort of the negated key does not.
    """
    import numpy as np

    v = np.asarray(values[:stop_epoch].cpu().numpy() if hasattr(values, "cpu") else values[:stop_epoch],
                   dtype=np.float64)
    key = -v if largest else v
    return sorted(np.argsort(key, kind="stable")[:k].tolist())


def _rows_sum(err, rows: list[int]):
    """Sum of the chosen epochs' float32 errors, added in float64 and rounded once to float32."""
    import torch

    if not rows:
        return torch.zeros(err.shape[1], dtype=torch.float32)
    return err[rows].double().sum(0).float()


# -- dynamics-based -----------------------------------------------------------------------------
@register(Metric("lbpe", "dynamics", True, "sum of ||p - e_y|| over the K epochs of highest training accuracy "
                 "before stop_epoch", label="YOCO", hard=False, balanced=True, aliases=("yoco",), paper_row=7,
                 options=lambda r: {"k": r.k, "stop_epoch": r.stop, "use_loss": r.opts.use_loss}))
def lbpe(dyn, k: int, stop_epoch: int, use_loss: bool = False):
    presets.check_lbpe(stop_epoch, k, dyn.epochs)
    if use_loss:
        epochs = top_k_epochs(dyn.loss_epoch, k, stop_epoch, largest=False)
    else:
        epochs = top_k_epochs(dyn.correct_num, k, stop_epoch, largest=True)
    return _rows_sum(dyn.err, epochs), {"k": k, "stop_epoch": stop_epoch, "use_loss": use_loss, "epochs": epochs}


@register(Metric("el2n", "dynamics", True, "sum of ||p - e_y|| over an epoch window, [0, 10) by default",
                 label="EL2N", ref_keys=("el2n", "LBPE_0_10"), paper_row=5,
                 options=lambda r: {"start": r.opts.el2n_window[0], "end": r.opts.el2n_window[1]}))
def el2n(dyn, start: int = 0, end: int = 10):
    if not 0 <= start < end:
        raise UsageError(f"bad EL2N window [{start}, {end})", "give START:END with 0 <= START < END")
    if start >= dyn.epochs:
        raise UsageError(f"EL2N window [{start}, {end}) starts after the {dyn.epochs} recorded epochs")
    stop = min(end, dyn.epochs)  # short dynamics (tests, digits): the window is what exists
    return _rows_sum(dyn.err, list(range(start, stop))), {"window": [start, stop]}


@register(Metric("forgetting", "dynamics", True, "number of correct -> wrong transitions over all epochs",
                 label="Forgetting", ref_keys=("forgetting",), paper_row=4,
                 options=lambda r: {"never_learned": r.opts.never_learned}))
def forgetting(dyn, never_learned: str = "zero"):
    import torch

    c = dyn.correct
    # last_i starts at 0, so epoch 0 can never be a forgetting event: count 1 -> 0 between epochs t-1, t.
    # In blocks of epochs: one [E, N] temporary would cost ~100 MB at CIFAR-100 IPC 50 size.
    f = torch.zeros(c.shape[1], dtype=torch.int32)
    for s in range(1, c.shape[0], 128):
        e = min(c.shape[0], s + 128)
        f += (c[s - 1:e - 1] & ~c[s:e]).sum(0, dtype=torch.int32)
    f = f.float()
    info: dict = {"never_learned": never_learned}
    if never_learned == "max":
        never = ~c.any(0)
        f = f.clone()
        f[never] = float(f.max()) + 1 if f.numel() else 0.0
        info["never_learned_count"] = int(never.sum())
    elif never_learned != "zero":
        raise UsageError(f"unknown never-learned rule {never_learned!r}", "use zero (reference) or max (Toneva)")
    return f, info


@register(Metric("aum", "dynamics", False, "sum over epochs of p_y - max_{k!=y} p_k (probabilities); high = easy",
                 label="AUM", ref_keys=("accumulated_margin",), aliases=("accumulated_margin",), paper_row=3,
                 options=lambda r: {"mean": r.opts.aum_mean}))
def aum(dyn, mean: bool = False):
    v = dyn.margin_sum.float()
    if mean:
        v = v / max(dyn.epochs, 1)
    return v, {"space": "probability", "mean": mean}


@register(Metric("ccs", "dynamics", True, "EL2N scores, selected by coverage-centric stratified sampling",
                 label="CCS", directed=False, fixed_balance=True, reads="el2n", paper_row=6))
def ccs(dyn, start: int = 0, end: int = 10):
    v, info = el2n(dyn, start, end)
    return v, {**info, "score": "el2n"}


@register(Metric("random", "dynamics", True, "a seeded random permutation (same for every run)",
                 label="Random", directed=False, paper_row=0, options=lambda r: {"seed": r.opts.seed}))
def random_scores(dyn, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(dyn.num_samples, generator=g).float(), {"seed": int(seed)}


# -- model-based (final model, eval mode, decoded images, no augmentation) ----------------------
@register(Metric("entropy", "model", True, "entropy of the final model's softmax on the un-augmented image",
                 label="Entropy", ref_keys=("entropy",), paper_row=2))
def entropy(logits, y):
    q = logits.softmax(1)
    return -(q * (q + 1e-10).log()).sum(1), {}


@register(Metric("loss", "model", True, "cross-entropy of the final model on the un-augmented image",
                 label="Loss", ref_keys=("loss",)))
def loss(logits, y):
    import torch.nn.functional as F

    return F.cross_entropy(logits, y, reduction="none"), {}


declare(Metric("ssp", "selection", True, "k-means prototypes on the final model's embedding (chosen at prune time)",
               label="SSP", directed=False, aliases=("kmeans",), paper_row=1))


def logit_scores(logits, y) -> dict:
    """Every model-based score per sample from the final model's eval-mode logits (docs/method.md §3.6)."""
    return {m.name: m.fn(logits, y)[0] for m in stored() if m.source == "model" and m.fn is not None}


# -- all scores of several runs ----------------------------------------------------------------
@dataclass
class ScoreOptions:
    k: int | None = None
    stop_epoch: int | None = None
    use_loss: bool = False
    el2n_window: tuple[int, int] = (0, 10)
    never_learned: str = "zero"
    aum_mean: bool = False
    seed: int = 0

    def __post_init__(self):
        """Checks that need no dynamics, so a bad option fails before any training starts. The checks
        against the recorded epoch count follow in `lbpe` once the dynamics exist."""
        if self.k is not None and self.k < 1:
            raise UsageError(f"--k must be at least 1, got {self.k}")
        if self.stop_epoch is not None and self.stop_epoch < 1:
            raise UsageError(f"--stop-epoch must be at least 1, got {self.stop_epoch}",
                             "LBPE looks at the epochs before it, e.g. --stop-epoch 100")
        if self.k is not None and self.stop_epoch is not None:
            presets.check_lbpe(self.stop_epoch, self.k, self.stop_epoch)
        a, b = self.el2n_window
        if not 0 <= a < b:
            raise UsageError(f"bad EL2N window [{a}, {b})", "give START:END with 0 <= START < END")

    def check_epochs(self, epochs: int) -> None:
        """Against the dynamics that will be recorded (or read): fail now, not after training."""
        if self.stop_epoch is not None and self.stop_epoch > epochs:
            raise UsageError(f"--stop-epoch {self.stop_epoch} is past the {epochs} epochs the dynamics will record",
                             f"use --stop-epoch {epochs} or less (or more --dynamics-epochs)")
        if self.el2n_window[0] >= epochs:
            raise UsageError(f"the EL2N window starts at epoch {self.el2n_window[0]}, after the {epochs} epochs the "
                             f"dynamics will record", "start it earlier")

    def as_params(self) -> dict:
        return {"k": self.k, "stop_epoch": self.stop_epoch, "use_loss": self.use_loss,
                "el2n_window": list(self.el2n_window), "never_learned": self.never_learned,
                "aum_mean": self.aum_mean, "seed": self.seed}


@dataclass(frozen=True)
class Resolved:
    """The score options with LBPE's (K, stop) resolved from the preset: what a metric's `options` reads."""
    opts: ScoreOptions
    k: int
    stop: int


def dynamics_scores(dyn, opts: ScoreOptions, setting: tuple[str | None, str]) -> tuple[dict, dict]:
    """Every dynamics-based score of one run -> ({metric: values}, {metric: info})."""
    preset = presets.lbpe_preset(setting[0], setting[1], dyn.epochs)
    k = opts.k if opts.k is not None else preset.k
    stop = opts.stop_epoch if opts.stop_epoch is not None else preset.stop_epoch
    resolved = Resolved(opts, k, stop)
    values, infos = {}, {}
    for m in stored():
        if m.source == "dynamics" and m.fn is not None:
            values[m.name], infos[m.name] = m.fn(dyn, **(m.options(resolved) if m.options else {}))
    if "lbpe" in infos:
        infos["lbpe"].update(lbpe_window_info(preset, opts, k, stop, dyn))
    return values, infos


def lbpe_window_info(preset, opts: ScoreOptions, k: int, stop: int, dyn) -> dict:
    """What the score artifact and `yoco score` say about LBPE's window: where (K, stop) came from
    ("unscaled": the reference's 1000-epoch values as they are; "scaled": both scaled to this run's
    length; "user": --k/--stop-epoch), and one-line warnings when it is not the paper's LBPE."""
    given = [name for name, v in (("k", opts.k), ("stop_epoch", opts.stop_epoch)) if v is not None]
    window = "user" if given else ("scaled" if preset.scaled else "unscaled")
    schedule = ((dyn.meta or {}).get("train") or {}).get("schedule", "iteration")
    return {"preset": preset.as_dict() | {"used": not given}, "window": window, "given": given,
            "warnings": presets.window_notes(k, stop, dyn.epochs, schedule)}


def describe_lbpe(info: dict) -> str:
    """One line, e.g. "LBPE window: top K=1 of epochs [0, 10) by training accuracy (K < stop; scaled: ...)"."""
    k, stop = info.get("k"), info.get("stop_epoch")
    by = "lowest training loss" if info.get("use_loss") else "training accuracy"
    rel = "K < stop" if k is not None and stop is not None and k < stop else "K = stop: the whole window"
    window = info.get("window")
    if window == "user":
        how = "set by --" + " and --".join(n.replace("_", "-") for n in info.get("given", []))
    elif window in ("scaled", "unscaled"):
        how = f"{window}: {(info.get('preset') or {}).get('source', '')}"
    else:
        how = "as stored"
    return f"LBPE window: top K={k} of epochs [0, {stop}) by {by} ({rel}; {how})"


def average(per_seed: list):
    import torch

    return torch.stack([v.float() for v in per_seed]).mean(0)


# -- summary ------------------------------------------------------------------------------------
def ranks(values):
    """Average ranks (ties share the mean of their positions), as Spearman's rho needs."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    sv = v[order]
    r = np.empty(len(v), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sv[1:] != sv[:-1]])
    ends = np.r_[starts[1:], len(v)]
    for s, e in zip(starts, ends):
        r[order[s:e]] = (s + e - 1) / 2.0
    return r


def spearman(a, b) -> float | None:
    import numpy as np

    ra, rb = ranks(a), ranks(b)
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])
