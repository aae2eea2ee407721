"""The embedded default dataset: exact pixels, the documented split, fast path == sklearn's API."""
import numpy as np
import torch


def test_direct_read_equals_sklearn_api():
    from sklearn.datasets import load_digits as sk

    from yoco_cli.data.digits import _read_digits

    bunch = sk()
    images, target = _read_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(target, bunch.target)


def test_split_is_stratified_fixed_and_disjoint():
    from yoco_cli.data.digits import load_digits

    d = load_digits()
    assert (d.train_x.shape[0], d.test_x.shape[0]) == (1438, 359)
    test_counts = torch.bincount(d.test_y, minlength=10)
    all_counts = test_counts + torch.bincount(d.train_y, minlength=10)
    assert torch.all((test_counts.float() - 0.2 * all_counts.float()).abs() <= 0.5)  # round(20%) per class
    assert 0.0 <= float(d.train_x.min()) and float(d.train_x.max()) <= 1.0
    assert d.mean == (round(float(d.train_x.mean()), 6),)
    # no test image appears in train (digits has a handful of exact duplicates; compare by count)
    train = {tuple(x.flatten().tolist()) for x in d.train_x}
    overlap = sum(tuple(x.flatten().tolist()) in train for x in d.test_x)
    assert overlap <= 5
