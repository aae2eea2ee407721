"""Real-dataset readers on small files written in the published layouts, fetched over loopback."""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from loopback import Loopback

from yoco_cli.data import readers, real
from yoco_cli.errors import IntegrityError, UsageError
from yoco_cli.stages import datasets
from yoco_cli.stages.datasets import load_real


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("YOCO_OFFLINE", raising=False)


def registry_file(tmp_path, monkeypatch, lines):
    p = tmp_path / "registry.txt"
    p.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("YOCO_REGISTRY", str(p))


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# -- CIFAR ---------------------------------------------------------------------------------------
def cifar_tar(members: dict[str, dict], top: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, obj in members.items():
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def cifar10_members(rng):
    batches = {f"data_batch_{i}": {"batch_label": f"training batch {i} of 5",
                                   "data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                                   "labels": [int(v) for v in rng.integers(0, 10, 4)],
                                   "filenames": [f"img{i}_{j}.png" for j in range(4)]} for i in range(1, 6)}
    batches["test_batch"] = {"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3, 4, 9]}
    batches["batches.meta"] = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                               "horse", "ship", "truck"], "num_vis": 3072}
    return batches


def test_cifar10_tarball_fetched_read_and_usable_for_evaluation(cli, tmp_path, monkeypatch, online):
    members = cifar10_members(np.random.default_rng(0))
    blob = cifar_tar(members, "cifar-10-batches-py")
    with Loopback() as srv:
        url = srv.add("/cifar-10-python.tar.gz", blob)
        line = f"cifar10/archive sha256:{sha(blob)} {url} kind=dataset dataset=cifar10 role=archive"
        registry_file(tmp_path, monkeypatch, [line])
        r = cli("--json", "fetch", "cifar10")
        assert r.exit_code == 0, r.stderr
    assert [(d["name"], d["kind"], d["cached"]) for d in r.json()] == [("cifar10", "dataset", False)]
    monkeypatch.setenv("YOCO_OFFLINE", "1")  # the server is gone too: everything comes from the store
    ds = load_real("cifar10")
    want = np.concatenate([members[f"data_batch_{i}"]["data"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert ds.train_x.shape == (20, 3, 32, 32) and str(ds.train_x.dtype) == "torch.float32"
    assert np.array_equal((ds.train_x.numpy() * 255).round().astype(np.uint8), want)
    assert ds.train_y.tolist() == [y for i in range(1, 6) for y in members[f"data_batch_{i}"]["labels"]]
    assert ds.test_y.tolist() == [0, 1, 2, 3, 4, 9] and ds.classes[1] == "automobile"
    assert (ds.mean, ds.std) == real.STATS["cifar10"] and ds.num_classes == 10
    assert ds.normalize(ds.test_x).shape == (6, 3, 32, 32)
    # the decoded copy is cached: loading again does not read the tarball
    monkeypatch.setattr(readers, "read_cifar", lambda *a: pytest.fail("decoded twice"))
    assert load_real("cifar10").train_x.shape == (20, 3, 32, 32)
    assert "cifar10" in cli("cache", "ls", "--stage", "dataset").stdout


def test_cifar100_reader_uses_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    members = {"train": {"data": rng.integers(0, 256, (5, 3072), dtype=np.uint8), "fine_labels": [0, 5, 99, 5, 1],
                         "coarse_labels": [0, 1, 2, 1, 0]},
               "test": {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "fine_labels": [7, 8],
                        "coarse_labels": [3, 3]},
               "meta": {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": ["x"] * 20}}
    p = tmp_path / "cifar-100-python.tar.gz"
    p.write_bytes(cifar_tar(members, "cifar-100-python"))
    d = readers.read_cifar(p, 100)
    assert d.train_y.tolist() == [0, 5, 99, 5, 1] and d.test_y.tolist() == [7, 8] and d.classes[99] == "c99"
    assert np.array_equal(d.train_x[2], members["train"]["data"][2].reshape(3, 32, 32))


class _Evil:
    def __reduce__(self):
        import os

        return os.system, ("touch pwned-by-pickle",)


def test_cifar_pickle_cannot_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "evil.tar.gz"
    p.write_bytes(cifar_tar({"data_batch_1": {"data": _Evil()}}, "cifar-10-batches-py"))
    with pytest.raises(IntegrityError, match="refuses to run"):
        readers.read_cifar(p, 10)
    assert not (tmp_path / "pwned-by-pickle").exists()
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(IntegrityError):
        readers.read_cifar(tmp_path / "junk.tar.gz", 10)


# -- SVHN, MNIST ---------------------------------------------------------------------------------
def test_svhn_mat_reader(tmp_path):
    import scipy.io

    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    for name, y in (("train", [10, 1, 2, 10]), ("test", [3, 10, 5, 9])):
        scipy.io.savemat(tmp_path / f"{name}_32x32.mat", {"X": x, "y": np.array(y, dtype=np.uint8)[:, None]})
    d = readers.read_svhn(tmp_path / "train_32x32.mat", tmp_path / "test_32x32.mat")
    assert d.train_y.tolist() == [0, 1, 2, 0] and d.test_y.tolist() == [3, 0, 5, 9]
    assert d.train_x.shape == (4, 3, 32, 32) and d.train_x[1, 2, 5, 7] == x[5, 7, 2, 1]
    (tmp_path / "bad.mat").write_bytes(b"nope")
    with pytest.raises(IntegrityError):
        readers.read_svhn(tmp_path / "bad.mat", tmp_path / "bad.mat")


def idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def test_mnist_idx_files_download_on_first_use_then_load_offline(store, tmp_path, monkeypatch, online):
    rng = np.random.default_rng(3)
    parts = {"train-images": rng.integers(0, 256, (12, 28, 28)), "train-labels": rng.integers(0, 10, 12),
             "test-images": rng.integers(0, 256, (5, 28, 28)), "test-labels": np.array([9, 8, 7, 6, 5])}
    blobs = {k: idx(v) for k, v in parts.items()}
    with Loopback() as srv:
        registry_file(tmp_path, monkeypatch, [f"mnist/{k} sha256:{sha(b)} {srv.add('/' + k + '.gz', b)} kind=dataset "
                                              f"dataset=mnist role={k}" for k, b in blobs.items()])
        ds = load_real("mnist", store)  # not fetched yet: load downloads it
        assert len(srv.requests("/train-images.gz")) == 1
    assert ds.train_x.shape == (12, 1, 28, 28) and ds.test_y.tolist() == [9, 8, 7, 6, 5]
    assert np.array_equal((ds.train_x[:, 0].numpy() * 255).round(), parts["train-images"])
    assert ds.train_y.tolist() == parts["train-labels"].tolist() and ds.mean == (0.1307,)
    monkeypatch.setenv("YOCO_OFFLINE", "1")
    assert load_real("mnist", store).test_x.shape == (5, 1, 28, 28)


def test_corrupt_idx_files(tmp_path):
    (tmp_path / "a").write_bytes(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(IntegrityError, match="unsigned bytes"):
        readers.read_idx(tmp_path / "a")
    (tmp_path / "b").write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(IntegrityError, match="header says 5"):
        readers.read_idx(tmp_path / "b")


def test_offline_missing_dataset_names_the_files(store):
    from yoco_cli.errors import FetchError

    with pytest.raises(FetchError) as err:
        load_real("fashion", store)
    assert "fashion/train-images" in err.value.message and err.value.exit_code == 4


# -- image folders, ImageNet-10 -----------------------------------------------------------------------
def png(path: Path, color, size=(8, 6), mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_folder_with_train_and_test(store, tmp_path, monkeypatch):
    root = tmp_path / "pets"
    for split, n in (("train", 3), ("test", 1)):
        for c, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            for i in range(n):
                png(root / split / c / f"{i}.png", color)
    ds = load_real(f"folder:{root}", store)
    assert ds.classes == ["cat", "dog"] and ds.train_x.shape == (6, 3, 6, 8) and ds.test_y.tolist() == [0, 1]
    assert ds.train_x[ds.train_y == 1][:, 2].min() == 1.0 and ds.mean == (0.5, 0.0, 0.5) and ds.std == (0.5, 1.0, 0.5)
    monkeypatch.setattr(datasets, "read_folder", lambda *a, **k: pytest.fail("decoded twice"))
    assert load_real(f"folder:{root}", store).train_x.shape == (6, 3, 6, 8)


def test_folder_single_tree_split_is_deterministic_and_content_keyed(store, tmp_path):
    root = tmp_path / "digits"
    for c in range(3):
        for i in range(5):
            png(root / str(c) / f"{i}.png", 40 * c + i, mode="L")
    ds = load_real(f"folder:{root}", store)
    assert ds.channels == 1 and len(ds.test_y) == 3 and ds.test_y.tolist() == [0, 1, 2] and len(ds.train_y) == 12
    m1, _ = datasets.prepare_folder(store, root)
    shutil.copytree(root, tmp_path / "elsewhere")
    m2, hit = datasets.prepare_folder(store, tmp_path / "elsewhere")
    assert hit and m1.key == m2.key  # same content, same artifact, same split
    png(root / "0" / "5.png", 7, mode="L")
    assert datasets.prepare_folder(store, root)[0].key != m1.key


def test_folder_errors(store, tmp_path):
    with pytest.raises(UsageError, match="not a folder"):
        load_real(f"folder:{tmp_path / 'absent'}", store)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(UsageError, match="no images"):
        load_real(f"folder:{tmp_path / 'empty'}", store)


def test_imagenet10_from_a_local_folder(cli, store, tmp_path):
    assert cli("fetch", "imagenet10").exit_code == 2  # nothing given, nothing stored
    root = tmp_path / "imagenet"
    for k, wnid in enumerate(readers.IMAGENET10_WNIDS + ("n99999999",)):
        png(root / "train" / wnid / "a.JPEG", (20 * k, 0, 0), size=(64, 48))
        png(root / "val" / wnid / "b.JPEG", (20 * k, 0, 0), size=(30, 90))
    r = cli("--json", "fetch", "imagenet10", "--source", root)
    assert r.exit_code == 0, r.stderr
    ds = load_real("imagenet10")
    assert ds.train_x.shape == (10, 3, 224, 224) and ds.test_x.shape == (10, 3, 224, 224)
    assert ds.classes == list(readers.IMAGENET10_WNIDS) and ds.train_y.tolist() == list(range(10))
    red = (ds.train_x[:, 0, 112, 112] * 255).tolist()
    # label k is WNID k of docs/method.md §1.5 (JPEG is lossy: a few levels of slack); the extra class is ignored
    assert all(abs(r - 20 * k) <= 3 for k, r in enumerate(red))
    assert (ds.mean, ds.std) == real.STATS["imagenet10"]
    shutil.rmtree(root / "val" / readers.IMAGENET10_WNIDS[3])
    bad = cli("fetch", "imagenet10", "--source", root)
    assert bad.exit_code == 2 and readers.IMAGENET10_WNIDS[3] in bad.stderr


def test_resize_center_crop_geometry():
    from PIL import Image

    wide = Image.new("RGB", (300, 200))
    wide.paste((255, 255, 255), (0, 0, 150, 200))  # left half white
    out = readers.resize_center_crop(wide, 224)
    assert out.size == (224, 224)
    # 300x200 -> 336x224, crop columns 56..280: the white/black edge (x=168) lands at x=112
    assert out.getpixel((100, 100))[0] > 200 and out.getpixel((124, 100))[0] < 50


def test_fetch_folder_cli(cli, tmp_path):
    for c in ("a", "b"):
        for i in range(2):
            png(tmp_path / "f" / c / f"{i}.png", (i, 0, 0))
    r = cli("--json", "fetch", f"folder:{tmp_path / 'f'}")
    assert r.exit_code == 0 and r.json()[0]["kind"] == "dataset" and "2 train + 2 test" in r.json()[0]["summary"]


def test_unknown_dataset_name_suggests():
    with pytest.raises(UsageError) as err:
        load_real("cifar1O")
    assert "cifar10" in err.value.one_line()


def test_folder_of_mixed_sizes_is_cropped_to_the_median_side(store, tmp_path):
    for c in ("a", "b"):
        for i, size in enumerate([(10, 12), (20, 16), (14, 14)]):
            png(tmp_path / "m" / c / f"{i}.png", (50 * i, 0, 0), size=size)
    ds = load_real(f"folder:{tmp_path / 'm'}", store)
    assert ds.train_x.shape[1:] == (3, 14, 14) and len(ds.train_y) + len(ds.test_y) == 6
