"""scikit-learn's bundled 8x8 digits: the embedded default dataset (no network needed).

1797 real grayscale digits, values 0..16, scaled to [0, 1]. Split (fixed, documented in
the README): within each class, the samples are shuffled by a seed-0 NumPy RandomState
permutation of their positions and the first round(20%) go to test; the rest is train.
Train and test keep the dataset's original order. Normalisation stats are the mean and
std of the train split.
"""
from __future__ import annotations

from functools import lru_cache

from .real import RealDataset

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def _read_digits():
    """scikit-learn's `digits.csv.gz`, read directly: importing sklearn costs ~2 s on every command."""
    import importlib.util
    import os

    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz") if spec else ""
    if os.path.isfile(path):
        data = np.loadtxt(path, delimiter=",")
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import (
        load_digits as sk_digits,  # layout changed: use the public API
    )

    bunch = sk_digits()
    return bunch.images, bunch.target


@lru_cache(maxsize=1)
def load_digits() -> RealDataset:
    import numpy as np
    import torch

    images, target = _read_digits()
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)  # N,1,8,8
    y = torch.from_numpy(target.astype(np.int64))
    is_test = np.zeros(len(y), dtype=bool)
    rng = np.random.RandomState(SPLIT_SEED)
    for c in range(10):
        idx = np.flatnonzero(target == c)
        n_test = round(TEST_FRACTION * len(idx))
        is_test[idx[rng.permutation(len(idx))[:n_test]]] = True
    test = torch.from_numpy(is_test)
    train_x, train_y = x[~test].contiguous(), y[~test].contiguous()
    mean, std = float(train_x.mean()), float(train_x.std())
    return RealDataset(
        name="digits",
        train_x=train_x,
        train_y=train_y,
        test_x=x[test].contiguous(),
        test_y=y[test].contiguous(),
        classes=[str(i) for i in range(10)],
        mean=(round(mean, 6),),
        std=(round(std, 6),),
        meta={"source": "sklearn.datasets.load_digits", "split": "per-class seed-0 permutation, 20% test"},
    )
