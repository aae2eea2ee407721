"""What `yoco show --png` and `yoco report --html` draw, read from the store (data/preview.py draws).

An unpruned set: its stored images, one row per class, its class names at the left. A pruned set:
its parent's decoded images per class (the pruning unit, docs/method.md §4.1), the kept ones framed,
each with the score its rule ranked it by under it (the score artifact named by the prune run's
inputs, the run the set was pruned with; the mean over runs for mean-scores sets).
"""
from __future__ import annotations

import json
from dataclasses import replace

from ..data import preview
from ..errors import IntegrityError
from ..store import Manifest, Store
from .sets import all_sets, load_set, set_label

KNOWN_NAMES = {"cifar10": "CIFAR10_CLASSES"}  # datasets whose class names yoco knows without a download


def class_names(m: Manifest, num_classes: int) -> list[str]:
    """The names recorded with the set (condensed ones), else the dataset's known ones, else numbers."""
    names = m.meta.get("class_names")
    if not names and m.meta.get("set", {}).get("dataset") in KNOWN_NAMES:
        from ..data import readers

        names = getattr(readers, KNOWN_NAMES[m.meta["set"]["dataset"]])
    return preview.class_labels(names, num_classes)


def is_pruned(m: Manifest) -> bool:
    return bool(m.meta.get("pruned")) and "indices" in m.outputs


def set_png(store: Store, m: Manifest, cset, per_row: int = 20) -> bytes:
    """A pruned set's selection, or an unpruned set's labelled grid."""
    if is_pruned(m):
        return preview.selection_png(selection(store, m), per_row)
    return preview.grid_png(cset, per_row, class_names(m, cset.num_classes))


def parent_of(store: Store, m: Manifest) -> Manifest:
    digest = m.inputs.get("set")
    for s in all_sets(store):
        if s.digest("set") == digest:
            return s
    raise IntegrityError(f"the set {set_label(store, m)} was pruned from a set that is no longer in the store",
                         "its picture needs the parent's images: fetch or condense the parent again")


def selection(store: Store, m: Manifest) -> preview.Selection:
    """The parent's decoded images, which `m` kept, and the scores they were chosen by."""
    import torch

    info = m.meta["pruned"]
    parent_m = parent_of(store, m)
    parent = load_set(store, parent_m)
    images, labels, _ = parent.decoded()
    shown = preview.to_display(replace(parent, images=images, labels=labels, factor=1, ipc=None))
    kept = torch.zeros(len(labels), dtype=torch.bool)
    kept[json.loads(store.read_output(m, "indices").data)["indices"]] = True
    scores, what = _scores(store, m, info)
    title = (f"{set_label(store, m)}: {int(kept.sum())} of {len(labels)} kept (framed)"
             + (f"; under each its {what}, lowest first" if scores is not None else f"; {_no_score(info)}"))
    return preview.Selection(shown, labels, kept, scores, class_names(parent_m, parent.num_classes), title)


def _scores(store: Store, m: Manifest, info: dict):
    """(the score vector the rule ranked by, a phrase naming it) or (None, None)."""
    digest, metric = m.inputs.get("scores"), info.get("metric")
    if not digest or metric is None or metric in ("random", "ssp"):  # ssp may read a stored k-means list, no score
        return None, None
    from .score import load_scores

    sm = next((s for s in store.all_runs("score") if s.outputs.get("scores", {}).get("digest") == digest), None)
    if sm is None:
        return None, None
    run = info.get("score_run")
    base = "el2n" if metric == "ccs" else metric  # CCS stratifies by EL2N
    table = load_scores(store, sm)
    which = f"run {run}" if run is not None else f"mean over {table.runs} runs"
    return table.values(metric, run), f"{base} score ({which}, scores {sm.short})"


def _no_score(info: dict) -> str:
    if info.get("metric") == "random":
        return f"a seeded random draw (seed {info.get('seed', 0)}), no score"
    if info.get("metric") == "ssp":
        return "chosen by k-means on the model's features, no score"
    return "its scores are no longer in the store"
