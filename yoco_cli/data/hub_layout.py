"""Hugging Face dataset repos as files: reading the layouts condensed sets are published in, and
writing yoco's own. Pure: paths in, tensors and text out (no network; remote/hub.py transfers).

Layouts read (docs/hub.md):
  parquet   data/<split>-NNNNN-of-NNNNN.parquet as `datasets` writes them: an image column (the Image
            feature, a struct of PNG/JPEG `bytes` and `path`) and an integer label column. Class names
            come from the card's YAML (`dataset_info.features`, a class_label) or the parquet schema's
            `huggingface` metadata (a ClassLabel). The rethinkdc sets (he-yang/2025-rethinkdc-*) name
            their label column `class_id`; others `label`.
  folders   <class>/<image> (or train/<class>/<image>): labels are the sorted folder names' positions,
            as torchvision's ImageFolder (and rethinkdc's ImageFolderIPC) number them.
  yoco      the parquet layout plus yoco/set.json (the set's metadata and provenance), yoco/selection.json
            (kept indices into the parent and the scores that chose them) and, only for sets whose values
            8-bit PNG cannot hold exactly, yoco/set.safetensors (the stored tensors).

Pixels become float32 in [0, 1] (`uint8 / 255`), the raw01 space: rethinkdc feeds `ToTensor()` output
to `Normalize(ImageNet mean, std)`, so its sets are raw pixels normalised by the dataset's stats.
"""
from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import IntegrityError

LAYOUT = "yoco-hub/1"
SET_FILE = "yoco/set.json"
SELECTION_FILE = "yoco/selection.json"
EXACT_FILE = "yoco/set.safetensors"
CARD = "README.md"
IMAGE_COLUMNS = ("image", "img", "images", "picture")
LABEL_COLUMNS = ("label", "labels", "class_id", "fine_label", "target", "class")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ROWS_PER_SHARD = 10_000
CHUNK = 256  # rows converted and encoded at a time by the writer
# Datasets yoco meets only on the Hub: (channels, side, classes) -> name. The rethinkdc sets are
# ImageNet-1k at 224 px, labels in the sorted-WNID order of torchvision's ImageFolder.
HUB_DATASETS = {(3, 224, 1000): "imagenet"}


@dataclass
class HubSet:
    """What a repo holds, read: uint8-derived float images, labels, class names, and where they came from."""
    images: Any  # torch float32 [N, C, H, W] in [0, 1]
    labels: Any  # torch int64 [N]
    classes: list[str]
    layout: str  # parquet | folders | yoco
    files: list[Path]
    yoco: dict | None = None  # yoco/set.json when the repo is yoco's layout
    notes: list[str] = field(default_factory=list)


# -- the dataset card ----------------------------------------------------------------------------
def split_card(text: str) -> tuple[dict, str]:
    """(YAML metadata, markdown body) of a README.md; no front matter gives ({}, text)."""
    import yaml

    if not text.startswith("---"):
        return {}, text
    end = text.find("\n---", 3)
    if end < 0:
        raise IntegrityError("the dataset card's YAML block is not closed (no second '---' line)")
    try:
        meta = yaml.safe_load(text[3:end]) or {}
    except yaml.YAMLError as e:
        raise IntegrityError(f"the dataset card's YAML cannot be read ({str(e).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise IntegrityError("the dataset card's YAML is not a mapping")
    return meta, text[end + 4:].lstrip("\n")


def read_card(root: Path) -> dict:
    path = root / CARD
    return split_card(path.read_text(encoding="utf-8", errors="replace"))[0] if path.is_file() else {}


def _info(card: dict) -> dict:
    """The card's dataset_info (of the default config, when it lists several)."""
    info = card.get("dataset_info") or {}
    if isinstance(info, list):
        info = next((i for i in info if i.get("config_name", "default") == "default"), info[0] if info else {})
    return info if isinstance(info, dict) else {}


def card_classes(card: dict, column: str | None = None) -> list[str] | None:
    for feat in _info(card).get("features") or []:
        dtype = feat.get("dtype") if isinstance(feat, dict) else None
        if isinstance(dtype, dict) and "class_label" in dtype and (column is None or feat.get("name") == column):
            names = (dtype["class_label"] or {}).get("names") or {}
            return _ordered_names(names)
    return None


def _ordered_names(names) -> list[str]:
    if isinstance(names, list):
        return [str(n) for n in names]
    try:
        return [str(names[k]) for k in sorted(names, key=int)]
    except (TypeError, ValueError):
        raise IntegrityError("the card's class_label names are not numbered 0, 1, 2, ...") from None


def card_rows(card: dict, split: str = "train") -> int | None:
    for s in _info(card).get("splits") or []:
        if isinstance(s, dict) and s.get("name") == split and s.get("num_examples") is not None:
            return int(s["num_examples"])
    return None


def card_download_size(card: dict) -> int | None:
    size = _info(card).get("download_size")
    return int(size) if isinstance(size, (int, float)) else None


def check_card_sizes(card: dict, data_bytes: int, rows: int | None, split: str = "train") -> None:
    """A card whose sizes disagree with the files is refused: it was edited by hand or belongs to
    another revision, and the size confirmation before a download relied on it."""
    said = card_download_size(card)
    if said is not None and said != data_bytes:
        raise IntegrityError(f"the dataset card says the data files hold {said} bytes, the repo's hold {data_bytes}",
                             "the card does not describe these files; ask the publisher to regenerate it")
    want = card_rows(card, split)
    if rows is not None and want is not None and want != rows:
        raise IntegrityError(f"the dataset card says the {split} split has {want} rows, its parquet files hold {rows}",
                             "the card does not describe these files; ask the publisher to regenerate it")


# -- which files and columns ---------------------------------------------------------------------
def is_repo_folder(path: Path) -> bool:
    """A folder in a Hub layout: yoco's own files, or a card beside parquet shards."""
    return path.is_dir() and ((path / SET_FILE).is_file()
                              or ((path / CARD).is_file() and any(path.rglob("*.parquet"))))


def parquet_files(root: Path, split: str = "train") -> list[Path]:
    """The split's shards: files named for the split if any are, else every parquet file."""
    every = sorted(p for p in root.rglob("*.parquet") if ".cache" not in p.parts)
    named = [p for p in every if p.name.startswith(split) or p.parent.name == split]
    return named or every


def schema_classes(schema, column: str) -> list[str] | None:
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return None
    try:
        feats = json.loads(raw)["info"]["features"]
    except (ValueError, KeyError, TypeError):
        return None
    feat = feats.get(column) if isinstance(feats, dict) else None
    if isinstance(feat, dict) and feat.get("_type") == "ClassLabel" and isinstance(feat.get("names"), list):
        return [str(n) for n in feat["names"]]
    return None


def columns(schema, where: str) -> tuple[str, str]:
    """(image column, label column) of a parquet schema, or a one-line error naming what it has."""
    import pyarrow as pa

    names = list(schema.names)
    structs = [n for n in names if pa.types.is_struct(schema.field(n).type)
               and schema.field(n).type.get_field_index("bytes") >= 0]
    image = next((n for n in IMAGE_COLUMNS if n in structs), structs[0] if structs else None)
    ints = [n for n in names if pa.types.is_integer(schema.field(n).type)]
    label = next((n for n in LABEL_COLUMNS if n in ints), None)
    if image is None:
        raise IntegrityError(f"{where} has no image column (columns: {', '.join(names)})",
                             "yoco reads parquet written by `datasets` with an Image feature")
    if label is None:
        raise IntegrityError(f"{where} has no integer label column (columns: {', '.join(names)}; "
                             f"looked for {', '.join(LABEL_COLUMNS)})", "label each image with its class index")
    return image, label


# -- decoding ------------------------------------------------------------------------------------
def decode_image(data: bytes, where: str):
    """uint8 HWC numpy array of an encoded image (gray stays one channel; alpha and palettes become RGB)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("L" if im.mode in ("L", "1", "I;16", "I") else "RGB")
            arr = np.array(im, dtype=np.uint8)  # a writable copy: torch.from_numpy takes it
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise IntegrityError(f"{where}: an image cannot be decoded ({e})") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


class _Filler:
    """Decoded images written into one preallocated float32 tensor: memory is the set plus one batch."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.images: Any = None  # torch float32 [total, C, H, W], allocated at the first image

    def put(self, arr, where: str) -> None:
        import torch

        from ..limits import check_allocation

        if self.images is None:
            h, w, c = arr.shape
            check_allocation(self.total * c * h * w * 4, f"{self.total} images of {c}x{h}x{w}",
                             "fetch a smaller set")
            self.images = torch.empty((self.total, c, h, w), dtype=torch.float32)
        if tuple(arr.shape) != (self.images.shape[2], self.images.shape[3], self.images.shape[1]):
            raise IntegrityError(f"{where}: image {self.done} is {arr.shape[1]}x{arr.shape[0]}x{arr.shape[2]}, "
                                 f"the first was {self.images.shape[3]}x{self.images.shape[2]}x{self.images.shape[1]}",
                                 "yoco sets hold images of one size; resize them before publishing")
        self.images[self.done] = torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)
        self.done += 1


def read_parquet(files: list[Path], card: dict, tick: Callable[[int], None] | None = None) -> HubSet:
    """Read parquet shards batch by batch; labels must lie in the class list."""
    import pyarrow as pa
    import torch

    if not files:
        raise IntegrityError("the repo holds no parquet files", "yoco reads parquet shards or <class>/ image folders")
    opened = [(f, _open_parquet(f)) for f in files]
    image_col, label_col = columns(opened[0][1].schema_arrow, opened[0][0].name)
    classes = card_classes(card, label_col) or schema_classes(opened[0][1].schema_arrow, label_col)
    total = sum(pf.metadata.num_rows for _, pf in opened)
    filler, labels = _Filler(total), torch.empty(total, dtype=torch.int64)
    for f, pf in opened:
        if columns(pf.schema_arrow, f.name) != (image_col, label_col):
            raise IntegrityError(f"{f.name} has other columns than {opened[0][0].name}")
        try:
            for batch in pf.iter_batches(batch_size=256, columns=[image_col, label_col]):
                start = filler.done
                for cell in batch.column(image_col).to_pylist():
                    if not cell or not cell.get("bytes"):
                        raise IntegrityError(f"{f.name}: row {filler.done} has no image bytes")
                    filler.put(decode_image(cell["bytes"], f.name), f.name)
                lab = batch.column(label_col).to_numpy(zero_copy_only=False)
                labels[start:filler.done] = torch.from_numpy(lab.astype("int64"))
                if tick:
                    tick(batch.num_rows)
        except (OSError, pa.ArrowException) as e:
            raise IntegrityError(f"{f.name} is damaged or truncated ({_first_line(e)})",
                                 "fetch it again; if it keeps failing, the repo's file is broken") from None
    if total == 0 or filler.images is None:
        raise IntegrityError("the repo's parquet files hold no rows")
    classes = _check_labels(labels, classes, f"{files[0].name} ({label_col})")
    return HubSet(filler.images, labels, classes, "parquet", list(files))


def _open_parquet(f: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(f)
    except (OSError, pa.ArrowException) as e:
        raise IntegrityError(f"{f.name} is not a whole parquet file ({_first_line(e)})",
                             "fetch it again; if it keeps failing, the repo's file is broken") from None


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _check_labels(labels, classes: list[str] | None, where: str) -> list[str]:
    lo, hi = int(labels.min()), int(labels.max())
    if classes is None:
        return [str(i) for i in range(hi + 1)] if lo >= 0 else _bad_label(lo, None, where)
    if lo < 0 or hi >= len(classes):
        _bad_label(lo if lo < 0 else hi, len(classes), where)
    return classes


def _bad_label(value: int, n: int | None, where: str):
    bound = f"the class list has {n} classes (0..{n - 1})" if n else "labels are class indices 0, 1, 2, ..."
    raise IntegrityError(f"{where}: label {value} is outside the class list: {bound}",
                         "the labels and the card's class names disagree")


def read_folders(root: Path, tick: Callable[[int], None] | None = None) -> HubSet:
    """<class>/<image> (or train/<class>/<image>): ImageFolder's numbering, files in name order."""
    import torch

    base = root / "train" if (root / "train").is_dir() else root
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    rows = [(p, label) for label, c in enumerate(classes) for p in sorted((base / c).iterdir())
            if p.suffix.lower() in IMAGE_SUFFIXES]
    if not rows:
        raise IntegrityError("the repo holds neither parquet files nor <class>/ folders of images",
                             "yoco reads parquet shards written by `datasets` or ImageFolder trees")
    filler = _Filler(len(rows))
    for p, _ in rows:
        filler.put(decode_image(p.read_bytes(), p.name), p.name)
        if tick:
            tick(1)
    return HubSet(filler.images, torch.tensor([lab for _, lab in rows], dtype=torch.int64), classes, "folders",
                  [p for p, _ in rows])


def read_repo(root: Path, tick: Callable[[int], None] | None = None) -> HubSet:
    """Whatever layout the folder (a snapshot, or a --folder publish) holds."""
    card = read_card(root)
    files = parquet_files(root)
    hs = read_parquet(files, card, tick) if files else read_folders(root, tick)
    if files:
        check_card_sizes(card, sum(f.stat().st_size for f in files), int(hs.labels.numel()))
    own = root / SET_FILE
    if own.is_file():
        hs.yoco = _read_json(own)
        hs.layout = "yoco"
    return hs


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{path.name} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != LAYOUT:
        raise IntegrityError(f"{path.name} is not yoco's Hub metadata (format {LAYOUT})")
    return doc


def infer_dataset(channels: int, side: int, classes: int) -> str | None:
    return HUB_DATASETS.get((channels, side, classes))


# -- writing yoco's layout -----------------------------------------------------------------------
def to_uint8(images, value_space: str, stats: tuple | None):
    """uint8 NHWC pixels of a set's images: raw01 as stored, normalized sets denormalised first."""
    import torch

    x = images
    if value_space == "normalized" and stats is not None:
        mean, std = (torch.tensor(s, dtype=x.dtype).view(1, -1, 1, 1) for s in stats)
        x = x * std + mean
    return x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def exact_in_png(images, pixels) -> bool:
    """Whether reading the PNG pixels back (uint8 / 255) gives the set's float32 values bit for bit."""
    import torch

    return torch.equal(pixels.permute(0, 3, 1, 2).float().div_(255.0), images)


def encode_png(arr) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def features(classes: list[str]) -> dict:
    """`datasets`' own feature description (the parquet schema metadata it reads back)."""
    return {"image": {"_type": "Image"}, "label": {"names": list(classes), "_type": "ClassLabel"}}


def shard_names(n: int, split: str = "train") -> list[str]:
    count = max(1, -(-n // ROWS_PER_SHARD))
    return [f"data/{split}-{i:05d}-of-{count:05d}.parquet" for i in range(count)]


@dataclass
class Written:
    shards: list[Path]
    arrow_bytes: int  # the rows' size in Arrow, the card's dataset_size
    exact: bool  # every image read back from its PNG gives the float32 values given


def write_parquet(out: Path, images, labels, classes: list[str], value_space: str = "raw01",
                  stats: tuple | None = None) -> Written:
    """Shards of ROWS_PER_SHARD rows (PNG bytes + label), converted and encoded CHUNK rows at a time, so
    memory is one chunk of pixels beyond the set itself."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("label", pa.int64())],
                       metadata={"huggingface": json.dumps({"info": {"features": features(classes)}})})
    done = Written([], 0, value_space == "raw01")
    for i, name in enumerate(shard_names(len(labels))):
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(path, schema) as writer:
            for lo in range(i * ROWS_PER_SHARD, min(len(labels), (i + 1) * ROWS_PER_SHARD), CHUNK):
                hi = min(lo + CHUNK, len(labels), (i + 1) * ROWS_PER_SHARD)
                pixels = to_uint8(images[lo:hi], value_space, stats)
                done.exact = done.exact and exact_in_png(images[lo:hi], pixels)
                cells = [{"bytes": encode_png(p.numpy()), "path": None} for p in pixels]
                table = pa.table({"image": pa.array(cells, type=schema.field("image").type),
                                  "label": pa.array(labels[lo:hi].tolist(), type=pa.int64())}, schema=schema)
                writer.write_table(table)
                done.arrow_bytes += table.nbytes
        done.shards.append(path)
    return done


def card_text(meta: dict, body: str) -> str:
    import yaml

    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n\n" + body


def card_meta(classes: list[str], rows: int, data_bytes: int, arrow_bytes: int, license_: str, tags: list[str],
              yoco: dict) -> dict:
    """The card's YAML: what the Hub and `datasets` read (configs, features, splits, sizes) plus a
    `yoco` block with the set's provenance."""
    return {
        "license": license_,
        "task_categories": ["image-classification"],
        "tags": tags,
        "pretty_name": yoco.get("name") or "yoco set",
        "size_categories": [_size_category(rows)],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
        "dataset_info": {
            "features": [{"name": "image", "dtype": "image"},
                         {"name": "label", "dtype": {"class_label": {"names": {str(i): c for i, c in
                                                                               enumerate(classes)}}}}],
            "splits": [{"name": "train", "num_bytes": arrow_bytes, "num_examples": rows}],
            "download_size": data_bytes,
            "dataset_size": arrow_bytes,
        },
        "yoco": yoco,
    }


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return label
    return "1M<n<10M"

