"""The uniform interface of a real dataset, and the registry of names.

Every dataset is images as float32 tensors in [0, 1] (N, C, H, W), int64 labels, class
names, a fixed train/test split and the normalisation stats the reference uses for it.
Loaders are registered by name; `fetch` adds the downloaded ones (cifar10, mnist, ...),
and `folder:PATH` names a user's ImageFolder tree.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ..errors import UsageError

if TYPE_CHECKING:  # torch is imported lazily: the CLI must start without it
    import torch


@dataclass
class RealDataset:
    name: str
    train_x: "torch.Tensor"
    train_y: "torch.Tensor"
    test_x: "torch.Tensor"
    test_y: "torch.Tensor"
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def normalize(self, x: "torch.Tensor") -> "torch.Tensor":
        import torch

        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def describe(self) -> dict:
        return {
            "name": self.name,
            "classes": self.num_classes,
            "train": int(self.train_x.shape[0]),
            "test": int(self.test_x.shape[0]),
            "shape": list(self.train_x.shape[1:]),
            "mean": list(self.mean),
            "std": list(self.std),
        }


# name -> loader(store) ; `fetch` registers more at import time of its module
_LOADERS: dict[str, Callable[..., RealDataset]] = {}
# Normalisation stats by dataset name, known without loading the data (spec 1.2).
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),  # the reference reuses CIFAR-10's
    "imagenet10": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
NUM_CLASSES: dict[str, int] = {"digits": 10, "cifar10": 10, "cifar100": 100, "imagenet10": 10,
                               "svhn": 10, "mnist": 10, "fashion": 10}


def register(name: str, loader: Callable[..., RealDataset]) -> None:
    _LOADERS[name] = loader


def known() -> list[str]:
    _load_plugins()
    return sorted(_LOADERS)


def _load_plugins() -> None:
    # Readers for downloaded datasets live with `fetch`; importing registers them.
    try:
        from ..fetch import datasets as _  # noqa: F401
    except ImportError:
        pass


def load(name: str, store=None) -> RealDataset:
    """Load a real dataset by name (`digits`, `cifar10`, ..., or `folder:PATH`)."""
    if name == "digits":
        from .digits import load_digits

        return load_digits()
    _load_plugins()
    if name.startswith("folder:") and "folder" in _LOADERS:
        return _LOADERS["folder"](name[len("folder:"):], store=store)
    if name in _LOADERS:
        return _LOADERS[name](store=store)
    import difflib

    close = difflib.get_close_matches(name, known() + ["digits"], n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known() or ['digits'])}, or folder:PATH"
    raise UsageError(f"unknown dataset {name!r}", hint)


register("digits", lambda store=None: load("digits"))
