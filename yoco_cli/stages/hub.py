"""Stage "hub", the writing side: a stored set -> a Hugging Face dataset repo (docs/hub.md).

publish: a stored set -> a folder `datasets.load_dataset` reads as-is (parquet: PNG image + ClassLabel
label) plus yoco's files (set.json, selection.json, and the exact tensors when PNG cannot hold them),
and a dataset card; then uploaded as one commit, or left in --folder. Fetching and reading repos is
stages/hub_sets.py.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .._version import __version__
from ..data import hub_layout as layout
from ..errors import FetchError, UsageError
from ..progress import SILENT, Reporter
from ..remote import hub
from ..store import Manifest, Store
from .hub_sets import TAGS
from .importing import resolve_set
from .sets import set_label


@dataclass
class Published:
    ref: str
    key: str
    repo: str | None
    folder: str | None
    files: list[str]
    url: str | None = None
    exact: str = "png"
    card: dict = field(default_factory=dict)


def publish(store: Store, ref: str, target: str | None = None, folder: Path | None = None, *,
            private: bool = False, revision: str | None = None, create_pr: bool = False,
            license_: str = "mit", reporter: Reporter = SILENT) -> Published:
    """Write the set REF as a dataset repo into `folder` (no network), or upload it to `target`."""
    hub.require("publish")
    if target is None and folder is None:
        raise UsageError("name where to publish", "give hf:OWNER/NAME, or --folder DIR to write the files locally")
    repo = hub.parse(target)[0] if target else None
    if target and "@" in target:
        raise UsageError("give the branch with --revision, not @", f"yoco publish {ref} hf:{repo} --revision BRANCH")
    if repo is not None:
        _check_online(repo)
    m, cset = resolve_set(store, ref)
    name = set_label(store, m)
    message = f"yoco {__version__}: publish {name}"
    if folder is not None:
        pub = _write_folder(store, m, cset, name, Path(folder), repo, license_)
        if repo is not None:
            pub.url = hub.upload(Path(folder), repo, private=private, revision=revision, create_pr=create_pr,
                                 message=message)
        return pub
    assert repo is not None  # checked above: no folder means a target
    with store.staging() as tmp:
        pub = write_repo(store, m, cset, name, tmp / "repo", repo, license_)
        pub.url = hub.upload(tmp / "repo", repo, private=private, revision=revision, create_pr=create_pr,
                             message=message)
    return pub


def _check_online(repo: str) -> None:
    from .downloads import offline_requested

    if offline_requested() or hub.hub_offline():
        raise FetchError(f"offline (YOCO_OFFLINE or HF_HUB_OFFLINE): cannot upload to {repo}",
                         "unset it to upload, or write the files with --folder DIR alone")


def _write_folder(store: Store, m: Manifest, cset, name: str, folder: Path, repo: str | None,
                  license_: str) -> Published:
    """All files or none: written beside the target, renamed into place when complete."""
    out = _fresh_folder(folder)
    try:
        pub = write_repo(store, m, cset, name, out, repo, license_)
        out.rename(folder)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    pub.folder = str(folder)
    return pub


def _fresh_folder(folder: Path) -> Path:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"{folder} exists and is not an empty folder", "give a new folder name")
    if folder.is_dir():
        folder.rmdir()
    if not folder.parent.is_dir():
        raise UsageError(f"the folder {folder.parent} does not exist", "create it first")
    out = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    return out


def write_repo(store: Store, m: Manifest, cset, name: str, out: Path, repo: str | None, license_: str) -> Published:
    from .datasets import dataset_stats

    if cset.value_space == "zca":
        raise UsageError(f"{name} is a zca-whitened set: its values are not images a PNG can show",
                         "publish a raw01 or normalized set")
    # factor 1: the stored images in stored order (the PNGs can then be the set); else the decoded ones
    images, labels = (cset.images, cset.labels) if cset.factor == 1 else cset.decoded()[:2]
    stats = dataset_stats(cset.dataset, store) if cset.value_space == "normalized" else None
    classes = class_names(store, m, cset)
    written = layout.write_parquet(out, images, labels, classes, cset.value_space, stats)
    exact = "png" if cset.factor == 1 and written.exact else "safetensors"
    (out / "yoco").mkdir()
    if exact == "safetensors":
        cset.save(out / layout.EXACT_FILE)
    selection = selection_doc(store, m, cset)
    (out / layout.SELECTION_FILE).write_text(json.dumps(selection, separators=(",", ":")) + "\n")
    doc = {"format": layout.LAYOUT, "name": name, "key": m.key, "set_digest": m.digest("set"),
           "dataset": cset.dataset, "num_classes": cset.num_classes, "factor": cset.factor,
           "value_space": cset.value_space, "ipc": cset.ipc, "meta": cset.meta, "exact": exact,
           "yoco_version": __version__}
    (out / layout.SET_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    block = card_block(store, m, cset, name, selection, exact)
    data_bytes = sum(p.stat().st_size for p in written.shards)
    meta = layout.card_meta(classes, len(labels), data_bytes, written.arrow_bytes, license_, TAGS, block)
    (out / layout.CARD).write_text(layout.card_text(meta, card_body(name, repo, block, len(labels), exact)),
                                   encoding="utf-8")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    return Published(name, m.key, repo, None, files, exact=exact, card=meta)


def class_names(store: Store, m: Manifest, cset) -> list[str]:
    """Class names recorded with the set or an ancestor (a fetched set keeps its card's), else the
    dataset's known names, else the indices."""
    from ..data.readers import CIFAR10_CLASSES, FASHION_CLASSES

    for run in _lineage(store, m):
        names = run.meta.get("classes")
        if isinstance(names, list) and len(names) == cset.num_classes and all(isinstance(c, str) for c in names):
            return names
    known = {"cifar10": CIFAR10_CLASSES, "fashion": FASHION_CLASSES}.get(cset.dataset)
    return list(known) if known else [str(i) for i in range(cset.num_classes)]


def _lineage(store: Store, m: Manifest, depth: int = 8) -> list[Manifest]:
    """The set's run, its parent's, the parent's parent's, ... (pruned sets name their parent's key)."""
    out: list[Manifest] = []
    cur: Manifest | None = m
    while cur is not None and len(out) < depth:
        out.append(cur)
        parent = ((cur.meta.get("made_by") or {}).get("pruned") or {}).get("parent_key")
        cur = _run_by_key(store, parent) if parent else None
    return out


def _run_by_key(store: Store, key: str) -> Manifest | None:
    return next((r for r in store.all_runs() if r.key == key), None)


def _by_digest(store: Store, stage: str, output: str, digest: str | None) -> Manifest | None:
    return next((r for r in store.all_runs(stage) if output in r.outputs and r.digest(output) == digest), None) \
        if digest else None


def selection_doc(store: Store, m: Manifest, cset) -> dict:
    """The kept indices into the parent and the scores that chose them (pruned sets; else {})."""
    info = (cset.meta or {}).get("pruned")
    if not isinstance(info, dict):
        return {}
    doc = {"parent": info.get("parent"), "parent_key": info.get("parent_key"),
           "parent_set_digest": m.inputs.get("set"), "metric": info.get("metric"),
           "kept": cset.origin.tolist() if cset.origin is not None else None, "scores": None}
    scores_m = _by_digest(store, "score", "scores", m.inputs.get("scores"))
    if scores_m is not None and info.get("metric") not in (None, "random", "ssp"):
        from .score import load_scores

        run = m.params.get("score_run")
        doc["scores"] = load_scores(store, scores_m).values(info["metric"], run).tolist()
        doc["score_run"] = run
        doc["scores_key"] = scores_m.key
    return doc


def card_block(store: Store, m: Manifest, cset, name: str, selection: dict, exact: str) -> dict:
    """The card's `yoco` YAML block: what made the set, and how it scored."""
    info = (cset.meta or {}).get("pruned") or {}
    block: dict = {"name": name, "dataset": cset.dataset, "classes": cset.num_classes, "ipc": cset.ipc,
                   "value_space": cset.value_space, "set_digest": m.digest("set"), "key": m.key,
                   "version": __version__, "pixels": exact}
    if info:
        block["parent"] = {"name": info.get("parent"), "key": info.get("parent_key"),
                           "digest": m.inputs.get("set")}
        block["rule"] = {k: info.get(k) for k in ("key", "metric", "direction", "balance", "from", "to", "protocol")}
        block["rule"]["key"] = info.get("key") or "-".join(str(info.get(k)) for k in ("metric", "direction", "balance"))
        if info.get("lbpe_window"):
            block["lbpe_window"] = info["lbpe_window"]
    dyn = _dynamics_of(store, selection.get("scores_key"))
    if dyn:
        block["dynamics"] = dyn
    hubsrc = next((r.meta["hub"] for r in _lineage(store, m) if r.meta.get("hub")), None)
    if hubsrc:  # the Hub repo the set (or its ancestor) was fetched from
        block["source"] = hubsrc
    evals = evaluations(store, m)
    if evals:
        block["evaluations"] = evals
    return block


def _dynamics_of(store: Store, scores_key: str | None) -> dict | None:
    if not scores_key:
        return None
    sm = _run_by_key(store, scores_key)
    stats = {d for k, d in (sm.inputs.items() if sm else []) if k.startswith("dynamics.")}
    for g in store.all_runs("dynamics"):
        if stats and stats <= {o["digest"] for o in g.outputs.values()}:
            model = g.meta.get("model") or {}
            return {"seeds": g.meta.get("seeds"), "epochs": g.meta.get("epochs"),
                    "model": model.get("name") if isinstance(model, dict) else model, "key": g.key}
    return None


def evaluations(store: Store, m: Manifest) -> list[dict]:
    from .evaluate import STAGE as EVAL

    rows = []
    for r in store.all_runs(EVAL):
        if r.meta.get("set") == m.key:
            model = r.meta.get("model") or {}
            rows.append({"model": model.get("name") if isinstance(model, dict) else model,
                         "epochs": r.meta.get("epochs"), "repeats": r.meta.get("repeats"),
                         "best_mean": r.meta.get("best_mean"), "best_std": r.meta.get("best_std"),
                         "last_mean": r.meta.get("last_mean"), "last_std": r.meta.get("last_std")})
    return sorted(rows, key=lambda r: (str(r["model"]), r["epochs"] or 0, r["repeats"] or 0))


def card_body(name: str, repo: str | None, block: dict, rows: int, exact: str) -> str:
    repo_name = repo or "OWNER/NAME"
    lines = [f"# {name}", "",
             (f"A {block['dataset']} set of {rows} images ({block['classes']} classes, IPC {block['ipc']}), "
             f"published by yoco {block['version']}."), "",
             "```python", "from datasets import load_dataset", "",
             f'ds = load_dataset("{repo_name}", split="train")  # columns: image (PNG), label (ClassLabel)', "```", "",
             f"`yoco fetch hf:{repo_name}` stores it as a yoco set with its provenance."]
    if "rule" in block:
        r = block["rule"]
        lines += ["", "## How it was made", "",
                  (f"Pruned from `{block['parent']['name']}` (set digest `{str(block['parent']['digest'])[:16]}`) "
                   f"from IPC {r['from']} to IPC {r['to']} by `{r['key']}`.")]
        if "dynamics" in block:
            d = block["dynamics"]
            lines.append(f"Scores from training dynamics of {d['model']}, seeds {d['seeds']}, {d['epochs']} epochs.")
        lines.append("`yoco/selection.json` holds the kept indices into the parent and the scores that chose them.")
    if block.get("evaluations"):
        lines += ["", "## Evaluation", "", "| model | epochs | repeats | best top-1 | last top-1 |",
                  "|---|---|---|---|---|"]
        for e in block["evaluations"]:
            lines.append(f"| {e['model']} | {e['epochs']} | {e['repeats']} | {100 * e['best_mean']:.2f} ± "
                         f"{100 * e['best_std']:.2f} | {100 * e['last_mean']:.2f} ± {100 * e['last_std']:.2f} |")
    lines += ["", "## Files", "", "- `data/train-*.parquet`: the images (lossless PNG) and labels",
              "- `yoco/set.json`: the set's metadata and provenance; `yoco/selection.json`: kept indices, scores"]
    if exact == "safetensors":
        lines.append("- `yoco/set.safetensors`: the exact float32 tensors (8-bit PNG rounds these values)")
    return "\n".join(lines) + "\n"
