"""Readers for the real datasets' published on-disk formats: files in, arrays out.

    cifar10, cifar100   the python tarballs (pickled dicts of uint8 arrays), canonical 50k/10k split
    svhn                train_32x32.mat / test_32x32.mat (label 10 means digit 0)
    mnist, fashion      gzipped idx files, canonical 60k/10k split
    imagenet10          the 10 classes of docs/method.md §1.5 from a local ImageNet folder, Resize 224 + CenterCrop 224
    folder:PATH         any ImageFolder tree of image files (PATH/train + PATH/test, or one tree split)

Pure functions: no store, no network, no output. The `dataset` stage (stages/datasets.py)
downloads the files, calls these readers once and keeps the decoded arrays in the store.
Pickles are read by an unpickler that can build numpy arrays and nothing else: no code runs.

Hostile files cost bounded memory: every size a file declares (a tar member, an idx header, a
compressed MATLAB element) is checked against the limit below and against the file's own size
(a real archive of images barely compresses; a gzip bomb does) before anything is allocated,
and archive members are streamed, never read whole.
"""
from __future__ import annotations

import codecs
import gzip
import hashlib
import os
import pickle
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import IntegrityError, UsageError
from ..files import BoundedReader
from . import real

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
# docs/method.md §1.5: the first 10 WNIDs of the reference's class list, labels 0..9 in this order.
IMAGENET10_WNIDS = ("n02869837", "n01749939", "n02488291", "n02107142", "n13037406",
                    "n02091831", "n04517823", "n04589890", "n03062245", "n01773797")
FOLDER_TEST_FRACTION = 0.2
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
LIMIT_ENV = "YOCO_MAX_DECODED_BYTES"
DEFAULT_LIMIT = 4 << 30  # the largest real member is SVHN's extra X, 1.3 GB; CIFAR-100's train is 155 MB
MAX_EXPANSION = 64       # decoded bytes per byte on disk: images compress ~1.1x, MNIST idx ~5x, bombs ~1000x


def decoded_limit() -> int:
    """Most bytes one member or array of a dataset file may declare (YOCO_MAX_DECODED_BYTES)."""
    raw = os.environ.get(LIMIT_ENV, "").strip()
    try:
        return int(raw) if raw else DEFAULT_LIMIT
    except ValueError:
        raise UsageError(f"{LIMIT_ENV}={raw!r} is not a whole number of bytes", f"e.g. {LIMIT_ENV}={DEFAULT_LIMIT}") \
            from None


def check_declared(size: int, on_disk: int, what: str) -> None:
    """Refuse a declared size before allocating it: above the limit, or far more than the file could hold."""
    limit = decoded_limit()
    if size > limit:
        raise IntegrityError(f"{what} declares {size} bytes, over the {limit}-byte limit",
                             f"a real dataset file never does; if yours does, raise {LIMIT_ENV}")
    if size > MAX_EXPANSION * on_disk + (1 << 20):
        raise IntegrityError(f"{what} declares {size} bytes from a {on_disk}-byte file (a compression bomb?)",
                             "this is not a real dataset file")


@dataclass
class Decoded:
    """What a reader returns: numpy uint8 images (N, C, H, W), int64 labels, class names."""
    train_x: Any
    train_y: Any
    test_x: Any
    test_y: Any
    classes: list[str]
    meta: dict


# -- restricted unpickling (CIFAR) -------------------------------------------------------
class _ArraysOnly(pickle._Unpickler):
    """Builds numpy arrays, lists, dicts, strings; refuses every other callable.

    The pure-Python unpickler: it reads what an opcode declares through `read`, which `files.BoundedReader`
    clamps (the C one allocates the declared size first). Protocol 5's BYTEARRAY8, which allocates
    before reading and which no CIFAR file uses, is left out."""

    dispatch: ClassVar[dict] = {k: v for k, v in pickle._Unpickler.dispatch.items() if k != pickle.BYTEARRAY8[0]}

    def find_class(self, module: str, name: str):
        import numpy as np

        core = getattr(np, "_core", None) or np.core
        # _codecs.encode: how protocol-2 pickles written by Python 3 carry raw bytes (pure, harmless)
        allowed = {("multiarray", "_reconstruct"): core.multiarray._reconstruct,
                   ("multiarray", "scalar"): core.multiarray.scalar,
                   ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                   ("_codecs", "encode"): codecs.encode}
        key = ("multiarray", name) if module in ("numpy.core.multiarray", "numpy._core.multiarray") else (module, name)
        if key in allowed:
            return allowed[key]
        raise IntegrityError(f"the CIFAR pickle wants to call {module}.{name}, which yoco refuses to run",
                             "a real CIFAR file holds only arrays and lists; this file is not one")


def _unpickle(f, size: int, what: str) -> dict:
    try:
        obj = _ArraysOnly(BoundedReader(f, size), encoding="latin1").load()
    except IntegrityError:
        raise
    except Exception as e:  # noqa: BLE001  any malformed pickle: one line, exit 3
        raise IntegrityError(f"{what} is not a readable CIFAR pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise IntegrityError(f"{what} holds a {type(obj).__name__}, not the CIFAR dict")
    from .safe_pickle import check_expansion

    check_expansion(obj, what)  # shared nested lists: small in the file, huge once made an array
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _kind(member: tarfile.TarInfo) -> str:
    return "symbolic link" if member.issym() else "hard link" if member.islnk() else \
        "folder" if member.isdir() else "special file"


def _names(v) -> list[str]:
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in v]


# -- readers ------------------------------------------------------------------------------
def read_cifar(archive: Path, variant: int) -> Decoded:
    """CIFAR-10/100 python tarball, read member by member (nothing is extracted to disk)."""
    import numpy as np

    want = ({f"data_batch_{i}" for i in range(1, 6)} | {"test_batch", "batches.meta"}) if variant == 10 \
        else {"train", "test", "meta"}
    found: dict[str, dict] = {}
    on_disk = Path(archive).stat().st_size
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if base not in want:
                    continue
                what = f"{archive.name}:{member.name}"
                if not member.isfile():  # a link or device where the data should be: never followed
                    raise IntegrityError(f"{what} is a {_kind(member)}, not a file",
                                         "a real CIFAR archive holds regular files only")
                check_declared(member.size, on_disk, what)
                stream = tar.extractfile(member)
                assert stream is not None  # None only for a member that is not a regular file, refused above
                with stream:
                    found[base] = _unpickle(stream, member.size, what)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise IntegrityError(f"{archive} is not a readable CIFAR-{variant} tarball ({e})") from None
    label_key = "labels" if variant == 10 else "fine_labels"
    train = [f"data_batch_{i}" for i in range(1, 6)] if variant == 10 else ["train"]
    test = ["test_batch"] if variant == 10 else ["test"]
    lost = [m for m in train + test if m not in found]
    if lost:
        raise IntegrityError(f"CIFAR-{variant} archive lacks {', '.join(lost)}", "fetch it again")

    def part(members):
        xs, ys = [], []
        for m in members:
            d = found[m]
            x = np.asarray(d.get("data"))
            y = np.asarray(d.get(label_key), dtype=np.int64)
            if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or len(y) != len(x):
                raise IntegrityError(f"CIFAR-{variant} member {m} has data {x.dtype}{list(x.shape)} "
                                     f"and {len(y)} labels; expected uint8 [N, 3072] and N labels")
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    tx, ty = part(train)
    vx, vy = part(test)
    meta = found.get("batches.meta" if variant == 10 else "meta", {})
    classes = _names(meta.get("label_names" if variant == 10 else "fine_label_names", []))
    if len(classes) != variant:
        classes = CIFAR10_CLASSES if variant == 10 else [str(i) for i in range(100)]
    return Decoded(tx, ty, vx, vy, classes, {"format": f"cifar-{variant}-python"})


def read_svhn(train: Path, test: Path) -> Decoded:
    def one(path: Path):
        import numpy as np

        try:
            import scipy.io
        except ImportError:
            raise UsageError("reading SVHN needs scipy", "pip install scipy") from None
        check_mat_sizes(path)
        try:
            d = scipy.io.loadmat(str(path), variable_names=["X", "y"])
        except Exception as e:  # noqa: BLE001  scipy raises several types for a bad file
            raise IntegrityError(f"{path.name} is not a readable SVHN .mat file ({e})") from None
        x, y = d.get("X"), d.get("y")
        if x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
            raise IntegrityError(f"{path.name} does not hold SVHN's X [32, 32, 3, N] and y [N, 1]")
        labels = y.reshape(-1).astype(np.int64)
        labels[labels == 10] = 0  # SVHN stores digit 0 as class 10
        return np.ascontiguousarray(x.transpose(3, 2, 0, 1)).astype(np.uint8), labels

    tx, ty = one(train)
    vx, vy = one(test)
    return Decoded(tx, ty, vx, vy, [str(i) for i in range(10)], {"format": "svhn-mat"})


def check_mat_sizes(path: Path) -> None:
    """A MATLAB 5 file is a run of tagged elements; scipy inflates a compressed one whole. Inflate each
    here first, in chunks and discarding the output, to refuse one that expands past the limit."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(128)
        order = "<" if header[126:128] == b"IM" else ">" if header[126:128] == b"MI" else None
        pos = 128
        while order and pos + 8 <= size:
            f.seek(pos)
            kind, nbytes = struct.unpack(order + "II", f.read(8))
            if kind >> 16:  # a small element packed into its tag
                pos += 8
                continue
            if kind == 15:  # miCOMPRESSED
                _inflated_size(f, nbytes, size, f"{path.name} (element at byte {pos})")
            pos += 8 + (nbytes if kind == 15 else -(-nbytes // 8) * 8)


def _inflated_size(f, nbytes: int, on_disk: int, what: str) -> None:
    d, left, out = zlib.decompressobj(), nbytes, 0
    limit = min(decoded_limit(), MAX_EXPANSION * on_disk + (1 << 20))
    while left > 0 and not d.eof:
        chunk = f.read(min(left, 1 << 20))
        if not chunk:
            break
        left -= len(chunk)
        while chunk:
            try:
                out += len(d.decompress(chunk, 1 << 20))
            except zlib.error as e:
                raise IntegrityError(f"{what} is damaged ({e})") from None
            chunk = d.unconsumed_tail
            if out > limit:
                check_declared(out, on_disk, what)


def read_idx(path: Path):
    """An idx file (gzipped or not): magic 0x0000, type 0x08 (uint8), ndim, big-endian dims.
    Streamed: the header's size is checked before the array is allocated, then read into it."""
    import numpy as np

    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            head = f.read(4)
            if len(head) < 4 or head[0:2] != b"\x00\x00" or head[2] != 0x08:
                raise IntegrityError(f"{path.name} is not an idx file of unsigned bytes")
            dims_raw = f.read(4 * head[3])
            dims = [int.from_bytes(dims_raw[4 * i: 4 * i + 4], "big") for i in range(len(dims_raw) // 4)]
            if len(dims) != head[3]:
                raise IntegrityError(f"{path.name}: the idx header is cut short")
            n = 1
            for d in dims:
                n *= d
            check_declared(n, path.stat().st_size, path.name)
            out = np.empty(n, dtype=np.uint8)
            got = f.readinto(out.data) if n else 0
            extra = len(f.read(1))
    except (OSError, EOFError, zlib.error) as e:
        raise IntegrityError(f"{path.name} is a damaged gzip file ({e})") from None
    if got != n or extra:
        raise IntegrityError(f"{path.name} holds {'more' if extra else got} bytes of data, its header says {n}")
    return out.reshape(dims)


def read_mnist_like(files: dict[str, Path], classes: list[str], fmt: str) -> Decoded:
    import numpy as np

    def part(split: str):
        x, y = read_idx(files[f"{split}-images"]), read_idx(files[f"{split}-labels"])
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise IntegrityError(f"{fmt} {split} images {list(x.shape)} and labels {list(y.shape)} do not pair up")
        return x[:, None, :, :].copy(), y.astype(np.int64)

    tx, ty = part("train")
    vx, vy = part("test")
    return Decoded(tx, ty, vx, vy, classes, {"format": fmt})


# -- image folders ------------------------------------------------------------------------
def _images_under(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def tree_digest(files: list[tuple[str, Path]]) -> str:
    """Content digest of a tree: sha256 over (relative path, sha256 of bytes) lines."""
    h = hashlib.sha256()
    for rel, p in files:
        fh = hashlib.sha256(p.read_bytes()).hexdigest()
        h.update(f"{rel}\t{fh}\n".encode())
    return h.hexdigest()


def split_one_tree(by_class: dict[str, list[str]]) -> dict[str, set[str]]:
    """Deterministic split of a single tree: within each class, files ordered by the sha256 of
    their relative path; the first round(20%) (at least 1 when the class has 2+) go to test.
    Stable when files are added elsewhere and independent of the folder's location."""
    test: dict[str, set[str]] = {}
    for c, rels in by_class.items():
        order = sorted(rels, key=lambda r: hashlib.sha256(r.encode()).hexdigest())
        k = round(FOLDER_TEST_FRACTION * len(order))
        k = max(k, 1) if len(order) >= 2 else 0
        test[c] = set(order[:k])
    return test


def _load_image(path: Path, channels: int, size: tuple[int, int] | None, crop: int | None):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if crop:
                im = resize_center_crop(im, crop)
            elif size and im.size != size:
                im = resize_center_crop(im, min(size))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise IntegrityError(f"cannot read the image {path} ({e})") from None
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def resize_center_crop(im, size: int):
    """torchvision's Resize(size) (shorter side -> size, bilinear, antialiased by PIL) then CenterCrop(size)."""
    from PIL import Image

    w, h = im.size
    if (w <= h and w != size) or (h < w and h != size):
        if w <= h:
            nw, nh = size, int(size * h / w)
        else:
            nw, nh = int(size * w / h), size
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
        w, h = nw, nh
    left, top = round((w - size) / 2.0), round((h - size) / 2.0)
    return im.crop((left, top, left + size, top + size))


def _probe(paths: list[Path]) -> tuple[int, tuple[int, int] | None]:
    """(channels, common size or None) from the image headers (no pixel decoding)."""
    from PIL import Image, UnidentifiedImageError

    modes, sizes = set(), set()
    for p in paths:
        try:
            with Image.open(p) as im:
                modes.add(im.mode)
                sizes.add(im.size)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            raise IntegrityError(f"cannot read the image {p} ({e})") from None
    gray = modes <= {"1", "L", "I", "I;16", "F", "LA"}
    return (1 if gray else 3), (sizes.pop() if len(sizes) == 1 else None)


def _stack(paths: list[Path], labels: list[int], channels: int, size, crop, tick):
    import numpy as np

    xs = []
    for p in paths:
        xs.append(_load_image(p, channels, size, crop))
        tick()
    if not xs:  # e.g. a one-tree folder whose classes are too small to give test images
        h, w = (crop, crop) if crop else (size[1], size[0])
        return np.zeros((0, channels, h, w), np.uint8), np.zeros(0, np.int64)
    return np.stack(xs), np.asarray(labels, dtype=np.int64)


def scan_folder(root: Path) -> tuple[list[str], list[tuple[str, Path, int, str]]]:
    """(classes, [(relpath, path, label, split)]) of an ImageFolder tree."""
    if not root.is_dir():
        raise UsageError(f"folder:{root} is not a folder", "give PATH/<class>/*.png or PATH/train/<class>/...")
    two = (root / "train").is_dir()
    train_root = root / "train" if two else root
    classes = sorted(d.name for d in train_root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if two and (root / "test").is_dir() is False and (root / "val").is_dir() is False:
        raise UsageError(f"folder:{root} has train/ but no test/ (or val/)", "add PATH/test/<class>/... images")
    if not classes:
        raise UsageError(f"folder:{root} has no class folders", "lay images out as PATH/<class>/<image>")
    rows: list[tuple[str, Path, int, str]] = []
    if two:
        test_root = root / "test" if (root / "test").is_dir() else root / "val"
        extra = sorted(d.name for d in test_root.iterdir() if d.is_dir() and d.name not in classes)
        if extra:
            raise UsageError(f"folder:{root}: {test_root.name}/ has classes not in train/: {', '.join(extra[:5])}",
                             "use the same class folder names in both")
        for split, base in (("train", train_root), ("test", test_root)):
            for label, c in enumerate(classes):
                for p in _images_under(base / c) if (base / c).is_dir() else []:
                    rows.append((p.relative_to(root).as_posix(), p, label, split))
    else:
        by_class = {c: [p.relative_to(root).as_posix() for p in _images_under(root / c)] for c in classes}
        test = split_one_tree(by_class)
        for label, c in enumerate(classes):
            for rel in by_class[c]:
                rows.append((rel, root / rel, label, "test" if rel in test[c] else "train"))
    if not any(r[3] == "train" for r in rows):
        raise UsageError(f"folder:{root} has no images", f"image files end in {', '.join(IMAGE_EXTENSIONS[:4])}, ...")
    seen = {r[2] for r in rows if r[3] == "train"}
    empty = [c for label, c in enumerate(classes) if label not in seen]
    if empty:  # a class with no training image is a label the model can never learn: a layout mistake
        where = f"{train_root.relative_to(root).as_posix()}/" if two else ""
        raise UsageError(f"folder:{root}: the class folder{'s' if len(empty) > 1 else ''} "
                         f"{', '.join(where + c for c in empty[:5])} {'have' if len(empty) > 1 else 'has'} no "
                         "training images", "put images in every class folder, or remove the empty ones")
    return classes, rows


def _size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def read_folder(root: Path, rows, classes, crop: int | None = None, tick=lambda: None) -> Decoded:
    paths = [r[1] for r in rows]
    channels, size = _probe(paths)
    if crop is None and size is None:  # mixed sizes: square crops at the median shorter side
        sides = sorted(min(_size(p)) for p in paths)
        size = (sides[len(sides) // 2],) * 2
    tr = [r for r in rows if r[3] == "train"]
    te = [r for r in rows if r[3] == "test"]
    tx, ty = _stack([r[1] for r in tr], [r[2] for r in tr], channels, size, crop, tick)
    vx, vy = _stack([r[1] for r in te], [r[2] for r in te], channels, size, crop, tick)
    return Decoded(tx, ty, vx, vy, list(classes), {"format": "imagefolder"})


# -- which files each downloadable dataset needs, and its reader -----------------------------
READERS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Path]], Decoded]]] = {
    "cifar10": (("archive",), lambda f: read_cifar(f["archive"], 10)),
    "cifar100": (("archive",), lambda f: read_cifar(f["archive"], 100)),
    "svhn": (("train", "test"), lambda f: read_svhn(f["train"], f["test"])),
    "mnist": (("train-images", "train-labels", "test-images", "test-labels"),
              lambda f: read_mnist_like(f, [str(i) for i in range(10)], "mnist-idx")),
    "fashion": (("train-images", "train-labels", "test-images", "test-labels"),
                lambda f: read_mnist_like(f, FASHION_CLASSES, "fashion-mnist-idx")),
}


def channel_stats(name: str, d: Decoded) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if name in real.STATS:
        return real.STATS[name]
    import numpy as np  # a user's folder: the train split's own per-channel stats

    x = d.train_x.astype(np.float64) / 255.0
    std = [round(float(v), 4) for v in x.std(axis=(0, 2, 3))]
    # a constant channel has std 0: leave it unscaled rather than divide by zero
    return (tuple(round(float(v), 4) for v in x.mean(axis=(0, 2, 3))), tuple(v if v > 0 else 1.0 for v in std))


def scan_imagenet(root: Path, wnids) -> tuple[list[str], list[tuple[str, Path, int, str]]]:
    train = root / "train" if (root / "train").is_dir() else None
    val = next((root / v for v in ("val", "test") if (root / v).is_dir()), None)
    if train is None or val is None:
        raise UsageError(f"{root} needs train/<wnid>/ and val/<wnid>/ folders",
                         "point --source at the ImageNet root with class folders in both train/ and val/")
    lost = [w for w in wnids if not (train / w).is_dir() or not (val / w).is_dir()]
    if lost:
        raise UsageError(f"{root} lacks class folders {', '.join(lost[:5])}" + (" ..." if len(lost) > 5 else ""),
                         "ImageNet-10 needs these WNIDs in train/ and val/ (val images sorted into class folders)")
    rows: list[tuple[str, Path, int, str]] = []
    for split, base in (("train", train), ("test", val)):
        for label, w in enumerate(wnids):
            rows.extend((p.relative_to(root).as_posix(), p, label, split) for p in _images_under(base / w))
    return list(wnids), rows
