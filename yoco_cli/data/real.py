"""The uniform interface of a real dataset, and the registry of names.

Every dataset is images as float32 tensors in [0, 1] (N, C, H, W), int64 labels, class
names, a fixed train/test split and the normalisation stats the reference uses for it.
This module knows no store and no network: the embedded `digits` is built in, and the
`dataset` stage (stages/datasets.py) turns the downloaded ones (cifar10, mnist, ...) and a
user's `folder:PATH` into a RealDataset.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported lazily: the CLI must start without it
    import torch


@dataclass
class RealDataset:
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
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

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
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


# Normalisation stats by dataset name, known without loading the data (docs/method.md §1.2).
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),  # the reference reuses CIFAR-10's
    "imagenet10": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # ImageNet-1k, met as the rethinkdc sets on the Hub (data/hub_layout.py): their own Normalize()
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # SVHN/MNIST/Fashion as in IDC's data.py
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion": ((0.2861,), (0.3530,)),
}
NUM_CLASSES: dict[str, int] = {"digits": 10, "cifar10": 10, "cifar100": 100, "imagenet10": 10,
                               "svhn": 10, "mnist": 10, "fashion": 10}
