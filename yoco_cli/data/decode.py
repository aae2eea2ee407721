"""Multi-formation decoding (IDC's `decode_zoom`, docs/method.md §1.3), with class membership from labels.

A stored image of side H holds f x f tiles. Decoding pads right/bottom with 0.5 (raw-space
gray) when H mod f != 0, cuts tiles of side ceil(H/f) in row-major order (k = i*f + j),
stacks them tile-major per class (output position k*n + m is tile k of stored image m)
and resizes each tile bilinearly (align_corners=False) back to H x H.

Classes are taken in ascending label order, each class's stored images in stored order,
so for the published class-sorted files the decoded order is exactly the reference's:
    class(d) = d // B,  tile(d) = (d mod B) // IPC,  stored(d) = c*IPC + d mod IPC,  B = IPC*f^2.
`decode_set` also returns that stored-image origin for every decoded image.
"""
from __future__ import annotations

import math

from ..errors import UsageError


def check_factor(factor: int, height: int, width: int) -> None:
    if factor < 1:
        raise UsageError(f"--factor must be at least 1, got {factor}")
    if math.ceil(min(height, width) / factor) < 2:
        raise UsageError(
            f"--factor {factor} does not fit {height}x{width} images: tiles would be under 2 pixels",
            f"use a factor of at most {min(height, width) // 2}",
        )


def decode_zoom(x, factor: int):
    """Decode a batch of stored images (n, c, H, W) into (f*f*n, c, H, W), tile-major."""
    import torch
    import torch.nn.functional as F

    if factor == 1:
        return x
    _n, _c, h, w = x.shape
    check_factor(factor, h, w)
    pad_h, pad_w = (-h) % factor, (-w) % factor
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), value=0.5)
    sh, sw = math.ceil(h / factor), math.ceil(w / factor)
    tiles = [x[:, :, i * sh:(i + 1) * sh, j * sw:(j + 1) * sw] for i in range(factor) for j in range(factor)]
    stacked = torch.cat(tiles, dim=0)
    return F.interpolate(stacked, size=(h, w), mode="bilinear", align_corners=False)


def decode_set(images, labels, factor: int):
    """Decode a whole stored set. Returns (decoded images, decoded labels, stored-image origin)."""
    import torch

    f2 = factor * factor
    xs, ys, origins = [], [], []
    for c in torch.unique(labels).tolist():  # ascending
        idx = torch.nonzero(labels == c, as_tuple=False).flatten()
        xs.append(decode_zoom(images[idx], factor))
        ys.append(torch.full((f2 * len(idx),), c, dtype=torch.int64))
        origins.append(idx.repeat(f2))  # tile-major: position k*n + m -> stored idx[m]
    if not xs:
        return images[:0], labels[:0], labels[:0]
    return torch.cat(xs), torch.cat(ys), torch.cat(origins)
