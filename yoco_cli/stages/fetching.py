"""`yoco fetch`: download a selection of registry entries (stages/downloads.py), then turn each
group into what users ask for: condensed sets imported as `yoco import` would, real datasets decoded
into the `dataset` stage, dynamics/score files kept as they are.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..progress import SILENT, Reporter
from ..remote.registry import Entry
from ..store import Manifest, Store
from . import datasets
from .downloads import Options, download_all, dropped_if_undecodable, ensure_download
from .importing import import_file


@dataclass
class Outcome:
    name: str  # the ref users will type
    kind: str
    stage: str
    key: str
    cached: bool  # nothing was downloaded or computed
    summary: str
    sha256: dict = field(default_factory=dict)  # file name -> digest (recorded or verified)
    first_seen: bool = False

    def to_json(self) -> dict:
        return dict(self.__dict__)


def groups(entries: list[Entry]) -> list[tuple[str, str, list[Entry]]]:
    """[(kind, group, entries)] in registry order."""
    out: dict[tuple[str, str], list[Entry]] = {}
    for e in entries:
        out.setdefault((e.kind, e.group), []).append(e)
    return [(k, g, es) for (k, g), es in out.items()]


def fetch(store: Store, entries: list[Entry], opts: Options, reporter: Reporter = SILENT) -> list[Outcome]:
    """Download what is missing, then import/decode each group."""
    fetched = {e.name for e in download_all(store, entries, opts, reporter=reporter)}
    outcomes = [_finish(store, kind, group, es, opts) for kind, group, es in groups(entries)]
    for o in outcomes:
        o.cached = o.cached and not (set(o.sha256) & fetched)
    return outcomes


def _finish(store: Store, kind: str, group: str, entries: list[Entry], opts: Options) -> Outcome:
    if kind == "local":
        m, hit = datasets.prepare_local(store, group, opts.source)
        return Outcome(group, "dataset", m.stage, m.key, hit, m.meta.get("summary", ""))
    downloads = [ensure_download(store, e, opts) for e in entries]
    sha = {e.name: m.meta.get("sha256", m.digest("file")) for e, (m, _) in zip(entries, downloads)}
    first = any(m.meta.get("first_seen") for m, _ in downloads)
    all_cached = all(hit for _, hit in downloads)
    if kind == "set":
        with dropped_if_undecodable(store, group, [m for m, _ in downloads]):
            m, hit = import_set(store, group, entries, [m for m, _ in downloads])
    elif kind == "dataset":
        m, hit = datasets.prepare(store, group, opts)  # drops downloads that fail to decode
    else:
        m, hit = downloads[0]
        return Outcome(entries[0].name, kind, m.stage, m.key, hit, m.meta.get("summary", ""), sha, first)
    return Outcome(group, kind, m.stage, m.key, hit and all_cached, m.meta.get("summary", ""), sha, first)


def import_set(store: Store, name: str, entries: list[Entry], downloads: list[Manifest]) -> tuple[Manifest, bool]:
    """Import a downloaded condensed set exactly as `yoco import` would, named `name`."""
    a = entries[0].attrs

    def imported(path: Path) -> tuple[Manifest, bool]:
        return import_file(store, path, fmt=a.get("format", "auto"), dataset=a.get("dataset"),
                           factor=int(a["factor"]) if "factor" in a else None,
                           ipc=int(a["ipc"]) if "ipc" in a else None, name=name,
                           experiment=int(a.get("experiment", 0)),  # which experiment of a DSA file (YOCO uses 0)
                           value_space=a.get("value_space"))

    # the downloads are hashed first (a damaged one is quarantined, so the next fetch downloads it
    # again); import_file hashes what it reads before and after reading, and keys the set by that
    files = [store.verified_path(m, "file") for m in downloads]
    if len(entries) == 1:
        return imported(files[0])
    # several files (MTT: images_best.pt + labels_best.pt): a folder of links with their published names
    with store.staging() as tmp:
        folder = tmp / name.replace("/", "_")
        folder.mkdir()
        for e, f in zip(entries, files):
            os.symlink(f, folder / e.attrs.get("file", e.name.rsplit("/", 1)[-1]))
        return imported(folder)
