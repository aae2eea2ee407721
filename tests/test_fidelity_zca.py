"""ZCA-space sets evaluate (issue 11): each publisher's recipe, and a KIP file end to end."""
from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest
import torch
from loopback import Loopback

from yoco_cli.data import zca
from yoco_cli.errors import UsageError


def naive_kornia(train: np.ndarray, test: np.ndarray, eps: float) -> np.ndarray:
    """kornia's ZCAWhitening as MTT fits it: centred, unbiased covariance, (S + eps)^-1/2 via an SVD."""
    x = train.reshape(len(train), -1).astype(np.float64)
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / (len(x) - 1)
    u, s, _ = np.linalg.svd(cov)
    t = u @ np.diag(1 / np.sqrt(s + eps)) @ u.T
    return ((test.reshape(len(test), -1) - mean) @ t).reshape(test.shape)


def naive_kip(train: np.ndarray, test: np.ndarray, reg: float) -> np.ndarray:
    """KIP's zca_normalize: standardise per channel, layer norm, ZCA reg * tr/d on X'X/N, rank control."""
    mean, std = train.mean(axis=(0, 2, 3)), train.std(axis=(0, 2, 3))

    def prep(a):
        a = ((a - mean[None, :, None, None]) / std[None, :, None, None]).reshape(len(a), -1)
        a = a - a.mean(1, keepdims=True)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    x = prep(train.astype(np.float64))
    cov = x.T @ x / len(x)
    u, s, _ = np.linalg.svd(cov + reg * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0]))
    inv = s ** -0.5
    if len(x) < x.shape[1]:
        inv[len(x):] = 1.0
    return (prep(test.astype(np.float64)) @ (u * inv) @ u.T).reshape(test.shape)


@pytest.mark.parametrize("publisher", ["mtt", "kip"])
@pytest.mark.parametrize("n", [200, 40])  # more and fewer training images than the 48 features
def test_each_recipe_equals_its_naive_transcription(publisher, n):
    rng = np.random.default_rng(n)
    train = rng.random((n, 3, 4, 4)) ** 2  # skewed, correlated-ish pixels in [0, 1]
    test = rng.random((7, 3, 4, 4))
    t = zca.fit(torch.tensor(train, dtype=torch.float32), zca.SETTINGS[publisher])
    ours = t.apply(torch.tensor(test, dtype=torch.float32)).double().numpy()
    x32 = lambda a: torch.tensor(a, dtype=torch.float32).double().numpy()
    want = naive_kornia(x32(train), x32(test), 0.1) if publisher == "mtt" else naive_kip(x32(train), x32(test), 0.1)
    assert ours.shape == test.shape
    assert np.allclose(ours, want, rtol=1e-4, atol=1e-5), np.abs(ours - want).max()


def test_weak_regularisation_whitens_the_training_split():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(12, 12))
    train = torch.tensor((rng.normal(size=(3000, 12)) @ mix).reshape(3000, 3, 2, 2), dtype=torch.float32)
    weak = zca.ZcaSettings("test", False, False, True, True, 1e-9, False, False, "test")
    out = zca.fit(train, weak).apply(train).reshape(3000, -1).double()
    cov = torch.cov(out.T)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=1e-3)


def test_unknown_publisher_is_one_line_naming_what_is_missing():
    with pytest.raises(UsageError) as e:
        zca.settings_for(None, "sets/x")
    msg = e.value.one_line()
    assert "sets/x is in the zca value space" in msg and "not recorded" in msg and "mtt and kip sets" in msg
    assert "\n" not in msg
    assert zca.settings_for("KIP").reg == 0.1 and zca.settings_for("mtt").center


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def test_kip_file_in_zca_space_evaluates_end_to_end(cli, store, tmp_path, monkeypatch):
    """A fabricated MNIST (idx files over loopback) and a KIP-layout file whitened with KIP's recipe."""
    rng = np.random.default_rng(5)
    labels = np.arange(60) % 10
    proto = rng.integers(0, 256, (10, 28, 28))
    train = np.clip(proto[labels] * 0.7 + rng.integers(0, 80, (60, 28, 28)), 0, 255)
    test_labels = np.arange(20) % 10
    test = np.clip(proto[test_labels] * 0.7 + rng.integers(0, 80, (20, 28, 28)), 0, 255)
    parts = {"train-images": train, "train-labels": labels, "test-images": test, "test-labels": test_labels}
    blobs = {k: _idx(v) for k, v in parts.items()}
    monkeypatch.delenv("YOCO_OFFLINE", raising=False)
    with Loopback() as srv:
        reg = tmp_path / "registry.txt"
        reg.write_text("".join(f"mnist/{k} sha256:{hashlib.sha256(b).hexdigest()} {srv.add('/' + k, b)} "
                               f"kind=dataset dataset=mnist role={k}\n" for k, b in blobs.items()))
        monkeypatch.setenv("YOCO_REGISTRY", str(reg))
        r = cli("fetch", "mnist")
        assert r.exit_code == 0, r.stderr
    monkeypatch.setenv("YOCO_OFFLINE", "1")
    # KIP's layout (docs/method.md §1.1): NHWC images, one-hot labels; 2 per class, already in KIP's ZCA space
    from yoco_cli.stages.datasets import load_real

    ds = load_real("mnist", store)
    kip = zca.fit(ds.train_x, zca.SETTINGS["kip"])
    pick = torch.cat([torch.nonzero(ds.train_y == c).flatten()[:2] for c in range(10)])
    images = kip.apply(ds.train_x[pick]).permute(0, 2, 3, 1).contiguous()
    onehot = torch.nn.functional.one_hot(ds.train_y[pick], 10).float()
    torch.save((images, onehot), tmp_path / "kip_ipc2.pt")
    r = cli("import", tmp_path / "kip_ipc2.pt", "--dataset", "mnist", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["value_space"] == "zca"
    ref = r.json()["ref"]
    r = cli("eval", ref, "--epochs", "2", "--repeats", "1", "--model", "convnet:width=8,depth=2", "--json")
    assert r.exit_code == 0, r.stderr
    [row] = r.json()
    assert row["train_images"] == 20 and 0.0 <= row["best_mean"] <= 1.0
    ev = store.resolve(row["key"][:16])
    assert ev.params["zca"]["publisher"] == "kip" and ev.params["normalize"] is None
    # the test split went through the same transform: what the engine tested on equals KIP's own apply
    from yoco_cli.stages.space import test_split

    x, settings = test_split(ds, "zca", "kip")
    assert settings == zca.SETTINGS["kip"].as_dict()
    assert torch.allclose(x, kip.apply(ds.test_x))
