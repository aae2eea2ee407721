"""`yoco dynamics SET`: train seeded models on a condensed set and record their training dynamics."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from . import output
from .common import (
    AddressOpt,
    DeviceOpt,
    ExecutorOpt,
    JsonOpt,
    MaxParallelOpt,
    complete_set_refs,
    get_store,
    say_where,
    set_json,
)
from .training_options import check_switches, options

TRAIN_PANEL = "Training (defaults: the dataset's preset, docs/method.md §2)"
TRAIN = options("dynamics", TRAIN_PANEL, "seeds")
REF_PANEL = "Reading the reference's files"


def register(app: typer.Typer) -> None:
    app.command("dynamics")(dynamics_cmd)


def dynamics_cmd(
    target: Annotated[str, typer.Argument(
        metavar="SET", help="A condensed set: name, key prefix or file.", autocompletion=complete_set_refs,
        show_default=False)],
    seeds: Annotated[int, typer.Option("--seeds", help="Number of runs (seeds 0..N-1), as the paper's 3.")] = 3,
    epochs: Annotated[int | None, TRAIN.epochs] = None,
    batch_size: Annotated[int | None, TRAIN.batch_size] = None,
    lr: Annotated[float | None, TRAIN.lr] = None,
    model: Annotated[str | None, TRAIN.model] = None,
    aug: Annotated[str | None, TRAIN.aug] = None,
    cutmix: Annotated[float | None, TRAIN.cutmix] = None,
    test_every: Annotated[int | None, typer.Option(
        "--test-every", help="Also test on the real test split every K epochs (off by default: no score uses it).",
        rich_help_panel=TRAIN_PANEL, show_default=False)] = None,
    batched: Annotated[str, TRAIN.batched] = "auto",
    compile_: Annotated[str, TRAIN.compile] = "auto",
    from_file: Annotated[list[Path] | None, typer.Option(
        "--from-file", help="Read the reference's td-ipc*.pickle instead of training (repeat: one per seed). "
                            "No code in it runs; a pickle that asks to run code is refused (exit 3).",
        rich_help_panel=REF_PANEL, show_default=False)] = None,
    checkpoint: Annotated[list[Path] | None, typer.Option(
        "--checkpoint", help="The reference's ckpt-last.pt for each --from-file (final weights, for "
                             "entropy/loss/ssp).", rich_help_panel=REF_PANEL, show_default=False)] = None,
    records: Annotated[bool, typer.Option(
        "--records", help="Also keep every batch's float16 log-probabilities, the reference's per-batch records "
                          "(what --export writes). Costs (2 x classes + 4) bytes per image and epoch: ~11 MB for "
                          "CIFAR-10 IPC 10 over 1000 epochs, ~4.2 GB for CIFAR-100 IPC 50. Cached apart from runs "
                          "without records.", rich_help_panel=REF_PANEL)] = False,
    export: Annotated[Path | None, typer.Option(
        "--export", help="Write each seed's run as the reference's td-*.pickle (needs --records). Several seeds: "
                         "{seed} in the name is replaced (else -seedN is added).", rich_help_panel=REF_PANEL,
        show_default=False)] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="Name for the result (default: SET@dynamics).", show_default=False)] = None,
    device: DeviceOpt = "auto",
    executor: ExecutorOpt = None,
    address: AddressOpt = None,
    max_parallel: MaxParallelOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Record training dynamics (per-epoch, per-sample statistics + final weights) of a condensed set.

    Runs are cached per seed: asking for more seeds later trains only the new ones, and an
    interrupted run resumes from its last checkpoint.
    Examples: `yoco dynamics digits/random/ipc10 --seeds 3`,
    `yoco dynamics idc/cifar10/ipc10 --from-file td-ipc10.pickle --checkpoint ckpt-last.pt`,
    `yoco dynamics digits/dm/ipc10 --records --export td-ipc10.pickle`
    """
    from ..stages import dynamics as dynamics_stage
    from ..stages.importing import resolve_set

    o = set_json(json_)
    store = get_store()
    if name is not None:
        store.check_ref_name(name)
    check_switches(batched=batched, compile=compile_)
    if export is not None:
        _check_export(export, records, from_file, seeds)
    set_m, cset = resolve_set(store, target)
    if from_file:
        if checkpoint and len(checkpoint) != len(from_file):
            raise UsageError(f"{len(checkpoint)} --checkpoint for {len(from_file)} --from-file",
                             "give one checkpoint per dynamics file")
        o.info(f"reading {len(from_file)} reference dynamics file(s) for {target}")
        group, info = dynamics_stage.import_dynamics(store, set_m, cset, list(from_file), list(checkpoint or []),
                                                     model=model, ref=name)
    else:
        if checkpoint:
            raise UsageError("--checkpoint goes with --from-file", "drop it to train here")
        from ..executors import Setting
        from ..stages.sweep import Pool

        with Pool(Setting.parse(executor, address, max_parallel)) as pool:
            group, info = _train(o, store, set_m, cset, seeds=seeds, device=device, batched=batched, ref=name,
                                 epochs=epochs, batch_size=batch_size, lr=lr, model=model, aug=aug, cutmix=cutmix,
                                 test_every=test_every, compile=compile_, records=records, pool=pool)
        say_where(o, pool.summary())
    written = []
    if export is not None:
        for path in dynamics_stage.export_reference(store, group, export).values():
            o.info(f"wrote {path}")
            written.append(str(path))
    _report(o, store, group, info, written)


def _check_export(export: Path, records: bool, from_file, seeds: int) -> None:
    """--export needs recorded batches: refuse it (and a bad destination) before anything trains."""
    from ..files import check_output_file
    from ..stages.dynamics import export_paths

    if from_file:
        raise UsageError("--export writes runs recorded here with --records; --from-file files already are "
                         "td-*.pickle files", "drop --export (or --from-file)")
    if not records:
        raise UsageError("--export writes the per-batch records of a run, which are kept only with --records",
                         "add --records (the run is then trained, or taken from the cache, with its records)")
    for path in export_paths(export, list(range(seeds))).values():
        check_output_file(path)


def _train(o, store, set_m, cset, seeds: int, **kw):
    from ..stages import dynamics as dynamics_stage

    with o.progress() as prog:
        tasks: dict[tuple, int] = {}

        def on_epoch(ev) -> None:
            key = tuple(ev.seeds)
            if key not in tasks:
                label = f"seed {ev.seeds[0]}" if len(ev.seeds) == 1 else f"seeds {ev.seeds[0]}-{ev.seeds[-1]}"
                tasks[key] = prog.add_task(label, total=ev.epochs, status="")
            loss = sum(ev.loss) / len(ev.loss)
            acc = sum(ev.acc) / len(ev.acc)
            test = f" test {sum(ev.test_acc) / len(ev.test_acc):.3f}" if ev.test_acc else ""
            prog.update(tasks[key], completed=ev.epoch + 1, status=f"loss {loss:.3f} acc {acc:.3f}{test}")

        return dynamics_stage.compute_dynamics(store, set_m, cset, seeds=seeds, on_epoch=on_epoch, reporter=o,
                                               **kw)


def _report(o, store, group, info, exported: list[str] | None = None) -> None:
    from ..stages import dynamics as dynamics_stage

    rows = dynamics_stage.summary_rows(store, group)
    computed = set(info.get("computed") or [])
    refs = store.refs_to(group.stage, group.key)
    meta = group.meta
    o.info(f"dynamics {refs[0] if refs else group.short}: {meta['summary']}"
           + ("" if computed or meta.get("source") != "engine" else " (cached)"))
    table_rows = [[r["seed"], r["epochs"], _f(r["final_loss"]), _f(r["final_acc"]), _f(r["test_acc"]),
                   "cached" if r["seed"] not in computed and meta.get("source") == "engine" else
                   (f"{r['seconds']:.1f} s" if r["seconds"] is not None else "")] for r in rows]
    tbl = output.table(None, ["seed", "epochs", "final loss", "train acc", "test acc", "time"], table_rows)
    o.data({"ref": refs[0] if refs else None, "key": group.key, "dataset": meta["dataset"],
            "num_samples": meta["num_samples"], "epochs": meta["epochs"], "seeds": meta["seeds"],
            "model": meta.get("model"), "source": meta.get("source"), "computed": sorted(computed),
            "records": bool(meta.get("records")), "exported": exported or [], "runs": rows}, tbl)


def _f(v):
    return None if v is None else round(float(v), 4)
