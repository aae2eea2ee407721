"""`yoco cache`: look into and tidy the content-addressed store."""
from __future__ import annotations

from typing import Annotated

import typer

from ..errors import IntegrityError, UsageError
from . import output
from .common import JsonOpt, get_store, set_json, state

cache_app = typer.Typer(help="Inspect and maintain the cache every stage shares.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@cache_app.command("dir")
def cache_dir(json_: JsonOpt = False) -> None:
    """Print the cache folder.  Example: `yoco cache dir`"""
    from ..store import Store

    o = set_json(json_)
    root = str(Store(state.home).root)
    if o.json_mode:  # programs asked for JSON get JSON, even for one path
        o.data({"path": root})
    else:
        o.text(root)


@cache_app.command("ls")
def cache_ls(
    stage: Annotated[str, typer.Option("--stage", help="Only runs of this stage (import, prune, ...).")] = "",
    json_: JsonOpt = False,
) -> None:
    """List stored artifacts with their names.  Example: `yoco cache ls --stage import`"""
    o = set_json(json_)
    store = get_store(write=False)
    names: dict[tuple[str, str], list[str]] = {}
    for n, sk in store.refs().items():
        names.setdefault(sk, []).append(n)
    rows = []
    for m in store.all_runs(stage or None):
        rows.append({
            "stage": m.stage, "key": m.key, "refs": names.get((m.stage, m.key), []),
            "size": m.size, "summary": m.meta.get("summary", ""),
            "created": m.provenance.get("created", ""),
        })
    tbl = output.table(None, ["stage", "key", "name", "size", "summary"],
                       [[r["stage"], r["key"][:12], ", ".join(r["refs"]), _human(r["size"]), r["summary"]]
                        for r in rows])
    if not rows and not o.json_mode:
        if stage:  # say which stages there are: a misspelt --stage is the likely cause
            present = sorted({m.stage for m in store.all_runs(None)})
            o.info(f"no runs of stage {stage!r} in the cache"
                   + (f" (it holds: {', '.join(present)})" if present else " (it is empty)"))
        else:
            o.info("the cache is empty")
        return
    o.data(rows, tbl)


@cache_app.command("info")
def cache_info(
    target: Annotated[str, typer.Argument(help="A name or key prefix.")],
    json_: JsonOpt = False,
) -> None:
    """Show one artifact's manifest.  Example: `yoco cache info digits/random/ipc10`"""
    o = set_json(json_)
    store = get_store(write=False)
    m = store.resolve(target, require_objects=False)
    doc = {"stage": m.stage, "key": m.key, "refs": store.refs_to(m.stage, m.key), "params": m.params,
           "inputs": m.inputs, "outputs": m.outputs, "meta": m.meta, "provenance": m.provenance,
           "path": str(store.manifest_path(m.stage, m.key))}
    rows = [["stage", m.stage], ["key", m.key], ["names", ", ".join(doc["refs"])],
            ["params", _j(m.params)], ["inputs", _j(m.inputs)],
            ["outputs", "\n".join(f"{k}: {v['digest'][:16]} ({_human(v['size'])})" for k, v in m.outputs.items())],
            ["meta", _j(m.meta)], ["made", _j(m.provenance)]]
    o.data(doc, output.table(None, ["field", "value"], rows))


def _j(d: dict) -> str:
    import json

    return json.dumps(d, sort_keys=True, default=str)


@cache_app.command("verify")
def cache_verify(json_: JsonOpt = False) -> None:
    """Re-hash every object and check every manifest; exit 3 on any problem.  Example: `yoco cache verify`

    Damaged objects are moved to quarantine/, so the runs that made them recompute on their next use;
    lock files and empty partial folders left by killed processes are removed."""
    o = set_json(json_)
    store = get_store(write=False)  # a read-only store is verified too (damage is reported, not moved)
    n = len(store.all_objects())
    with o.progress(transient=True) as prog:
        task = prog.add_task("verifying", total=n, status="")
        problems = store.verify(progress=lambda: prog.advance(task))
    tidy = store.tidy()
    o.data({"objects": n, "problems": problems, "cleaned": tidy},
           output.table(None, ["objects checked", "problems", "stale locks removed", "empty partial folders removed"],
                        [[n, len(problems), len(tidy["locks"]), len(tidy["partial"])]]))
    if problems:
        for p in problems:
            o.error(p)
        raise IntegrityError(f"{len(problems)} problem(s) in the cache",
                             "damaged objects are in quarantine/; rerun the commands named above to recompute them")


@cache_app.command("gc")
def cache_gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be deleted.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Delete objects no run uses, dangling names, abandoned temp files and quarantined objects.
    Safe while other yoco commands run.  Example: `yoco cache gc --dry-run`"""
    o = set_json(json_)
    res = get_store(write=not dry_run).gc(dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    o.data({"dry_run": dry_run, **res},
           output.table(None, ["", verb],
                        [["objects", len(res["objects"])], ["names", len(res["refs"])], ["temp files", len(res["tmp"])],
                         ["quarantined objects", len(res["quarantine"])], ["stale lock files", len(res["locks"])],
                         ["partial folders", len(res["partial"])], ["bytes", _human(int(res["bytes"][0]))]]))


@cache_app.command("rm")
def cache_rm(
    targets: Annotated[list[str], typer.Argument(help="Names or key prefixes to delete.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be deleted.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Delete runs (and their names and unshared objects).  Example: `yoco cache rm digits/random/ipc10 --dry-run`"""
    o = set_json(json_)
    store = get_store()
    manifests = [store.resolve(t, require_objects=False) for t in targets]  # damaged runs too
    if not manifests:
        raise UsageError("nothing to delete", "name at least one artifact")
    res = store.rm(manifests, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    o.data({"dry_run": dry_run, **res},
           output.table(None, ["", verb], [["runs", "\n".join(res["runs"])], ["names", "\n".join(res["refs"])],
                                            ["objects", len(res["objects"])]]))
