"""`yoco import | show | export`: condensed sets in and out of the store."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..data.formats import FORMATS, export_help, import_help
from ..errors import UsageError
from . import output
from .common import JsonOpt, complete_choices, complete_set_refs, get_store, set_json


def register(app: typer.Typer) -> None:
    app.command("import")(import_cmd)
    app.command("show")(show_cmd)
    app.command("export")(export_cmd)


def _describe(store, m, cset) -> dict:
    names = store.refs_to(m.stage, m.key)
    return {"ref": names[0] if names else None, "key": m.key, **cset.describe()}


def _meta_rows(doc: dict) -> list[list]:
    shape = "x".join(str(s) for s in doc["stored_shape"])
    return [["ref", doc["ref"] or ""], ["key", doc["key"][:12]], ["dataset", doc["dataset"]],
            ["classes", doc["classes"]], ["ipc", doc["ipc"]], ["factor", doc["factor"]],
            ["stored shape", shape], ["decoded images", doc["decoded_count"]], ["value space", doc["value_space"]]]


def import_cmd(
    path: Annotated[Path, typer.Argument(help="data.pt, an MTT folder (or images_best.pt), a DSA/KIP .pt "
                                              "or a yoco .safetensors file.", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", "-f", help=import_help(),
                                     autocompletion=complete_choices(*FORMATS, "auto"))] = "auto",
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help="cifar10, cifar100, imagenet10, svhn, mnist, fashion or digits; "
                                "inferred from the images when unambiguous.", show_default=False)] = None,
    factor: Annotated[int | None, typer.Option(
        "--factor", help="Multi-formation factor (default: 2 for idc/dream, 3 at 128 px and up; else 1).",
        show_default=False)] = None,
    ipc: Annotated[int | None, typer.Option(
        "--ipc", help="Expected images per class; an error if the file holds another count.",
        show_default=False)] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="Name for the set (default: import/DATASET/FORMAT-ipcN).", show_default=False)] = None,
    experiment: Annotated[int, typer.Option(
        "--experiment", help="Which run of a DSA multi-experiment file (YOCO uses 0, IDC -1).")] = 0,
    value_space: Annotated[str | None, typer.Option(
        "--value-space", help="Override the format's value space: raw01 | normalized | zca "
                              "(e.g. zca for MTT's ZCA sets).", show_default=False,
        autocompletion=complete_choices("raw01", "normalized", "zca"))] = None,
    json_: JsonOpt = False,
) -> None:
    """Put a published condensed set into the store.

    Example: `yoco import raid/condensed_img/idc/cifar10/.../data.pt --dataset cifar10`
    """
    from ..stages.importing import default_ref, import_file
    from ..stages.sets import load_set

    o = set_json(json_)
    store = get_store()
    m, cached = import_file(store, path, fmt=fmt, dataset=dataset, factor=factor, ipc=ipc, name=name,
                            experiment=experiment, value_space=value_space, on_note=o.warn)
    cset = load_set(store, m)
    doc = {**_describe(store, m, cset), "ref": name or default_ref(cset, m.params["format"])}
    o.info(f"{'already in the cache' if cached else 'imported'}: {doc['ref']} ({m.meta.get('summary', '')})")
    o.data(doc, output.table(None, ["field", "value"], _meta_rows(doc)))


def show_cmd(
    ref: Annotated[str, typer.Argument(help="A set's name, key prefix or file path.",
                                       autocompletion=complete_set_refs, show_default=False)],
    png: Annotated[Path | None, typer.Option(
        "--png", help="Also write a picture to this file: one row per class, its name at the left; for a pruned "
                      "set, its parent's images with the kept ones framed and each one's score under it.",
        show_default=False)] = None,
    per_class: Annotated[int, typer.Option("--per-class", help="Images per row in the --png picture.")] = 20,
    json_: JsonOpt = False,
) -> None:
    """Show a condensed set's metadata and class counts; --png draws it (a pruned set: what its rule kept and why).

    Example: `yoco show digits/idc/ipc10@lbpe-easy-balanced-ipc1 --png kept.png`
    """
    from ..stages.importing import resolve_set

    o = set_json(json_)
    if per_class < 1:
        raise UsageError(f"--per-class must be at least 1, got {per_class}")
    store = get_store(write=False)  # reads; a file path is imported (and the home made) on demand
    m, cset = resolve_set(store, ref)
    doc = _describe(store, m, cset)
    if ref in store.refs():
        doc["ref"] = ref
    doc.update({"stage": m.stage, "class_counts": cset.class_counts(), "made_by": m.meta.get("made_by", {}),
                "summary": m.meta.get("summary", "")})
    if png is not None:
        from ..data.preview import write_png
        from ..stages.pictures import set_png

        doc["png"] = str(write_png(set_png(store, m, cset, per_class), png))
        o.info(f"wrote {png}")
    names = m.meta.get("class_names")
    if names:
        from .cmd_condense import class_names

        doc["class_names"] = names
    rows = _meta_rows(doc) + [["stage", m.stage], ["class counts", _counts(doc["class_counts"])],
                              *([["class names", class_names(names, len(names))]] if names else []),
                              ["made by", _made_by(doc["made_by"])]]
    o.data(doc, output.table(None, ["field", "value"], rows))


def _counts(counts: list[int]) -> str:
    if len(set(counts)) == 1:
        return f"{counts[0]} in each of {len(counts)} classes"
    return " ".join(f"{c}:{n}" for c, n in enumerate(counts))


def _made_by(made: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(made.items())) or "-"


def export_cmd(
    ref: Annotated[str, typer.Argument(help="A set's name, key prefix or file path.",
                                       autocompletion=complete_set_refs, show_default=False)],
    dest: Annotated[Path, typer.Argument(help="File to write (a folder for mtt).", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", "-f", help=export_help(),
                                     autocompletion=complete_choices(*FORMATS))] = "idc",
    json_: JsonOpt = False,
) -> None:
    """Write a stored set in a published layout.

    Example: `yoco export import/cifar10/idc-ipc10 data.pt`
    """
    from ..data.formats import export
    from ..stages.importing import resolve_set

    o = set_json(json_)
    store = get_store(write=False)  # reads; a file path is imported (and the home made) on demand
    m, cset = resolve_set(store, ref)
    for note in export(cset, dest, fmt):
        o.warn(note)
    doc = {"ref": ref, "key": m.key, "format": fmt.strip().lower(), "path": str(dest),
           "images": int(cset.images.shape[0]), "value_space": cset.value_space}
    o.info(f"wrote {dest}")
    o.data(doc, output.table(None, ["field", "value"], [[k, v] for k, v in doc.items()]))
