"""`yoco eval SET`: the paper's evaluation protocol (spec 5) on the real test split, cached."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..errors import UsageError
from . import output
from .common import DeviceOpt, JsonOpt, complete_set_refs, get_store, set_json

TRAIN_PANEL = "Training (defaults: the dataset's preset, spec section 5)"


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)


def eval_cmd(
    targets: Annotated[list[str], typer.Argument(
        metavar="SET...", help="Condensed or pruned sets (name, key prefix or file), or a dataset name "
                               "(e.g. digits) for its full training split.", autocompletion=complete_set_refs,
        show_default=False)],
    repeats: Annotated[int, typer.Option("--repeats", help="Seeded training runs per set (seeds 0..N-1).")] = 3,
    model: Annotated[Optional[str], typer.Option(
        "--model", help="Cross-architecture: convnet | resnet10_bn | densenet | resnet10_ap | resnet18_bn | "
                        "tv:NAME, options as convnet:width=64 (preset: ConvNet-3; ResNetAP-10 for imagenet10).",
        rich_help_panel=TRAIN_PANEL, show_default=False)] = None,
    epochs: Annotated[Optional[int], typer.Option(
        "--epochs", help="Epochs (preset 1000; digits 200; imagenet10 by IPC).", rich_help_panel=TRAIN_PANEL,
        show_default=False)] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", help="Batch size (preset 64).", rich_help_panel=TRAIN_PANEL, show_default=False)] = None,
    lr: Annotated[Optional[float], typer.Option(
        "--lr", help="SGD learning rate (preset 0.01).", rich_help_panel=TRAIN_PANEL, show_default=False)] = None,
    aug: Annotated[Optional[str], typer.Option(
        "--aug", help="DSA strategy (preset color_crop_flip_scale_rotate; imagenet10 none), or none.",
        rich_help_panel=TRAIN_PANEL, show_default=False)] = None,
    cutmix: Annotated[Optional[float], typer.Option(
        "--cutmix", help="CutMix probability per batch (preset 0.5; imagenet10 1.0).", rich_help_panel=TRAIN_PANEL,
        show_default=False)] = None,
    full: Annotated[bool, typer.Option(
        "--full", help="Evaluate the full real training split of each SET's dataset instead of the set.")] = False,
    batched: Annotated[str, typer.Option(
        "--batched", help="auto | on | off: train the repeats as one stacked model (auto: on CUDA).",
        rich_help_panel=TRAIN_PANEL)] = "auto",
    compile_: Annotated[str, typer.Option(
        "--compile", help="auto | on | off: torch.compile the model (auto: long CPU runs on >= 32 px).",
        rich_help_panel=TRAIN_PANEL)] = "auto",
    device: DeviceOpt = "auto",
    json_: JsonOpt = False,
) -> None:
    """Train fresh networks on each set and report test accuracy (best and last: mean ± std over repeats).

    Examples: `yoco eval digits/random/ipc10 digits/random/ipc1 digits --repeats 3`,
    `yoco eval idc/cifar10/ipc10 --model resnet10_bn`
    """
    o = set_json(json_)
    store = get_store()
    for opt, value in (("--batched", batched), ("--compile", compile_)):
        if value not in ("auto", "on", "off"):
            raise UsageError(f"{opt} {value!r}", "use auto, on or off")
    params = dict(repeats=repeats, model=model, epochs=epochs, batch_size=batch_size, lr=lr, aug=aug,
                  cutmix=cutmix, batched=batched, compile=compile_, device=device)
    resolved = [_resolve(store, t, full) for t in targets]  # fail on a bad name before any training
    rows = []
    with o.progress() as prog:
        for label, set_m, cset, dataset in resolved:
            rows.append(_one(prog, store, label, set_m, cset, dataset, params))
    tbl = output.table(None, ["set", "model", "epochs", "images", "repeats", "best (mean ± std)",
                              "last (mean ± std)", "cache"],
                       [[r["target"], r["model"], r["epochs"], r["train_images"], r["repeats"],
                         f"{100 * r['best_mean']:.2f} ± {100 * r['best_std']:.2f}",
                         f"{100 * r['last_mean']:.2f} ± {100 * r['last_std']:.2f}",
                         "hit" if r["cached"] else ""] for r in rows])
    o.data(rows, tbl)


def _resolve(store, target: str, full: bool):
    """-> (label, set manifest or None, set or None, dataset for a full-split evaluation)."""
    from ..stages.datasets import known
    from ..stages.sets import resolve_set

    try:
        set_m, cset = resolve_set(store, target)
    except UsageError:
        if target in known() or target.startswith("folder:"):
            return target, None, None, target
        raise
    if full:
        return cset.dataset, None, None, cset.dataset
    return target, set_m, cset, None


def _one(prog, store, label, set_m, cset, dataset, params) -> dict:
    from ..stages import evaluate as E

    task = prog.add_task(f"eval {label}", total=None, status="")

    def on_epoch(ev) -> None:
        t = prog.tasks[task]
        if t.total is None:
            prog.update(task, total=params["repeats"] * ev.epochs)
        test = f" test {max(ev.test_acc):.3f}" if ev.test_acc else ""
        prog.update(task, advance=len(ev.seeds), status=f"seed {ev.seeds[0]} loss {ev.loss[0]:.3f}{test}")

    m, info = E.run_eval(store, set_m, cset, dataset, on_epoch=on_epoch, **params)
    prog.update(task, visible=False)
    return E.result_row(m, cached=not info["computed"])
