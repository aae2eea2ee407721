"""`yoco fetch`: published condensed sets, dynamics, scores and real datasets into the store."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import output
from .common import JsonOpt, get_store, set_json


def register(app: typer.Typer) -> None:
    app.command("fetch")(fetch_cmd)


def _complete_names(incomplete: str) -> list[str]:
    from ..remote import registry

    try:
        names = registry.load().names_and_groups()
    except Exception:  # noqa: BLE001  completion must never fail loudly
        return []
    return [n for n in names if n.startswith(incomplete)]


def fetch_cmd(
    names: Annotated[list[str] | None, typer.Argument(
        help="What to fetch: a name or a path of names (`idc cifar10` = idc/cifar10/*), several names, "
             "folder:PATH, or hf:OWNER/NAME[@REVISION] (a Hugging Face dataset repo).", autocompletion=_complete_names, show_default=False)] = None,
    list_: Annotated[bool, typer.Option("--list", "-l", help="Show the registry (or the named part of it): "
                                                             "kind, size, digest, whether it is in the store.")] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Never touch the network (also YOCO_OFFLINE=1); "
                                                            "exit 4 naming anything missing.")] = False,
    source: Annotated[Path | None, typer.Option("--source", help="Local copy for what cannot be downloaded: "
                                                                    "imagenet10 reads PATH/train/<wnid>/ and "
                                                                    "PATH/val/<wnid>/.", show_default=False)] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds without data before a try counts as "
                                                             "failed.", min=0.01)] = 60.0,
    retries: Annotated[int, typer.Option("--retries", help="Extra tries on transient network errors, with "
                                                           "backoff (never on Drive's quota page).", min=0)] = 3,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Fetch hf: repos over 1 GB without asking.")] = False,
    dataset: Annotated[str | None, typer.Option("--dataset", help="The dataset of an hf: repo when its images "
                                                                  "do not tell (e.g. cifar10).", show_default=False)] = None,
    json_: JsonOpt = False,
) -> None:
    """Download published artifacts into the store, verified, resumable, cached.

    Examples: `yoco fetch idc cifar10` (IDC's CIFAR-10 sets, named idc/cifar10/ipc1|10|50, ready for
    `yoco prune`), `yoco fetch cifar10` (the real dataset, for evaluation), `yoco fetch --list`,
    `yoco fetch imagenet10 --source /data/imagenet`, `yoco fetch folder:./my-images`,
    `yoco fetch hf:he-yang/2025-rethinkdc-imagenet-sre2l-ipc-10` (a Hub dataset repo, named hf/OWNER/NAME).
    """
    o = set_json(json_)
    from ..remote import registry
    from ..stages import downloads, fetching

    reg = registry.load()
    store = get_store(write=not list_)  # listing reads the store: a read-only one will do
    if list_:
        _list(o, store, reg, names or [])
        return
    if not names:
        raise typer.BadParameter("name what to fetch, or pass --list", param_hint="NAMES")
    opts = downloads.Options(offline=offline, timeout=timeout, retries=retries, source=source)
    folders = [n for n in names if n.startswith("folder:")]
    hubs = [n for n in names if n.startswith("hf:")]
    rest = [n for n in names if not n.startswith(("folder:", "hf:"))]
    outcomes = [_folder(store, n, o) for n in folders]
    outcomes += [_hub(store, n, offline, yes, dataset, o) for n in hubs]
    if rest:
        outcomes += fetching.fetch(store, reg.select(rest), opts, reporter=o)
    _report(o, outcomes)


def _folder(store, spec: str, o: output.Output):
    from ..stages import datasets
    from ..stages.fetching import Outcome

    m, hit = datasets.prepare_folder(store, Path(spec[len("folder:"):]).expanduser(), reporter=o)
    return Outcome(spec, "dataset", m.stage, m.key, hit, m.meta.get("summary", ""))


def _hub(store, spec: str, offline: bool, yes: bool, dataset: str | None, o: output.Output):
    from ..stages import hub_sets
    from ..stages.fetching import Outcome
    from .common import interactive

    ask = (lambda q: typer.confirm(q, default=False, err=True)) if interactive() else None
    f = hub_sets.fetch(store, spec, hub_sets.FetchOptions(offline=offline, yes=yes or output.assume_yes, confirm=ask, dataset=dataset),
                       reporter=o)
    return Outcome(f.name, "set", f.manifest.stage, f.manifest.key, f.cached, f.summary)


def _report(o: output.Output, outcomes) -> None:
    rows = []
    for r in outcomes:
        digest = "; ".join(f"{v[:16]}" for v in r.sha256.values())
        rows.append([r.name, r.kind, "cached" if r.cached else "fetched", digest + (" (recorded)" if r.first_seen else ""),
                     r.summary])
    o.data([r.to_json() for r in outcomes],
           output.table(None, ["name", "kind", "status", "sha256", "summary"], rows))
    seen = [r.name for r in outcomes if r.first_seen and not r.cached]
    if seen:
        o.info(f"recorded the sha256 seen on this first download of {', '.join(seen)} (the publisher gives none); "
               "`yoco fetch --list` shows it")


def _list(o: output.Output, store, reg, names: list[str]) -> None:
    from ..stages import downloads

    entries = reg.select(names) if names else list(reg)
    rows, docs = [], []
    for e in entries:
        m = downloads.cached(store, e) if e.scheme != "local" else None
        recorded = m.meta.get("sha256") if m is not None else None
        sha = e.sha256 or recorded
        size = e.size if e.size is not None else (m.meta.get("size") if m is not None else None)
        approx = size is None and e.approx_size is not None
        size_text = downloads.human_size(size if size is not None else e.approx_size, approx=approx)
        cached = "local" if e.scheme == "local" else ("yes" if m is not None else "no")
        digest = (sha[:12] + ("" if e.sha256 else " (seen)")) if sha else "-"
        rows.append([e.name, e.kind, size_text, digest, cached])
        docs.append({"name": e.name, "kind": e.kind, "url": e.url, "size": size, "approx_size": e.approx_size,
                     "sha256": e.sha256, "sha256_seen": recorded if not e.sha256 else None, "md5": e.md5,
                     "cached": m is not None, "origin": e.origin, "attrs": e.attrs})
    tbl = output.table(None, ["name", "kind", "size", "sha256", "cached"], rows)
    tbl.columns[0].no_wrap = True  # names are what users type: never cut them
    o.data(docs, tbl)
    o.info("Hugging Face Hub dataset repos: `yoco fetch hf:OWNER/NAME[@REVISION]` (needs the [hub] extra; docs/hub.md)")
