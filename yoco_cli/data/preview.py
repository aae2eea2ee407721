"""A PNG grid of a condensed set's stored images: one row per class, in stored order.

Pixels are shown in raw [0, 1] space: raw01 sets as they are, normalized sets
de-normalized with the dataset's stats when known, and ZCA (or unknown-stats) sets
stretched per image to their own min..max, since whitening cannot be undone here.
Small images are enlarged with nearest-neighbour so 8x8 digits stay legible.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from .condensed import CondensedSet

GAP = 2  # pixels of white between cells
MIN_CELL = 32  # enlarge cells to at least this many pixels


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


def grid_array(cset: CondensedSet, max_per_class: int = 20):
    """uint8 array (H, W, 3) of the grid; row c holds class c's first `max_per_class` images."""
    import numpy as np
    import torch

    x = to_display(cset)
    _, c, h, w = x.shape
    scale = max(1, -(-MIN_CELL // max(h, w)))
    if scale > 1:
        x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
        h, w = h * scale, w * scale
    if c != 3:  # grayscale (or odd channel counts): show the first channel as gray
        x = x[:, :1].expand(-1, 3, -1, -1)
    cols = min(max_per_class, max(cset.class_counts()) or 1)
    rows = cset.num_classes
    canvas = np.full((rows * (h + GAP) + GAP, cols * (w + GAP) + GAP, 3), 255, dtype=np.uint8)
    pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for cls in range(rows):
        members = torch.nonzero(cset.labels == cls).flatten().tolist()[:cols]
        for j, i in enumerate(members):
            top, left = GAP + cls * (h + GAP), GAP + j * (w + GAP)
            canvas[top:top + h, left:left + w] = pixels[i]
    return canvas


def write_png(cset: CondensedSet, path: Path | str, max_per_class: int = 20) -> Path:
    from PIL import Image

    out = Path(path)
    if out.is_dir() or not out.parent.is_dir():
        raise UsageError(f"cannot write {out}", "give a file name in an existing folder, e.g. set.png")
    try:
        Image.fromarray(grid_array(cset, max_per_class)).save(out, format="PNG")
    except OSError as e:
        raise UsageError(f"cannot write {out} ({e.strerror or e})", "choose a writable folder") from None
    return out
