"""What a network sees of a set: the value space its images are stored in, mapped to the model's input.

A set's images are decoded (data/decode.py) and then normalised or ZCA-whitened exactly as the engine
trained on them (never twice: docs/method.md §9.4). Dynamics, scoring, pruning and evaluation all ask here,
so none of them imports another stage for it.
"""
from __future__ import annotations

from typing import Any

from .. import tensors
from .datasets import dataset_stats


def model_input(cset, x):
    """Decoded images -> the model's input space, as the engine trained on them (never twice: docs/method.md §9.4)."""
    from ..nn.engine import set_normalization
    stats = set_normalization(cset.value_space, dataset_stats(cset.dataset))
    if stats is None:
        return x
    import torch

    mean, std = stats
    mean = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


_ZCA_CACHE: dict[tuple, Any] = {}


def test_split(ds, value_space: str, publisher: str | None = None, label: str = "this set"):
    """The real test split in the space a set's network sees -> (images, ZCA settings or None).

    raw01/normalized: the dataset's mean/std normalisation. zca: the ZCA transform of the set's
    publisher (data/zca.py), fit on the real training split (kept in memory per dataset, so
    several sets of one dataset fit it once) and applied to the test split.
    """
    from ..nn import engine

    if value_space != "zca":
        return engine.prepare_test(value_space, (tuple(ds.mean), tuple(ds.std)), ds.test_x), None
    from ..data import zca

    settings = zca.settings_for(publisher, label)
    key = (tensors.digest(ds.train_x), settings)
    if key not in _ZCA_CACHE:
        _ZCA_CACHE.clear()  # one transform at a time: a CIFAR one is 75 MB
        _ZCA_CACHE[key] = zca.fit(ds.train_x, settings)
    return _ZCA_CACHE[key].apply(ds.test_x), settings.as_dict()
