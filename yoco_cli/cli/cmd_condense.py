"""`yoco condense`: make a condensed set from a real dataset (IDC, DM, or a real-image baseline)."""
from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from . import output
from .common import DeviceOpt, JsonOpt, SeedOpt, complete_datasets, complete_methods, get_store, method_help, set_json


def register(app: typer.Typer) -> None:
    app.command("condense")(condense)


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}", "e.g. --set lr_img=0.01")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def condense(
    dataset: Annotated[str, typer.Argument(help="Real dataset: digits, cifar10, cifar100, imagenet10, ... or folder:PATH.",
                                           autocompletion=complete_datasets)],
    ipc: Annotated[int, typer.Option("--ipc", help="Stored images per class.")] = 10,
    method: Annotated[str, typer.Option("--method", help=method_help(),
                                                 autocompletion=complete_methods)] = "idc",
    factor: Annotated[int | None, typer.Option("--factor", show_default="2; 3 for imagenet10",
                                                  help="Multi-formation factor: each stored image holds f x f images.")] = None,
    iterations: Annotated[int | None, typer.Option("--iterations", "-n", show_default="preset",
                                                      help="Outer iterations (idc) or iterations (dm).")] = None,
    lr_img: Annotated[float | None, typer.Option("--lr-img", show_default="preset",
                                                    help="Image learning rate (idc: before IDC's IPC/size scaling).")] = None,
    batch_real: Annotated[int | None, typer.Option("--batch-real", show_default="preset",
                                                      help="Real images per class per matching step.")] = None,
    model: Annotated[str | None, typer.Option("--model", show_default="preset",
                                                 help="Network used for matching, e.g. convnet or convnet:width=64,depth=2.")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="Any other method setting, KEY=VALUE (repeatable); "
                                            "see the settings in `yoco condense DATASET --show-settings`.")] = None,
    show_settings: Annotated[bool, typer.Option("--show-settings", help="Print the resolved settings and exit.")] = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    checkpoint_every: Annotated[int | None, typer.Option("--checkpoint-every", show_default="50; 0 = off",
                                                            help="Checkpoint every N iterations; a rerun resumes.")] = None,
    name: Annotated[str | None, typer.Option("--name", show_default="DATASET/METHOD/ipcN",
                                                help="Name for the result in the cache.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Condense DATASET to IPC images per class.

    Examples: `yoco condense digits --ipc 10`, `yoco condense digits --ipc 10 --method dm`,
    `yoco condense cifar10 --ipc 10 --method idc --device cuda`.
    """
    from ..stages import condense as stage

    o = set_json(json_)
    overrides = _parse_sets(sets or [])
    for key, value in (("iterations", iterations), ("lr_img", lr_img), ("batch_real", batch_real), ("model", model)):
        if value is not None:
            overrides[key] = value
    req = stage.Request(dataset=dataset, method=method, ipc=ipc, factor=factor, seed=seed, device=device,
                        overrides=overrides, checkpoint_every=checkpoint_every, name=name)
    store = get_store()
    if show_settings:
        _show_settings(o, store, req)
        return
    with o.progress() as prog:
        task = prog.add_task(f"condense {method}", total=None, status="")

        def on_start(total: int) -> None:
            prog.update(task, total=total or None)

        def on_iteration(done: int, total: int, loss: float) -> None:
            prog.update(task, completed=done, status=f"loss {loss:.4g}")

        res = stage.run(store, req, on_iteration=on_iteration, on_start=on_start, reporter=o)
    _report(o, res)


def _show_settings(o: output.Output, store, req) -> None:
    from .. import condensation as methods
    from ..stages import condense as stage
    from ..stages.datasets import load_real

    mod = methods.get(req.method)
    real = load_real(req.dataset, store, reporter=o)
    params, every = stage.plan(req, real)
    why = stage.fitted_settings(mod, real)[1]
    if why:
        o.info(why)
    rows = [[k, str(v)] for k, v in params["settings"].items()]
    rows += [["factor", str(params["factor"])], ["checkpoint_every", str(every)]]
    o.data(params | {"checkpoint_every": every}, output.table(f"{req.method} on {params['dataset']}",
                                                              ["setting", "value"], rows))


def _report(o: output.Output, res) -> None:
    m = res.manifest
    s = m.meta["set"]
    losses = m.meta.get("loss_curve") or []
    final = losses[-1][1] if losses else None
    doc = {"name": res.ref, "key": m.key, "cached": res.cached, "digest": m.digest("set"),
           "method": res.params["method"], "set": s, "params": res.params,
           "iterations": m.meta.get("iterations", 0), "final_loss": final,
           "seconds": m.provenance.get("seconds"), "device": m.meta.get("device"),
           "class_names": m.meta.get("class_names")}
    rows = [["name", res.ref], ["key", m.short], ["method", res.params["method"]],
            ["dataset", s["dataset"]], ["classes", class_names(m.meta.get("class_names"), s["classes"])],
            ["ipc x factor", f"{s['ipc']} x {s['factor']}"],
            ["stored", "x".join(map(str, s["stored_shape"]))], ["decoded images", str(s["decoded_count"])],
            ["iterations", str(doc["iterations"])],
            ["final loss", "" if final is None else f"{final:.4g}"],
            ["seconds", str(doc["seconds"])], ["device", str(doc["device"])],
            ["cached", "yes" if res.cached else "no"]]
    o.data(doc, output.table("condensed set", ["field", "value"], rows))


def class_names(names: list[str] | None, count: int, show: int = 12) -> str:
    """'10: airplane, automobile, ...' (the first `show` names; all are in --json)."""
    if not names:
        return str(count)
    listed = ", ".join(names[:show]) + (f", ... ({len(names) - show} more)" if len(names) > show else "")
    return f"{len(names)}: {listed}"
