"""Stage "dataset": a real dataset's published files (or a local image tree) -> one stored array file.

Each is decoded once into the store (uint8 images, int64 labels, one safetensors file) and
named (`cifar10`, ...), so later loads read one file. The readers are pure functions in
data/readers.py; this module adds downloading, the store and progress.

`load_real(name, store)` is how every stage gets a `RealDataset`: the embedded digits, a
registered dataset (downloaded on first use, with a note), or `folder:PATH`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..data import real
from ..data.readers import (
    FOLDER_TEST_FRACTION,
    IMAGENET10_WNIDS,
    READERS,
    Decoded,
    channel_stats,
    read_folder,
    scan_folder,
    scan_imagenet,
    tree_digest,
)
from ..errors import UsageError
from ..progress import SILENT, Reporter

log = logging.getLogger(__name__)

STAGE = "dataset"
VERSION = 1


def _save(tmp: Path, name: str, d: Decoded, extra: dict, label: str | None = None):
    import torch

    from .. import tensors
    from ..store import StageResult

    mean, std = channel_stats(name, d)
    meta = {"name": name, "classes": d.classes, "mean": list(mean), "std": list(std), **d.meta, **extra}
    path = tensors.save(tmp / "dataset.safetensors", {
        "train_x": torch.from_numpy(d.train_x), "train_y": torch.from_numpy(d.train_y),
        "test_x": torch.from_numpy(d.test_x), "test_y": torch.from_numpy(d.test_y)}, meta)
    shape = list(d.train_x.shape[1:])
    summary = (f"{label or name}: {len(d.train_y)} train + {len(d.test_y)} test images {shape}, "
               f"{len(d.classes)} classes")
    return StageResult({"data": path}, {**meta, "summary": summary, "train": len(d.train_y),
                                        "test": len(d.test_y), "shape": shape})


def _store(store):
    from ..store import Store

    return (store or Store()).ensure()


def prepare(store, name: str, opts=None):
    """Download (if allowed) and decode a registered dataset; (manifest, cached)."""
    from ..remote import registry
    from ..store import run_cached
    from . import downloads

    if name not in READERS:
        raise UsageError(f"yoco has no reader for the dataset {name!r}",
                         f"readers exist for {', '.join(READERS)}; for image files use folder:PATH")
    roles, reader = READERS[name]
    entries = {e.attrs.get("role"): e for e in registry.load() if e.kind == "dataset" and e.group == name}
    lost = [r for r in roles if r not in entries]
    if lost:
        raise UsageError(f"the registry has no {name} file for {', '.join(lost)}",
                         "add `<name> sha256:...|- URL kind=dataset dataset=NAME role=ROLE` with YOCO_REGISTRY")
    opts = opts or downloads.Options()
    todo = downloads.missing(store, [entries[r] for r in roles])
    if downloads.needs_network(todo) and downloads.offline_requested(opts.offline):
        raise downloads.offline_error(downloads.needs_network(todo))
    fetched = {r: downloads.ensure_download(store, entries[r], opts)[0] for r in roles}
    inputs = {r: m.digest("file") for r, m in fetched.items()}

    def compute(tmp: Path, key: str):
        # each file is hashed before its reader opens it (a damaged one is quarantined and refetched)
        files = {r: store.verified_path(m, "file") for r, m in fetched.items()}
        return _save(tmp, name, reader(files), {"source": "registry"})

    # a download that fails to decode is dropped, so the next fetch (or load) downloads it afresh
    with downloads.dropped_if_undecodable(store, name, list(fetched.values())):
        return run_cached(store, STAGE, VERSION, {"name": name}, inputs, compute, ref=name)


def prepare_folder(store, root: Path, crop: int | None = None, name: str | None = None, wnids=None,
                   reporter: Reporter = SILENT):
    """An ImageFolder tree (or the ImageNet-10 subset of one) into the store, keyed by content."""
    from ..store import run_cached

    if wnids is None:
        classes, rows = scan_folder(root)
        split = "train/ and test/ (or val/) folders" if (root / "train").is_dir() else \
            f"one tree: per class, files ordered by sha256 of their path, first {FOLDER_TEST_FRACTION:.0%} to test"
        params: dict[str, Any] = {"reader": "imagefolder", "split": split}
    else:
        classes, rows = scan_imagenet(root, wnids)
        params = {"reader": "imagenet-subset", "classes": list(wnids), "resize_crop": crop}
    params["tree"] = tree_digest([(f"{r[3]}/{r[0]}", r[1]) for r in rows])
    label = name or f"folder:{root}"

    def compute(tmp: Path, key: str):
        with reporter.progress(transient=True) as prog:
            task = prog.add_task(f"reading {label}", total=len(rows), status="")
            d = read_folder(root, rows, classes, crop=crop, tick=lambda: prog.advance(task))
        d.meta["split"] = params.get("split", "train/ and val/ folders")
        return _save(tmp, name or "folder", d, {"source": str(root)}, label=root.name if name is None else name)

    return run_cached(store, STAGE, VERSION, params, {}, compute, ref=name)


def prepare_local(store, name: str, source: Path | None):
    """Datasets that cannot be downloaded (ImageNet-10): read them from `source`."""
    if name != "imagenet10":
        raise UsageError(f"no reader for the local dataset {name}")
    source = source or (Path(os.environ["YOCO_IMAGENET_DIR"]) if os.environ.get("YOCO_IMAGENET_DIR") else None)
    if source is None:
        hit = _ref_run(store, name)
        if hit is not None:
            return hit, True
        raise UsageError("ImageNet cannot be downloaded: give a local copy",
                         "`yoco fetch imagenet10 --source PATH` (PATH/train/<wnid>/, PATH/val/<wnid>/) "
                         "or set YOCO_IMAGENET_DIR")
    return prepare_folder(store, Path(source).expanduser(), crop=224, name=name, wnids=IMAGENET10_WNIDS)


def _ref_run(store, name: str):
    ref = store.refs().get(name)
    return store.load_run(*ref) if ref and ref[0] == STAGE else None


# -- loading into the RealDataset interface ---------------------------------------------------
def to_real(store, m, name: str) -> real.RealDataset:
    from .. import tensors

    ts, meta = tensors.load(store.read_output(m, "data"))  # verified: a damaged copy is quarantined
    f = lambda t: t.float().div_(255.0)
    return real.RealDataset(name=name, train_x=f(ts["train_x"]), train_y=ts["train_y"].long(),
                            test_x=f(ts["test_x"]), test_y=ts["test_y"].long(), classes=list(meta["classes"]),
                            mean=tuple(meta["mean"]), std=tuple(meta["std"]),
                            meta={k: v for k, v in meta.items() if k not in ("classes", "mean", "std")})


def known() -> list[str]:
    """Every dataset name `load_real` accepts (besides `folder:PATH`)."""
    return sorted({"digits", "imagenet10", *READERS})


def load_real(name: str, store=None, reporter: Reporter = SILENT) -> real.RealDataset:
    """A real dataset by name (`digits`, `cifar10`, ..., or `folder:PATH`). A registered dataset
    that is not in the store yet is downloaded first, with a note through `reporter`."""
    log.info("loading the real dataset %s", name)
    if name == "digits":
        from ..data.digits import load_digits

        return load_digits()
    if name.startswith("folder:"):
        s = _store(store)
        m, _ = prepare_folder(s, Path(name[len("folder:"):]).expanduser(), reporter=reporter)
        return to_real(s, m, name)
    if name == "imagenet10":
        s = _store(store)
        m, _ = prepare_local(s, "imagenet10", None)
        return to_real(s, m, "imagenet10")
    if name in READERS:
        return _load_registered(name, _store(store), reporter)
    import difflib

    close = sorted(set(difflib.get_close_matches(name, known(), n=3)))
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known())}, or folder:PATH"
    raise UsageError(f"unknown dataset {name!r}", hint)


def _load_registered(name: str, store, reporter: Reporter) -> real.RealDataset:
    from ..remote import registry
    from . import downloads

    entries = [e for e in registry.load() if e.kind == "dataset" and e.group == name]
    if downloads.missing(store, entries) and not downloads.offline_requested():
        reporter.info(f"{name} is not in the store yet: downloading it (`yoco fetch {name}` does this ahead)")
    downloads.download_all(store, entries, downloads.Options(), reporter=reporter)
    m, _ = prepare(store, name, downloads.Options())
    return to_real(store, m, name)


def dataset_stats(name: str, store=None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the reference normalizes `name` with (docs/method.md §1.2), known without loading the data
    for the published datasets; digits and folders use their own train split's."""
    if name in real.STATS:
        return real.STATS[name]
    ds = load_real(name, store)
    return tuple(ds.mean), tuple(ds.std)
