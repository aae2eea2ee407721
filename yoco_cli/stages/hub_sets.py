"""Stage "hub", the reading side: a Hugging Face dataset repo (or a folder in its layout) -> a stored set.

`fetch`: `hf:OWNER/NAME[@REVISION]` is resolved to a commit, its files come through huggingface_hub's
cache, and the folder is read (data/hub_layout.py) into a set named `hf/OWNER/NAME`. The key holds
the repo, the commit sha and the sha256 of every file read, so a set pins the exact revision; the
manifest's meta says where it came from. `import_folder` reads a local folder the same way (a
`publish --folder` output, a snapshot copied by hand); `yoco import` reaches it through
stages/importing.py, which is why this module imports no other stage that imports sets by name.
The writing side (publish) is stages/hub.py.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data import hub_layout as layout
from ..errors import IntegrityError, UsageError
from ..progress import SILENT, Reporter
from ..remote import hub
from ..store import Manifest, Store, run_cached
from ..store.store import sha256_file
from .sets import set_result

STAGE = "hub"
VERSION = 1
CONFIRM_BYTES = 1_000_000_000  # ask before downloading more than 1 GB
TAGS = ["dataset-distillation", "dataset-pruning", "yoco"]


@dataclass
class FetchOptions:
    offline: bool = False
    yes: bool = False
    confirm: Callable[[str], bool] | None = None  # asks a person (the CLI's prompt); None: refuse without --yes
    name: str | None = None
    dataset: str | None = None


@dataclass
class Fetched:
    name: str
    manifest: Manifest
    cached: bool
    repo: str
    sha: str
    summary: str


# -- fetch ---------------------------------------------------------------------------------------
def fetch(store: Store, spec: str, opts: FetchOptions | None = None, reporter: Reporter = SILENT) -> Fetched:
    from .downloads import human_size, offline_requested

    opts = opts or FetchOptions()
    hub.require("fetching hf: datasets")
    repo, revision = hub.parse(spec)
    name = store.check_ref_name(opts.name or f"hf/{repo}")
    offline = offline_requested(opts.offline) or hub.hub_offline()
    want = revision
    if not offline:
        remote = hub.resolve(repo, revision)
        size = remote.wanted_bytes()
        if size > CONFIRM_BYTES and not opts.yes:
            question = f"{spec} is {human_size(size)} to download (at most; cached files are reused). Continue?"
            if opts.confirm is None or not opts.confirm(question):
                raise UsageError(f"{spec} is {human_size(size)}, above the {human_size(CONFIRM_BYTES)} asked about "
                                 "first", "pass --yes to fetch it")
        want = remote.sha  # the commit just resolved: a branch moving meanwhile cannot mix revisions
    path = hub.download(repo, want, offline)
    sha = hub.snapshot_sha(path)
    source = {"repo": repo, "revision": revision or "main", "sha": sha}
    m, hit = import_folder(store, path, name=name, source=source, dataset=opts.dataset, reporter=reporter)
    return Fetched(name, m, hit, repo, sha, m.meta.get("summary", ""))


def repo_files(root: Path) -> list[Path]:
    """The files a set is read from (the card, shards, yoco's files, images): what the key hashes."""
    from fnmatch import fnmatch

    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(".") and any(fnmatch(rel, pat) for pat in hub.PATTERNS):
            out.append(p)
    return out


def import_folder(store: Store, root: Path, name: str | None = None, source: dict | None = None,
                  dataset: str | None = None, reporter: Reporter = SILENT) -> tuple[Manifest, bool]:
    """A folder in a Hub layout into the store; (manifest, cached)."""
    hub.require("reading Hub dataset folders")
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder", "give the folder `yoco publish --folder` wrote")
    if name is not None:
        store.check_ref_name(name)
    files = repo_files(root)
    if not files:
        raise IntegrityError(f"{root} holds no card, parquet shards or images", "is this a dataset repo?")
    inputs = {f.relative_to(root).as_posix(): sha256_file(f) for f in files}
    params = {"format": "hub", "repo": (source or {}).get("repo"), "sha": (source or {}).get("sha"),
              "dataset": dataset, "layout": layout.LAYOUT}

    def make(tmp: Path, key: str):
        with reporter.progress(transient=True) as prog:
            task = prog.add_task(f"reading {(source or {}).get('repo') or root.name}", total=None, status="")
            hs = layout.read_repo(root, tick=lambda n: prog.advance(task, n))
        cset, summary = _to_set(hs, root, source, dataset)
        for note in hs.notes:
            reporter.warn(note)
        return set_result(tmp, cset, summary, extra={"hub": source, "layout": hs.layout, "folder": str(root),
                                                     "classes": hs.classes})

    m, hit = run_cached(store, STAGE, VERSION, params, inputs, make, ref=name)
    if name is None:  # `yoco import FOLDER`: named as imports are, import/DATASET/hub-ipcN
        d = m.meta["set"]
        store.set_ref(f"import/{d['dataset']}/hub-ipc{d['ipc']}", m.stage, m.key)
    return m, hit


def _to_set(hs: layout.HubSet, root: Path, source: dict | None, dataset: str | None):
    if hs.yoco is not None:
        return _own_set(hs, root), f"yoco set {hs.yoco.get('name')} from {_where(root, source)}"
    from ..data.condensed import CondensedSet
    from ..data.formats import resolve_dataset

    c, side, k = int(hs.images.shape[1]), int(hs.images.shape[-1]), len(hs.classes)
    notes: list[str] = []
    name = layout.infer_dataset(c, side, k) if dataset is None else None
    if name is None:
        try:
            name, k = resolve_dataset(dataset, hs.images, hs.labels, k, [root], notes)
        except UsageError as e:
            raise UsageError(e.message, "pass --dataset NAME (yoco fetch hf:... --dataset NAME)") from None
    hs.notes += notes
    meta = {"format": "hub", "layout": hs.layout, "hub": source}  # class names: in the run's meta
    cset = CondensedSet(images=hs.images, labels=hs.labels, dataset=name, num_classes=k, meta=meta)
    return cset, f"{hs.layout} {name} ipc{cset.ipc}, {len(hs.labels)} images from {_where(root, source)}"


def _where(root: Path, source: dict | None) -> str:
    return f"{source['repo']}@{source['sha'][:12]}" if source else str(root)


def _own_set(hs: layout.HubSet, root: Path):
    """yoco's layout: the stored tensors (exact file, else the PNG pixels), checked against the
    digest publish recorded: a repo whose files were edited is refused, not silently changed."""
    import tempfile

    import torch

    from ..data.condensed import CondensedSet

    doc = hs.yoco or {}
    exact = root / layout.EXACT_FILE
    if exact.is_file():
        cset = CondensedSet.load(exact)
        labels = cset.labels if cset.factor == 1 else cset.decoded()[1]
        if not torch.equal(labels, hs.labels):
            raise IntegrityError(f"{layout.EXACT_FILE} and the parquet labels disagree", "the repo was edited")
    else:
        origin = _selection(root).get("kept")
        cset = CondensedSet(images=hs.images, labels=hs.labels, dataset=doc["dataset"],
                            num_classes=int(doc["num_classes"]), factor=1, value_space="raw01",
                            ipc=int(doc["ipc"]), meta=doc.get("meta") or {},
                            origin=torch.tensor(origin, dtype=torch.int64) if origin is not None else None)
    with tempfile.TemporaryDirectory() as d:
        got = sha256_file(cset.save(Path(d) / "set.safetensors"))
    if got != doc.get("set_digest"):
        raise IntegrityError(f"the repo's files do not rebuild the published set (digest {got[:12]}, "
                             f"{layout.SET_FILE} says {str(doc.get('set_digest'))[:12]})", "the repo was edited")
    return cset


def _selection(root: Path) -> dict:
    path = root / layout.SELECTION_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# -- publish -------------------------------------------------------------------------------------
