"""A condensed set: stored images, labels, and what is needed to read them right.

`value_space` says what the numbers are, so nothing is normalised twice (docs/method.md §9.4):
  raw01       pixels in about [0, 1] (IDC, DREAM, our own condensations) -> normalise before training
  normalized  already (x - mean) / std (DSA, MTT without ZCA)             -> use as is
  zca         ZCA-whitened (KIP, MTT-ZCA)                                 -> use as is; test set needs ZCA
Our on-disk format is one safetensors file with tensors `images` (float32 NCHW) and
`labels` (int64), plus optional `origin` (decoded index in the parent set, for pruned
sets) and our metadata (see `SetMeta`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import tensors
from ..errors import IntegrityError, UsageError

VALUE_SPACES = ("raw01", "normalized", "zca")
FORMAT = "yoco-set/1"


@dataclass
class CondensedSet:
    images: Any  # torch.Tensor float32 [n, c, H, W] (stored, not decoded)
    labels: Any  # torch.Tensor int64 [n]
    dataset: str
    num_classes: int
    factor: int = 1
    value_space: str = "raw01"
    ipc: int | None = None  # nominal images per class; None = derived from labels
    meta: dict = field(default_factory=dict)  # how it was made: format, method, parent, ...
    origin: Any = None  # for pruned sets: decoded index of each image in the parent set

    def __post_init__(self):
        validate(self.images, self.labels, self.num_classes)
        if self.value_space not in VALUE_SPACES:
            raise UsageError(f"unknown value space {self.value_space!r}", f"use one of {', '.join(VALUE_SPACES)}")
        if self.ipc is None:
            self.ipc = nominal_ipc(self.labels, self.num_classes)

    # -- derived --------------------------------------------------------------
    @property
    def stored_shape(self) -> list[int]:
        return list(self.images.shape)

    @property
    def decoded_count(self) -> int:
        return int(self.images.shape[0]) * self.factor * self.factor

    @property
    def unit(self) -> int:
        """Decoded images per IPC: f^2, or the source factor's square for an already pruned set."""
        f = (self.meta or {}).get("pruned", {}).get("source_factor", self.factor)
        return int(f) * int(f)

    @property
    def condense_key(self) -> str | None:
        """The published format (idc, dream, mtt, ...) or our method the set came from, for presets."""
        m = self.meta or {}
        pruned = m.get("pruned") or {}
        return pruned.get("condense_key") or m.get("condense_key") or m.get("format") or m.get("method")

    def class_counts(self) -> list[int]:
        import torch

        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def decoded(self):
        """(images, labels, stored origin) after multi-formation decoding (docs/method.md §1.3)."""
        from .decode import decode_set

        return decode_set(self.images, self.labels, self.factor)

    def describe(self) -> dict:
        return {
            "dataset": self.dataset, "classes": self.num_classes, "ipc": self.ipc, "factor": self.factor,
            "stored_shape": self.stored_shape, "decoded_count": self.decoded_count,
            "value_space": self.value_space,
        }

    # -- file format ------------------------------------------------------------
    def save(self, path: Path | str) -> Path:
        meta = {"format": FORMAT, "dataset": self.dataset, "num_classes": self.num_classes,
                "factor": self.factor, "value_space": self.value_space, "ipc": self.ipc, "meta": self.meta}
        ts = {"images": self.images.float(), "labels": self.labels.long()}
        if self.origin is not None:
            ts["origin"] = self.origin.long()
        return tensors.save(path, ts, meta)

    @classmethod
    def load(cls, path: tensors.Source) -> CondensedSet:
        ts, meta = tensors.load(path)
        if meta.get("format") != FORMAT or "images" not in ts or "labels" not in ts:
            raise IntegrityError(f"{path} is not a yoco condensed set", "import foreign files with `yoco import`")
        return cls(images=ts["images"], labels=ts["labels"], dataset=meta["dataset"],
                   num_classes=meta["num_classes"], factor=meta["factor"], value_space=meta["value_space"],
                   ipc=meta.get("ipc"), meta=meta.get("meta", {}), origin=ts.get("origin"))

    def metadata(self) -> dict:
        return asdict(self) | {"images": None, "labels": None, "origin": None}


def nominal_ipc(labels, num_classes: int) -> int:
    import torch

    counts = torch.bincount(labels, minlength=num_classes)
    return int(counts.max()) if counts.numel() else 0


def validate(images, labels, num_classes: int) -> None:
    """The checks every reader relies on; each failure is a one-line integrity error."""
    import torch

    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise IntegrityError("images and labels must be tensors")
    if images.dim() != 4:
        raise IntegrityError(f"images must be a 4-D tensor (N, C, H, W), got shape {tuple(images.shape)}")
    if labels.dim() != 1:
        raise IntegrityError(f"labels must be a 1-D tensor, got shape {tuple(labels.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise IntegrityError(f"{labels.shape[0]} labels for {images.shape[0]} images: the counts must match")
    if not images.is_floating_point():
        raise IntegrityError(f"images must be floating point, got {images.dtype}")
    if not torch.isfinite(images).all():
        bad = int((~torch.isfinite(images)).sum())
        raise IntegrityError(f"images contain {bad} NaN/Inf values")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise IntegrityError(f"labels must lie in 0..{num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")
