"""Readers and writers for the published condensed-set formats (docs/method.md §1.1).

    format  file(s)                          object in the file                      value space  factor
    idc     data.pt                          [data, targets]                         raw01        2 (<128 px) / 3
    dream   data.pt                          [data, targets] (IDC's layout)          raw01        2 (<128 px) / 3
    mtt     images_best.pt + labels_best.pt  one tensor per file                     normalized*  1
    dsa     res_DSA_*.pt / data.pt           {'data': [[img, lab], ...per experiment]} normalized  1
    kip     kip_ipc*.pt / data.pt            (data NHWC, one-hot or soft labels)     zca          1
    yoco    *.safetensors                    our own format (data/condensed.py)      as recorded  as recorded
    (* MTT also published ZCA-whitened sets: pass value_space="zca" for those.)

Foreign `.pt` files are opened with `torch.load(weights_only=True)` (plus NumPy arrays, which
some converted files hold): a pickle that would call anything else is refused (exit 3).
Class membership always comes from the labels, never from index ranges (docs/method.md §9.6).
`export` writes a set back in any of these layouts, but only into a layout whose readers take
its values in the set's own value space (an IDC file must hold raw pixels), see EXPORT_SPACES.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, UsageError
from ..files import atomic_write
from .condensed import VALUE_SPACES, CondensedSet, validate
from .decode import check_factor
from .real import NUM_CLASSES


@dataclass(frozen=True)
class Layout:
    """One published file layout, declared once: the import/export choices, help and checks read it."""
    read_space: str | None           # the value space its readers take the values to be (None: the file says)
    write_spaces: tuple[str, ...]    # the value spaces a set may have to be written in it (docs/method.md §9.4)
    tiled: bool = False              # f x f multi-formation tiles per stored image (IDC, DREAM)


LAYOUTS: dict[str, Layout] = {
    "idc": Layout("raw01", ("raw01",), tiled=True), "dream": Layout("raw01", ("raw01",), tiled=True),
    "mtt": Layout("normalized", ("normalized", "zca")), "dsa": Layout("normalized", ("normalized",)),
    "kip": Layout("zca", ("zca",)), "yoco": Layout(None, VALUE_SPACES),
}
FORMATS = tuple(LAYOUTS)
DEFAULT_SPACE = {name: lay.read_space for name, lay in LAYOUTS.items() if lay.read_space is not None}
MTT_IMAGES, MTT_LABELS = "images_best.pt", "labels_best.pt"

# (channels, side) of each dataset's images, for --dataset inference.
SHAPES = {"digits": (1, 8), "mnist": (1, 28), "fashion": (1, 28), "cifar10": (3, 32), "svhn": (3, 32),
          "cifar100": (3, 32), "imagenet10": (3, 224)}
# Shapes several datasets share, resolved in favour of the one every published set of that
# shape belongs to (YOCO's 10-class 32 px sets are all CIFAR-10); a note says so.
PREFERRED = {(3, 32, 10): "cifar10"}


@dataclass
class Loaded:
    """A read set plus the files it came from (for hashing) and notes worth telling the user."""

    cset: CondensedSet
    files: list[Path]
    fmt: str
    notes: list[str] = field(default_factory=list)


def default_factor(fmt: str, side: int) -> int:
    """IDC/DREAM store f x f tiles per image: f = 2 at CIFAR size, 3 at ImageNet size (docs/method.md §1.1)."""
    if fmt in LAYOUTS and LAYOUTS[fmt].tiled:
        return 3 if side >= 128 else 2
    return 1


def read(path: Path | str, fmt: str = "auto", **options: Any) -> CondensedSet:
    """Read a condensed set from a published layout; options as for `load`."""
    return load(path, fmt, **options).cset


def load(path: Path | str, fmt: str = "auto", dataset: str | None = None, factor: int | None = None,
         ipc: int | None = None, experiment: int = 0, value_space: str | None = None) -> Loaded:
    """Read PATH as FMT (or detect it) into a validated CondensedSet.

    experiment: which run of a DSA multi-experiment file (0 as YOCO; IDC's loader uses -1).
    value_space: override the format's default (e.g. "zca" for MTT's ZCA sets).
    """
    fmt = check_format(fmt)
    if value_space is not None and value_space not in VALUE_SPACES:
        raise UsageError(f"unknown value space {value_space!r}", f"use one of {', '.join(VALUE_SPACES)}")
    files = locate(Path(path), fmt)
    if fmt == "yoco" or (fmt == "auto" and len(files) == 1 and _is_safetensors(files[0])):
        return _load_own(files[0], dataset, factor, ipc, value_space)
    objs = [open_torch_file(f) for f in files]
    if fmt == "auto":
        fmt = detect(objs, files)
    notes: list[str] = []
    note, ipc_nominal = read_export_note(files[0]), None
    if note is not None:
        dataset, factor, ipc_nominal, value_space = _apply_note(note, files[0], fmt, dataset, factor, value_space,
                                                                notes)
    images, labels, info = _EXTRACT[fmt](objs, experiment, notes)
    images = _as_images(images, fmt, info)
    labels = _to_tensor(labels, "labels")
    width = int(labels.shape[1]) if labels.dim() == 2 and fmt == "kip" else None
    labels = _as_labels(labels, fmt, info)
    if labels.dim() == 1 and labels.numel() and int(labels.min()) < 0:  # before validate: it would quote 2^30
        raise IntegrityError(f"{files[0]}: labels must lie in 0, 1, 2, ... (class indices), found {int(labels.min())}")
    try:
        validate(images, labels, 1 << 30)  # rank, counts, NaN/Inf first: they are the file's fault
    except IntegrityError as e:
        raise IntegrityError(f"{files[0]}: {e.message}", e.hint) from None
    if not labels.numel():
        raise IntegrityError(f"{files[0]} holds no images")
    if note is not None and dataset is not None and note.get("dataset") == dataset and dataset not in NUM_CLASSES:
        num_classes = int(note["num_classes"])  # a yoco export of a folder: dataset; its name is not a known one
    else:
        dataset, num_classes = resolve_dataset(dataset, images, labels, width, files, notes)
    side = int(images.shape[-1])
    factor = default_factor(fmt, side) if factor is None else int(factor)
    check_factor(factor, int(images.shape[-2]), side)
    space = value_space or DEFAULT_SPACE[fmt]
    _check_range(images, space, notes)
    if note is not None and isinstance(note.get("pruned"), dict):
        info = {**info, "pruned": note["pruned"]}  # a pruned set keeps its IPC unit (source factor) and rule
    cset = CondensedSet(images=images, labels=labels, dataset=dataset, num_classes=num_classes, factor=factor,
                        value_space=space, ipc=ipc_nominal,
                        meta={"format": fmt, **info})
    _check_ipc(cset, ipc, notes)
    return Loaded(cset, files, fmt, notes)


# -- yoco's own exports carry what the layouts cannot say ----------------------------------------
# A pruned set is written at factor 1 (its decoded images), but IDC readers assume f=2 at this
# size: read back without more, 40 images became 160. So every torch.save layout yoco writes
# carries one extra zip member, `<archive>/yoco.json`, with the set's factor, IPC, dataset and
# value space. torch.load ignores members it does not know, so the reference still reads the file.
EXPORT_NOTE = "yoco.json"
EXPORT_NOTE_FORMAT = "yoco-export/1"
_NOTE_MAX = 64 << 10


def export_note(cset: CondensedSet, fmt: str) -> dict:
    note = {"format": EXPORT_NOTE_FORMAT, "layout": fmt, "dataset": cset.dataset, "num_classes": cset.num_classes,
            "ipc": cset.ipc, "factor": cset.factor, "value_space": cset.value_space}
    if isinstance((cset.meta or {}).get("pruned"), dict):
        note["pruned"] = cset.meta["pruned"]
    return note


def read_export_note(path: Path) -> dict | None:
    """The yoco.json member of a torch.save archive written by yoco's export, else None."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:  # not a zip: BadZipFile, below
            member = next((i for i in z.infolist() if i.filename.endswith("/" + EXPORT_NOTE)), None)
            if member is None or member.file_size > _NOTE_MAX:
                return None
            note = json.loads(z.read(member).decode("utf-8"))
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    if not isinstance(note, dict) or note.get("format") != EXPORT_NOTE_FORMAT:
        return None
    try:
        int(note["factor"]), int(note["ipc"]), int(note["num_classes"]), str(note["dataset"])
    except (KeyError, TypeError, ValueError):
        raise IntegrityError(f"{path}: yoco's export metadata ({EXPORT_NOTE}) is damaged",
                             "pass --factor, --ipc and --dataset, or export the set again") from None
    if note.get("value_space") not in VALUE_SPACES:
        raise IntegrityError(f"{path}: yoco's export metadata names an unknown value space {note.get('value_space')!r}")
    return note


def _apply_note(note: dict, path: Path, fmt: str, dataset, factor, value_space, notes: list[str]):
    """(dataset, factor, nominal IPC, value space): the user's options win over the file's record."""
    said = []
    if factor is None:
        factor = int(note["factor"])
        said.append(f"factor {factor}")
    elif int(factor) != int(note["factor"]):
        notes.append(f"--factor {factor} overrides factor {note['factor']} recorded in {path.name}")
    if dataset is None:
        dataset = str(note["dataset"])
        said.append(f"dataset {dataset}")
    if value_space is None:
        value_space = str(note["value_space"])
        said.append(f"value space {value_space}")
    said.append(f"IPC {note['ipc']}")
    if note.get("layout") and note["layout"] != fmt:
        notes.append(f"{path.name} was written as {note['layout']} but is read as {fmt}")
    notes.append(f"{', '.join(said)} read from yoco's export metadata in {path.name}")
    return dataset, factor, int(note["ipc"]), value_space


def _append_note(path: str, note: dict) -> None:
    """Add yoco.json to the archive torch.save just wrote (fixed timestamp: same set => same bytes)."""
    import json
    import zipfile

    with zipfile.ZipFile(path, "a") as z:
        prefix = z.namelist()[0].split("/")[0]
        info = zipfile.ZipInfo(f"{prefix}/{EXPORT_NOTE}", date_time=(1980, 1, 1, 0, 0, 0))
        z.writestr(info, json.dumps(note, sort_keys=True, separators=(",", ":")))


def check_format(fmt: str) -> str:
    name = (fmt or "").strip().lower()
    if name == "auto" or name in FORMATS:
        return name
    close = difflib.get_close_matches(name, list(FORMATS) + ["auto"], n=1)
    hint = f"did you mean {close[0]}?" if close else f"use one of {', '.join(FORMATS)} or auto"
    raise UsageError(f"unknown format {fmt!r}", hint)


# -- finding and opening files ---------------------------------------------------------

def locate(path: Path, fmt: str) -> list[Path]:
    """The file(s) to read: MTT is a pair (a folder, or either of its two files); others one file."""
    if not path.exists():
        raise UsageError(f"{path} does not exist", "check the path")
    mtt_pair = [path / MTT_IMAGES, path / MTT_LABELS] if path.is_dir() else \
        [path.with_name(MTT_IMAGES), path.with_name(MTT_LABELS)] if path.name in (MTT_IMAGES, MTT_LABELS) else None
    if fmt == "mtt" or (fmt == "auto" and mtt_pair and (path.is_file() or mtt_pair[0].exists())):
        if mtt_pair is None:
            mtt_pair = [path, path.with_name(MTT_LABELS)]  # an images file under another name
        missing = [p for p in mtt_pair if not p.is_file()]
        if missing:
            raise UsageError(f"MTT sets are two files and {missing[0]} is missing",
                             f"put {MTT_IMAGES} and {MTT_LABELS} in one folder and pass the folder")
        return mtt_pair
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not a condensed-set file",
                         f"pass the file itself (e.g. {path / 'data.pt'}); only MTT sets are read from a folder")
    return [path]


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"  # 8-byte header length, then the JSON header


def check_torch_zip(path: Path) -> None:
    """Refuse a torch zip file whose members declare more than it can hold, before torch inflates any:
    torch allocates a member's declared size and inflates into it (a 1 MB file of one deflated member
    of 1 GiB of zeros took 2.3 GB). Each member may declare at most MAX_EXPANSION times the file's size
    (torch itself writes members stored, as they are), all of them together at most YOCO_MAX_MEMORY."""
    import zipfile

    from .. import limits
    from .readers import MAX_EXPANSION

    path = Path(path)
    if not zipfile.is_zipfile(path):
        return  # a legacy torch.save stream: torch.load reads it
    on_disk, limit, total = path.stat().st_size, limits.memory_limit(), 0
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise IntegrityError(f"{path} is not a torch file ({e})", _NOT_TORCH_HINT) from None
    for m in members:
        total += m.file_size
        stored_wrong = m.compress_type == zipfile.ZIP_STORED and m.file_size != m.compress_size
        if stored_wrong or m.file_size > MAX_EXPANSION * on_disk + (1 << 20):
            raise IntegrityError(f"{path}: its member {m.filename} declares {limits.human(m.file_size)} when "
                                 f"inflated, from a {limits.human(on_disk)} file (a compression bomb?)",
                                 "torch.save never writes such a file; yoco refused it before inflating anything")
        if total > limit:
            raise IntegrityError(f"{path}: its members declare {limits.human(total)}, above the memory limit of "
                                 f"{limits.human(limit)} ({limits.ENV})",
                                 f"if the file is genuine, raise {limits.ENV}")


def open_torch_file(path: Path) -> Any:
    """torch.load with weights_only=True (tensors, containers, NumPy arrays); never runs code. Declared
    member sizes are checked first (check_torch_zip)."""
    import pickle
    import warnings

    import torch

    check_torch_zip(path)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_numpy_globals()):
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise IntegrityError(
                f"{path} would run code when loaded ({found.group(1)}); yoco refuses such pickles",
                "only tensors, arrays and plain containers are read from foreign .pt files",
            ) from None
        raise IntegrityError(f"{path} is not a torch file yoco can read safely", _NOT_TORCH_HINT) from None
    except Exception as e:  # noqa: BLE001  torch raises KeyError/EOFError/RuntimeError for non-torch bytes
        raise IntegrityError(f"{path} is not a torch file ({type(e).__name__})", _NOT_TORCH_HINT) from None


_NOT_TORCH_HINT = "condensed sets are read from torch.save files (or yoco's .safetensors)"


def _numpy_globals() -> list:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    allow = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)  # NumPy >= 1.25 pickles dtypes by class
    names = ("Float16", "Float32", "Float64", "Int8", "Int16", "Int32", "Int64", "UInt8", "Bool")
    return allow + [getattr(dtypes, f"{n}DType") for n in names if hasattr(dtypes, f"{n}DType")]


# -- structure ---------------------------------------------------------------------------

def detect(objs: list, files: list[Path]) -> str:
    """Tell the format from the object's structure (and, for IDC vs DREAM, the path)."""
    if len(objs) == 2:
        return "mtt"
    obj = objs[0]
    if isinstance(obj, dict) and isinstance(obj.get("data"), (list, tuple)):
        return "dsa"
    if isinstance(obj, (list, tuple)) and len(obj) == 2 and all(_is_array(o) for o in obj):
        data, target = obj
        if _channels_last(data) or getattr(target, "ndim", 1) == 2:
            return "kip"
        return "dream" if "dream" in _tokens(files[0]) else "idc"
    if _is_array(obj):
        raise IntegrityError(f"{files[0]} holds a single tensor and no labels",
                             f"an MTT set needs {MTT_LABELS} next to {MTT_IMAGES}")
    raise IntegrityError(f"{files[0]} does not hold a condensed-set layout yoco knows ({_shape_of(obj)})",
                         "expected [data, targets] (idc/dream/kip), a DSA dict or an MTT image/label pair")


def _extract_pair(objs, experiment, notes):
    obj = objs[0]
    if not (isinstance(obj, (list, tuple)) and len(obj) == 2):
        raise IntegrityError(f"expected a 2-element [data, targets], found {_shape_of(obj)}")
    return obj[0], obj[1], {}


def _extract_dsa(objs, experiment, notes):
    obj = objs[0]
    exps = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(exps, (list, tuple)) or not exps:
        raise IntegrityError(f"expected a DSA dict {{'data': [[images, labels], ...]}}, found {_shape_of(obj)}")
    n = len(exps)
    if not -n <= experiment < n:
        raise UsageError(f"--experiment {experiment} is out of range: the file holds {n} experiment(s)",
                         f"use 0..{n - 1} (or -1 for the last, as IDC does)")
    pair = exps[experiment]
    if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
        raise IntegrityError(f"DSA experiment {experiment} is not an [images, labels] pair")
    if n > 1:
        notes.append(f"the DSA file holds {n} experiments; using index {experiment} (--experiment)")
    return pair[0], pair[1], {"experiment": experiment % n, "experiments": n}


def _extract_mtt(objs, experiment, notes):
    if len(objs) != 2:
        raise IntegrityError("an MTT set is two files", f"{MTT_IMAGES} and {MTT_LABELS}")
    return objs[0], objs[1], {}


_EXTRACT = {"idc": _extract_pair, "dream": _extract_pair, "kip": _extract_pair,
            "dsa": _extract_dsa, "mtt": _extract_mtt}


def _as_images(x, fmt: str, info: dict):
    import torch

    x = _to_tensor(x, "images")
    if fmt == "kip" and _channels_last(x):
        x = x.permute(0, 3, 1, 2)  # KIP stores NHWC
        info["layout"] = "NHWC"
    if x.dtype == torch.uint8 and DEFAULT_SPACE[fmt] == "raw01":
        x = x.float() / 255.0  # 8-bit raw pixels (some re-hosted IDC files)
        info["from_uint8"] = True
    if x.is_floating_point():
        x = x.float()
    return x.contiguous()


def _as_labels(y, fmt: str, info: dict):
    import torch

    if y.dim() == 2 and fmt == "kip":
        if not bool(((y == 0) | (y == 1)).all()) or not bool((y.sum(1) == 1).all()):
            info["soft_labels"] = True  # KIP learns its labels; the class is the argmax
        return y.argmax(dim=1)
    if y.dim() != 1:
        return y  # validate() reports the rank
    if y.is_floating_point():
        if bool(torch.isfinite(y).all()) and bool((y == y.round()).all()):
            return y.long()
        raise IntegrityError("labels are not whole numbers", "labels must be class indices (or one-hot for kip)")
    return y.long()


def _to_tensor(x, what: str):
    import numpy as np
    import torch

    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    raise IntegrityError(f"{what} must be a tensor, found {type(x).__name__}")


def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _channels_last(x) -> bool:
    shape = tuple(getattr(x, "shape", ()))
    return len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3)


def _shape_of(obj) -> str:
    if isinstance(obj, dict):
        return "a dict with keys " + ", ".join(map(repr, list(obj)[:5]))
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)}"
    return type(obj).__name__


def _tokens(path: Path) -> set[str]:
    return {t for part in path.resolve().parts for t in re.split(r"[^a-z0-9]+", part.lower()) if t}


# -- dataset, classes, IPC -------------------------------------------------------------------

def resolve_dataset(dataset: str | None, images, labels, width: int | None, files: list[Path],
                    notes: list[str]) -> tuple[str, int]:
    """--dataset if given (checked against the images), else inferred from shape, classes and path."""
    c, side = int(images.shape[1]), int(images.shape[-1])
    seen = width or int(labels.max()) + 1
    if dataset is not None:
        name = dataset.strip().lower()
        if name not in NUM_CLASSES:
            close = difflib.get_close_matches(name, list(NUM_CLASSES), n=1)
            raise UsageError(f"unknown dataset {dataset!r}",
                             f"did you mean {close[0]}?" if close else f"use one of {', '.join(sorted(NUM_CLASSES))}")
        if name in SHAPES and SHAPES[name] != (c, side):
            raise UsageError(f"the file's images are {c}x{side}x{side} but {name} images are "
                             f"{SHAPES[name][0]}x{SHAPES[name][1]}x{SHAPES[name][1]}", "check --dataset")
        if width is not None and width != NUM_CLASSES[name]:
            raise IntegrityError(f"labels have {width} columns but {name} has {NUM_CLASSES[name]} classes")
        return name, NUM_CLASSES[name]
    fits = [d for d, shape in SHAPES.items() if shape == (c, side) and NUM_CLASSES[d] == seen]
    named = [d for d in fits if d in _tokens(files[0])]
    if len(named) == 1 or len(fits) == 1:
        return (named or fits)[0], NUM_CLASSES[(named or fits)[0]]
    if (c, side, seen) in PREFERRED:
        name = PREFERRED[(c, side, seen)]
        notes.append(f"assuming dataset {name} ({c}x{side}x{side}, {seen} classes; "
                     f"could also be {', '.join(d for d in fits if d != name)}): pass --dataset to choose")
        return name, NUM_CLASSES[name]
    candidates = ", ".join(fits) if fits else "none of " + ", ".join(sorted(NUM_CLASSES))
    raise UsageError(f"cannot tell the dataset of {c}x{side}x{side} images with {seen} classes "
                     f"(candidates: {candidates})", "pass --dataset NAME")


def _check_ipc(cset: CondensedSet, ipc: int | None, notes: list[str]) -> None:
    counts = cset.class_counts()
    if min(counts) != max(counts):
        notes.append(f"classes hold {min(counts)} to {max(counts)} images each (not balanced)")
    if ipc is not None and ipc != cset.ipc:
        raise UsageError(f"--ipc {ipc} does not match the file, which holds {cset.ipc} images per class",
                         "omit --ipc to take it from the labels")


def _check_range(images, space: str, notes: list[str]) -> None:
    # IDC clamps to [0, 1] before its last update, so raw sets slightly overshoot; far outside
    # means the user has a normalized set labelled raw, which would then be normalized twice.
    if space == "raw01" and images.numel():
        lo, hi = float(images.min()), float(images.max())
        if lo < -0.5 or hi > 1.5:
            notes.append(f"pixel values span {lo:.2f}..{hi:.2f}, far outside [0, 1]: if the set is already "
                         "normalized, pass --value-space normalized")


def _load_own(path: Path, dataset, factor, ipc, value_space) -> Loaded:
    cset = CondensedSet.load(path)
    if dataset is not None and dataset.strip().lower() != cset.dataset:
        raise UsageError(f"{path} is a {cset.dataset} set, not {dataset}", "omit --dataset for yoco files")
    if factor is not None:
        check_factor(int(factor), int(cset.images.shape[-2]), int(cset.images.shape[-1]))
    cset = replace(cset, factor=int(factor) if factor is not None else cset.factor,
                   value_space=value_space or cset.value_space)
    notes: list[str] = []
    _check_ipc(cset, ipc, notes)
    return Loaded(cset, [path], "yoco", notes)


# -- writing ---------------------------------------------------------------------------------------

# What each layout's readers take its values to be. Writing a set into a layout of another
# value space would make the next reader normalize it twice (or not at all), docs/method.md §9.4.
EXPORT_SPACES = {name: lay.write_spaces for name, lay in LAYOUTS.items()}


def import_help() -> str:
    """`yoco import --format`'s help."""
    return " | ".join(FORMATS) + " | auto (detected from the file's structure)."


def export_help() -> str:
    """`--format` of `yoco export` (and prune's `--export-format`): the layouts and the value space each takes."""
    spaces = "; ".join(f"{name}: {' or '.join(lay.write_spaces)}" for name, lay in LAYOUTS.items()
                       if lay.read_space is not None)
    return f"{' | '.join(FORMATS)}. The set's value space must match the layout's ({spaces})."


def export(cset: CondensedSet, path: Path | str, fmt: str = "idc") -> list[str]:
    """Write CSET in a published layout (atomically: temp file, then rename); returns notes.

    idc/dream: [data, targets]; dsa: {'data': [[images, labels]], 'accs_all_exps': {}};
    kip: (NHWC images, one-hot float labels); mtt: PATH is a folder that receives
    images_best.pt and labels_best.pt; yoco: our safetensors file. Foreign layouts are written
    class-sorted, since their readers assume it. Only sets whose value space matches the
    layout's (EXPORT_SPACES) are written: the layouts carry no value-space field.
    """
    import torch

    fmt = check_export(fmt, cset.value_space)
    out = _export_target(Path(path), fmt)
    if fmt == "yoco":
        atomic_write(out, lambda p: cset.save(p))
        return []
    labels, order = torch.sort(cset.labels, stable=True)
    images = cset.images[order].contiguous()
    notes = []
    if not torch.equal(order, torch.arange(len(order))):
        notes.append(f"images were reordered by class ({fmt} readers assume class-sorted files)")
    expected = default_factor(fmt, int(cset.images.shape[-1]))
    if cset.factor != expected:
        notes.append(f"this set has factor {cset.factor}; {fmt} readers assume {expected} for this image size "
                     f"(`yoco import` reads the factor from the file; tell other readers f={cset.factor})")
    note = export_note(cset, fmt)
    if fmt == "mtt":
        atomic_write(out / MTT_IMAGES, lambda p: _save(images, p, note))
        atomic_write(out / MTT_LABELS, lambda p: _save(labels, p))
    elif fmt == "dsa":
        atomic_write(out, lambda p: _save({"data": [[images, labels]], "accs_all_exps": {}}, p, note))
    elif fmt == "kip":
        one_hot = torch.nn.functional.one_hot(labels, cset.num_classes).float()
        atomic_write(out, lambda p: _save((images.permute(0, 2, 3, 1).contiguous(), one_hot), p, note))
    else:
        atomic_write(out, lambda p: _save([images, labels], p, note))
    return notes


def check_export(fmt: str, value_space: str) -> str:
    """The normalised layout name, if a set in `value_space` can be written in it (else a usage error)."""
    if (fmt or "").strip().lower() not in FORMATS:
        raise UsageError(f"cannot export format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    fmt = fmt.strip().lower()
    if value_space not in EXPORT_SPACES[fmt]:
        fits = sorted(f for f, lay in LAYOUTS.items() if value_space in lay.write_spaces and lay.read_space)
        raise UsageError(f"cannot export a {value_space} set as {fmt}: {fmt} readers take its values as "
                         f"{' or '.join(EXPORT_SPACES[fmt])}", f"export it as {' or '.join(fits)}")
    return fmt


def _export_target(out: Path, fmt: str) -> Path:
    if not out.parent.is_dir():
        raise UsageError(f"the folder {out.parent} does not exist", "create it first")
    if fmt == "mtt":
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out} is a file; MTT sets are written into a folder", "give a folder name")
        try:
            out.mkdir(exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create {out} ({e.strerror or e})", "choose a writable folder") from None
    elif out.is_dir():
        raise UsageError(f"{out} is a directory", "give a file name such as data.pt")
    return out


def _save(obj, path: str, note: dict | None = None) -> None:
    import torch

    with open(path, "wb") as f:
        torch.save(obj, f)  # through a file object the archive name is fixed: same set => same bytes
    if note is not None:
        _append_note(path, note)




