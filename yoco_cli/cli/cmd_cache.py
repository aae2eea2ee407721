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


LS_SORTS = ("name", "stage", "size", "created")
LS_FORMATS = ("table", "json", "csv")


@cache_app.command("ls")
def cache_ls(
    stage: Annotated[str, typer.Option("--stage", help="Only runs of this stage (import, prune, ...).")] = "",
    every_run: Annotated[bool, typer.Option(
        "--all", help="One row per stored run (each seed of a dynamics or evaluation group, each run of a prune "
                      "group) instead of one per artifact.")] = False,
    sort: Annotated[str, typer.Option("--sort", help="name | stage | size (largest first) | created.")] = "stage",
    fmt: Annotated[str, typer.Option("--format", help="table | json | csv.")] = "table",
    json_: JsonOpt = False,
) -> None:
    """List the stored artifacts with their names, sizes and a total.

    Example: `yoco cache ls --sort size`, `yoco cache ls --all --format csv`
    """
    from ..stages import inventory

    if sort not in LS_SORTS:
        raise UsageError(f"--sort {sort!r}", f"use one of {', '.join(LS_SORTS)}")
    if fmt not in LS_FORMATS:
        raise UsageError(f"--format {fmt!r}", f"use one of {', '.join(LS_FORMATS)}")
    o = set_json(json_ or fmt == "json")
    store = get_store(write=False)
    arts = inventory.artifacts(store, every_run=every_run, stage=stage or None)
    rows = sorted((_ls_row(a) for a in arts), key=_sort_key(sort))
    total = inventory.total_bytes(store)
    if fmt == "csv" and not o.json_mode:
        _csv(o, rows)
        return
    if o.json_mode:
        o.data({"artifacts": rows, "total_bytes": total})
        return
    if not rows:
        _say_empty(o, store, stage)
        return
    tbl = output.table(None, ["stage", "name", "size", "summary"],
                       [[r["stage"], r["name"], output.human_bytes(r["size"]), r["summary"]] for r in rows])
    tbl.columns[1].no_wrap = True  # names are what people copy: whole, even in a pipe
    tbl.caption = (f"{len(rows)} {'runs' if every_run else 'artifacts'}; {output.human_bytes(total)} of objects in the store "
                   "(each counted once)")
    if not o.out.is_terminal:  # a pipe or a file: whole names and summaries, one row per line
        o.out.width = 100_000
    o.out.print(tbl)


def _ls_row(a) -> dict:
    m = a.manifest
    return {"stage": m.stage, "name": a.name, "key": m.key, "refs": a.refs, "size": a.bytes,
            "parts": len(a.parts), "summary": _summary(m), "created": m.provenance.get("created", "")}


def _summary(m) -> str:
    """The manifest's summary; an evaluation's accuracies in percent, as the report tables show them."""
    meta = m.meta
    if m.stage == "eval" and "best_mean" in meta:
        n = len(meta.get("per_repeat") or [])
        spread = f" ± {100 * meta['best_std']:.2f}" if n > 1 else " (n=1)"
        return (f"{meta.get('target', '?')}: best {100 * meta['best_mean']:.2f}%{spread}, "
                f"last {100 * meta['last_mean']:.2f}% over {n} run(s)")
    return str(meta.get("summary", ""))


def _sort_key(sort: str):
    if sort == "size":
        return lambda r: (-r["size"], r["name"])
    if sort == "created":
        return lambda r: (r["created"], r["name"])
    if sort == "name":
        return lambda r: r["name"]
    return lambda r: (r["stage"], r["name"])


def _csv(o, rows: list[dict]) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["stage", "name", "key", "size", "parts", "created", "summary"])
    for r in rows:
        w.writerow([r["stage"], r["name"], r["key"], r["size"], r["parts"], r["created"], r["summary"]])
    o.text(buf.getvalue().rstrip("\n"))


def _say_empty(o, store, stage: str) -> None:
    if stage:  # say which stages there are: a misspelt --stage is the likely cause
        present = sorted({m.stage for m in store.all_runs(None)})
        o.info(f"no runs of stage {stage!r} in the cache"
               + (f" (it holds: {', '.join(present)})" if present else " (it is empty)"))
    else:
        o.info("the cache is empty")


@cache_app.command("info")
def cache_info(
    target: Annotated[str, typer.Argument(help="A name or key prefix.")],
    json_: JsonOpt = False,
) -> None:
    """Show one artifact: its parameters, what it was made from, its outputs and provenance.

    Example: `yoco cache info digits/random/ipc10`
    """
    from ..stages import inventory

    o = set_json(json_)
    store = get_store(write=False)
    m = store.resolve(target, require_objects=False)
    made_from = inventory.sources(store, m)
    doc = {"stage": m.stage, "key": m.key, "refs": store.refs_to(m.stage, m.key), "params": m.params,
           "inputs": m.inputs, "made_from": made_from, "outputs": m.outputs, "meta": m.meta,
           "provenance": m.provenance, "path": str(store.manifest_path(m.stage, m.key))}
    rows = [["stage", m.stage], ["key", m.key], ["names", ", ".join(doc["refs"]) or "-"],
            *_fields("param", m.params), *[[f"input {k}", v] for k, v in made_from.items()],
            *[[f"output {k}", f"{v['digest'][:16]} ({output.human_bytes(v['size'])})"] for k, v in m.outputs.items()],
            *_fields("meta", {k: v for k, v in m.meta.items() if k != "summary"}),
            ["summary", _summary(m)], *_fields("made", m.provenance)]
    tbl = output.table(None, ["field", "value"], rows)
    tbl.columns[0].no_wrap = True
    o.data(doc, tbl)


def _fields(prefix: str, d: dict, depth: int = 0) -> list[list[str]]:
    """Nested dicts as one readable row per leaf (`param train.epochs  300`), lists inline."""
    rows = []
    for k, v in sorted(d.items()):
        name = f"{prefix} {k}" if depth == 0 else f"{prefix}.{k}"
        if isinstance(v, dict) and v and depth < 2:
            rows += _fields(name, v, depth + 1)
        else:
            rows.append([name, _value(v)])
    return rows


def _value(v) -> str:
    import json

    if isinstance(v, str):
        return v
    if isinstance(v, list) and len(v) > 12:
        return f"{len(v)} values: {json.dumps(v[:6], default=str)[:-1]}, ...]"
    return json.dumps(v, sort_keys=True, default=str)


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
                         ["partial folders", len(res["partial"])], ["bytes", output.human_bytes(int(res["bytes"][0]))]]))


@cache_app.command("rm")
def cache_rm(
    targets: Annotated[list[str], typer.Argument(help="Names or key prefixes to delete.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the plan.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking (needed off a terminal).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Delete artifacts with everything computed from them, after showing the plan.

    The plan lists each artifact, its parts (per-seed runs), everything that depends on it (a set's
    dynamics, scores, pruned sets and their evaluations) and the bytes freed; on a terminal it asks
    before deleting, elsewhere it needs --yes.  Example: `yoco cache rm digits/random/ipc10 --dry-run`
    """
    from ..stages import inventory

    o = set_json(json_)
    store = get_store(write=not dry_run)
    store.check_no_links()  # before anything is read: a linked folder would make the plan itself fail on it
    manifests = [store.resolve(t, require_objects=False) for t in targets]  # damaged runs too
    if not manifests:
        raise UsageError("nothing to delete", "name at least one artifact")
    plan = inventory.removal_plan(store, manifests)
    store.rm(plan.runs, dry_run=True)  # what rm refuses (a run in a shared store, a linked folder) fails now
    doc = {"dry_run": dry_run, "named": [_run_name(store, m) for m in plan.named],
           "parts": [_run_name(store, m) for m in plan.parts],
           "dependents": [_run_name(store, m) for m in plan.dependents],
           "refs": plan.refs, "objects": sorted(plan.freed), "bytes": plan.bytes}
    if not o.json_mode:
        _show_plan(o, doc, len(plan.parts))
    if dry_run:
        if o.json_mode:
            o.data(doc)
        return
    if not (yes or output.assume_yes):  # its own --yes, or the global one
        from .common import interactive

        if not interactive():
            raise UsageError(f"cache rm would delete {len(plan.runs)} run(s) and {output.human_bytes(plan.bytes)}",
                             "look at the plan with --dry-run, then pass --yes")
        if not typer.confirm(f"delete {len(plan.runs)} run(s), {output.human_bytes(plan.bytes)}?", default=False, err=True):
            raise typer.Exit(1)
    res = store.rm(plan.runs)
    doc["deleted"] = {"runs": res["runs"], "refs": res["refs"], "objects": len(res["objects"])}
    if o.json_mode:
        o.data(doc)
    else:
        o.info(f"deleted {len(res['runs'])} run(s), {len(res['refs'])} name(s), {len(res['objects'])} object(s)")


def _run_name(store, m) -> str:
    refs = store.refs_to(m.stage, m.key)
    return f"{refs[0]} ({m.stage} {m.key[:12]})" if refs else f"{m.stage} {m.key[:12]}"


def _show_plan(o, doc: dict, parts: int) -> None:
    rows = [["delete", "\n".join(doc["named"])]]
    if parts:
        rows.append(["with its parts", f"{parts} per-seed or per-run run(s)"])
    rows.append(["and what depends on it", "\n".join(doc["dependents"]) or "nothing"])
    rows.append(["names", ", ".join(doc["refs"]) or "-"])
    rows.append(["frees", f"{output.human_bytes(doc['bytes'])} in {len(doc['objects'])} object(s)"])
    tbl = output.table("would delete" if doc["dry_run"] else "plan", ["", ""], rows)
    tbl.show_header = False
    o.err.print(tbl)
