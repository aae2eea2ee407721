"""Pictures of condensed sets: a grid of the stored images, one row per class (its name at the
left), and a pruned set's selection, its parent's images per class with the kept ones framed and
each image's score under it. Pure: tensors and names in, PNG bytes out (stages/pictures.py reads
the store).

Pixels are shown in raw [0, 1] space: raw01 sets as they are, normalized sets
de-normalized with the dataset's stats when known, and ZCA (or unknown-stats) sets
stretched per image to their own min..max, since whitening cannot be undone here.
Small images are enlarged with nearest-neighbour so 8x8 digits stay legible.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from .condensed import CondensedSet

if TYPE_CHECKING:  # annotations only: torch and numpy are imported lazily
    import numpy as np
    import torch

GAP = 2  # pixels of white between cells
MIN_CELL = 32  # enlarge cells to at least this many pixels
LABEL_PAD = 6  # pixels around a class name
KEPT = (214, 96, 0)  # the frame of a kept image (orange: visible on gray digits and on photos)
FRAME = 3  # its width; a selection's cells are this far apart at least
DIM = 0.55  # a pruned image is blended this far towards white, so the kept ones stand out


def display_stats(dataset: str):
    """(mean, std) used to de-normalize for display, or None when unknown."""
    from .real import STATS

    if dataset in STATS:
        return STATS[dataset]
    if dataset == "digits":  # bundled and offline: computing its stats is cheap
        from .digits import load_digits

        d = load_digits()
        return d.mean, d.std
    return None


def to_display(cset: CondensedSet):
    """Stored images mapped to [0, 1] for viewing (float tensor N, C, H, W)."""
    import torch

    x = cset.images.float()
    stats = display_stats(cset.dataset) if cset.value_space == "normalized" else None
    if stats is not None:
        mean = torch.tensor(stats[0]).view(1, -1, 1, 1)
        std = torch.tensor(stats[1]).view(1, -1, 1, 1)
        x = x * std + mean
    elif cset.value_space != "raw01":
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-8)
    return x.clamp(0, 1)


def display_pixels(x, min_cell: int = MIN_CELL):
    """[0, 1] images (N, C, H, W) -> uint8 numpy (N, H', W', 3), enlarged to at least `min_cell` pixels
    with nearest-neighbour; grayscale (or odd channel counts) shown as gray from the first channel."""
    import torch

    _, c, h, w = x.shape
    scale = max(1, -(-min_cell // max(h, w)))
    if scale > 1:
        x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    if c != 3:
        x = x[:, :1].expand(-1, 3, -1, -1)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def grid_array(cset: CondensedSet, max_per_class: int = 20):
    """uint8 array (H, W, 3) of the grid; row c holds class c's first `max_per_class` images."""
    import numpy as np
    import torch

    pixels = display_pixels(to_display(cset))
    h, w = pixels.shape[1:3]
    cols = min(max_per_class, max(cset.class_counts()) or 1)
    rows = cset.num_classes
    canvas = np.full((rows * (h + GAP) + GAP, cols * (w + GAP) + GAP, 3), 255, dtype=np.uint8)
    for cls in range(rows):
        members = torch.nonzero(cset.labels == cls).flatten().tolist()[:cols]
        for j, i in enumerate(members):
            top, left = GAP + cls * (h + GAP), GAP + j * (w + GAP)
            canvas[top:top + h, left:left + w] = pixels[i]
    return canvas


def class_labels(names: list[str] | None, count: int) -> list[str]:
    """Row labels: the given names where there is one per class, else the class numbers."""
    if names and len(names) == count:
        return [str(n) for n in names]
    return [str(c) for c in range(count)]


def font(size: int = 11):
    """Pillow's bundled font at `size` (FreeType builds), else its fixed bitmap font."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _text_width(f, text: str) -> int:
    left, _, right, _ = f.getbbox(text)
    return int(right - left)


def with_labels(grid, labels: list[str], row_height: int, title: str | None = None, top: int = GAP):
    """PIL image: `grid` (uint8 H, W, 3) with a column of row labels at its left (row i's label
    beside the band that starts at top + i * row_height) and an optional title line above."""
    import numpy as np
    from PIL import Image, ImageDraw

    f = font()
    label_w = max((_text_width(f, t) for t in labels), default=0) + 2 * LABEL_PAD
    title_h = 18 if title else 0
    h, w = grid.shape[:2]
    img = Image.new("RGB", (max(label_w + w, _text_width(f, title or "") + 2 * LABEL_PAD), h + title_h), "white")
    img.paste(Image.fromarray(np.ascontiguousarray(grid)), (label_w, title_h))
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((LABEL_PAD, 3), title, fill="black", font=f)
    for i, text in enumerate(labels):
        y = title_h + top + i * row_height + row_height // 2
        draw.text((label_w - LABEL_PAD - _text_width(f, text), y), text, fill="black", font=f, anchor="lm")
    return img


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def grid_png(cset: CondensedSet, max_per_class: int = 20, class_names: list[str] | None = None) -> bytes:
    """The grid of `grid_array` with each row's class name at its left."""
    grid = grid_array(cset, max_per_class)
    cell = (grid.shape[0] - GAP) // max(1, cset.num_classes)
    return png_bytes(with_labels(grid, class_labels(class_names, cset.num_classes), cell))


@dataclass
class Selection:
    """What a rule chose from a set: the parent's images (decoded, display [0, 1] N, C, H, W), their
    labels, which were kept, and the score each had (None where the rule reads no score)."""
    images: torch.Tensor
    labels: torch.Tensor
    kept: torch.Tensor           # bool [N]
    scores: np.ndarray | None    # float [N], or None
    class_names: list[str]
    title: str


def selection_array(sel: Selection, per_row: int = 20):
    """uint8 array and its band height: per class, the parent's images (lowest score first when
    scored) in lines of `per_row`, kept ones framed, pruned ones dimmed, scores under them."""
    import numpy as np
    from PIL import Image, ImageDraw

    size = max(sel.images.shape[-2:])  # small images are enlarged, wider where a score goes under them
    pixels = display_pixels(sel.images, (40 if sel.scores is not None else MIN_CELL) if size < 20 else size)
    h, w = pixels.shape[1:3]
    text_h = 13 if sel.scores is not None else 0
    cw, ch = w + 2 * FRAME + GAP, h + 2 * FRAME + GAP + text_h
    members = [_class_order(sel, c) for c in range(len(sel.class_names))]
    lines = [max(1, -(-len(m) // per_row)) for m in members]
    cols = min(per_row, max((len(m) for m in members), default=1) or 1)
    img = Image.new("RGB", (cols * cw + GAP, sum(lines) * ch + GAP), "white")
    draw, f = ImageDraw.Draw(img), font(10)
    y0 = 0
    for cls, idx in enumerate(members):
        for j, i in enumerate(idx):
            left, top = GAP + (j % per_row) * cw, y0 + GAP + (j // per_row) * ch
            tile = pixels[i]
            kept = bool(sel.kept[i])
            if not kept:
                tile = (tile * (1 - DIM) + 255 * DIM).astype(np.uint8)
            else:
                draw.rectangle([left, top, left + w + 2 * FRAME - 1, top + h + 2 * FRAME - 1], fill=KEPT)
            img.paste(Image.fromarray(np.ascontiguousarray(tile)), (left + FRAME, top + FRAME))
            if sel.scores is not None:
                text = f"{float(sel.scores[i]):.3g}"
                draw.text((left + FRAME + w // 2, top + h + 2 * FRAME + 1), text, anchor="mt", font=f,
                          fill="black" if kept else (130, 130, 130))
        y0 += lines[cls] * ch
    return np.asarray(img), ch, lines


def _class_order(sel: Selection, cls: int) -> list[int]:
    idx = [i for i, lab in enumerate(sel.labels.tolist()) if lab == cls]
    scores = sel.scores
    if scores is not None:
        idx.sort(key=lambda i: (float(scores[i]), i))
    return idx


def selection_png(sel: Selection, per_row: int = 20, max_classes: int | None = None) -> bytes:
    """The selection of `selection_array` with class names at the left and its title above; a
    class wrapped over several lines has its name beside the first. `max_classes`: only the first
    that many classes (a page of CIFAR-100's hundred would be too large to open)."""
    if max_classes is not None and len(sel.class_names) > max_classes:
        keep = sel.labels < max_classes
        sel = Selection(sel.images[keep], sel.labels[keep], sel.kept[keep],
                        None if sel.scores is None else sel.scores[keep.numpy()], sel.class_names[:max_classes],
                        f"{sel.title} (the first {max_classes} of {len(sel.class_names)} classes)")
    arr, band, lines = selection_array(sel, per_row)
    labels = []
    for name, n in zip(sel.class_names, lines):
        labels += [name] + [""] * (n - 1)
    return png_bytes(with_labels(arr, labels, band, sel.title))


def write_png(data: bytes, path: Path | str) -> Path:
    """Write PNG bytes to a file (atomically), as a one-line error where that cannot be done."""
    from ..files import atomic_write

    out = Path(path)
    if out.is_dir() or not out.parent.is_dir():
        raise UsageError(f"cannot write {out}", "give a file name in an existing folder, e.g. set.png")
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(data))
    return out
