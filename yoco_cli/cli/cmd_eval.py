"""`yoco eval SET`: the paper's evaluation protocol (docs/method.md §5) on the real test split, cached."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import UsageError
from . import output
from .common import (
    AddressOpt,
    DeviceOpt,
    ExecutorOpt,
    JsonOpt,
    MaxParallelOpt,
    complete_sets_or_folder,
    get_store,
    say_where,
    set_json,
)
from .training_options import check_switches, options

if TYPE_CHECKING:  # imported lazily at run time: `yoco --help` must not load torch
    from ..data.condensed import CondensedSet
    from ..store import Manifest

TRAIN_PANEL = "Training (defaults: the dataset's preset, docs/method.md §5)"
TRAIN = options("eval", TRAIN_PANEL, "repeats")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)


def eval_cmd(
    targets: Annotated[list[str], typer.Argument(
        metavar="SET...", help="Condensed or pruned sets (name, key prefix or file), or a dataset name "
                               "(e.g. digits) for its full training split.", autocompletion=complete_sets_or_folder,
        show_default=False)],
    repeats: Annotated[int, typer.Option("--repeats", help="Seeded training runs per set (seeds 0..N-1).")] = 3,
    model: Annotated[str | None, TRAIN.model] = None,
    epochs: Annotated[int | None, TRAIN.epochs] = None,
    batch_size: Annotated[int | None, TRAIN.batch_size] = None,
    lr: Annotated[float | None, TRAIN.lr] = None,
    aug: Annotated[str | None, TRAIN.aug] = None,
    cutmix: Annotated[float | None, TRAIN.cutmix] = None,
    full: Annotated[bool, typer.Option(
        "--full", help="Evaluate the full real training split of each SET's dataset instead of the set.")] = False,
    batched: Annotated[str, TRAIN.batched] = "auto",
    compile_: Annotated[str, TRAIN.compile] = "auto",
    device: DeviceOpt = "auto",
    executor: ExecutorOpt = None,
    address: AddressOpt = None,
    max_parallel: MaxParallelOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Train fresh networks on each set and report test accuracy (best and last: mean ± std over repeats).

    A name from `yoco prune` that holds one set per dynamics run is evaluated run by run and
    reported as one row pooled over runs x repeats, as the paper averages its three score files.
    Examples: `yoco eval digits/random/ipc10 digits/random/ipc1 digits --repeats 3`,
    `yoco eval idc/cifar10/ipc10 --model resnet10_bn`
    """
    o = set_json(json_)
    store = get_store()
    check_switches(batched=batched, compile=compile_)
    params = {"repeats": repeats, "model": model, "epochs": epochs, "batch_size": batch_size, "lr": lr, "aug": aug,
              "cutmix": cutmix, "batched": batched, "compile": compile_, "device": device}
    resolved = [_resolve(store, t, full) for t in targets]  # fail on a bad name before any training
    rows = []
    from ..executors import Setting
    from ..stages.sweep import Pool

    # one executor for every target (workers start once); each target's repeats are one sweep on it
    with o.progress() as prog, Pool(Setting.parse(executor, address, max_parallel)) as pool:
        for entry in resolved:
            if isinstance(entry, _Group):
                from ..stages.evaluate import pooled_row

                rows.append(pooled_row(entry.label, [_one(o, prog, store, *member, params, pool)
                                                     for member in entry.members]))
                continue
            label, set_m, cset, dataset = entry
            rows.append(_one(o, prog, store, label, set_m, cset, dataset, params, pool))
    say_where(o, pool.summary())
    # JSON keeps accuracies as fractions of the test set (as stored); the table shows percent
    rows = [{**r, "unit": "fraction"} for r in rows]
    tbl = output.table(None, ["set", "model", "epochs", "images", "repeats", "best % (mean ± std)",
                              "last % (mean ± std)", "cache"],
                       [[r["target"], r["model"], r["epochs"], r["train_images"], r["repeats"],
                         f"{100 * r['best_mean']:.2f} ± {100 * r['best_std']:.2f}",
                         f"{100 * r['last_mean']:.2f} ± {100 * r['last_std']:.2f}",
                         "hit" if r["cached"] else ""] for r in rows])
    tbl.columns[0].min_width = max(len(str(r["target"])) for r in rows)  # names are what people copy
    o.data(rows, tbl)


class _Group:
    """A prune group: its name and its members as (label, set manifest, set, None)."""

    def __init__(self, label: str, members: list[tuple[str, Manifest, CondensedSet, None]]):
        self.label, self.members = label, members


def _resolve(store, target: str, full: bool):
    """-> (label, set manifest or None, set or None, dataset for a full-split evaluation), or a _Group."""
    from ..stages.datasets import known
    from ..stages.importing import resolve_set
    from ..stages.prune import group_sets
    from ..stages.sets import load_set, set_label

    group = _prune_group(store, target)
    if group is not None:
        members = [(set_label(store, m), m, load_set(store, m), None) for m in group_sets(store, group)]
        if full:  # the full training split of its sets' dataset
            return members[0][2].dataset, None, None, members[0][2].dataset
        return _Group(target, members)
    try:
        set_m, cset = resolve_set(store, target)
    except UsageError:
        if target in known() or target.startswith("folder:"):
            return target, None, None, target
        raise
    if full:
        return cset.dataset, None, None, cset.dataset
    return target, set_m, cset, None


def _prune_group(store, target: str):
    """The prune-group manifest a name points to, or None (any other name, a path, a dataset)."""
    from pathlib import Path

    if Path(target).exists() and not store.ref_path(target).exists():
        return None
    try:
        m = store.resolve(target, what="condensed set")
    except UsageError:
        return None
    return m if m.stage == "prune-group" else None


def _one(o, prog, store, label, set_m, cset, dataset, params, pool) -> dict:
    from ..stages import evaluate as eval_stage

    task = prog.add_task(f"eval {label}", total=None, status="")

    def on_epoch(ev) -> None:
        t = prog.tasks[task]
        if t.total is None:
            prog.update(task, total=params["repeats"] * ev.epochs)
        test = f" test {max(ev.test_acc):.3f}" if ev.test_acc else ""
        prog.update(task, advance=len(ev.seeds), status=f"seed {ev.seeds[0]} loss {ev.loss[0]:.3f}{test}")

    m, info = eval_stage.run_eval(store, set_m, cset, dataset, on_epoch=on_epoch, reporter=o, pool=pool,
                                  **params)
    prog.update(task, visible=False)
    return eval_stage.result_row(m, cached=not info["computed"])
