"""Published condensed-set layouts: fabricated files in each real layout read, decode and round-trip."""
from __future__ import annotations

import pytest
import torch

from yoco_cli.data import formats
from yoco_cli.errors import IntegrityError, UsageError

C, IPC = 10, 2


def _images(n=C * IPC, c=3, side=32, seed=0):
    return torch.rand(n, c, side, side, generator=torch.Generator().manual_seed(seed))


def _labels(ipc=IPC):
    return torch.arange(C).repeat_interleave(ipc)


def write(tmp_path, fmt, x=None, y=None):
    """Write x, y in FMT's published on-disk layout (docs/method.md §1.1); returns the path to import."""
    x = _images() if x is None else x
    y = _labels() if y is None else y
    if fmt == "idc":
        p = tmp_path / "idc" / "cifar10" / "conv3in_grad_mse_nd2000_cut_niter2000_factor2_lr0.005_mix_ipc2" / "data.pt"
        p.parent.mkdir(parents=True)
        torch.save([x, y], p)
    elif fmt == "dream":
        p = tmp_path / "dream" / "cifar10" / "ipc2" / "data.pt"
        p.parent.mkdir(parents=True)
        torch.save([x, y], p)
    elif fmt == "mtt":
        p = tmp_path / "mtt" / "ConvNet_baseline"
        p.mkdir(parents=True)
        torch.save(x, p / "images_best.pt")
        torch.save(y, p / "labels_best.pt")
    elif fmt == "dsa":  # DatasetCondensation's multi-experiment dict; experiment k holds x + k
        p = tmp_path / "dsa" / "res_DSA_CIFAR10_ConvNet_ipc2" / "data.pt"
        p.parent.mkdir(parents=True)
        torch.save({"data": [[x + k, y] for k in range(3)], "accs_all_exps": {"ConvNet": [0.5, 0.5, 0.5]}}, p)
    elif fmt == "kip":  # NHWC images, one-hot float labels
        p = tmp_path / "kip" / "kip_ipc2" / "data.pt"
        p.parent.mkdir(parents=True)
        torch.save((x.permute(0, 2, 3, 1).contiguous(), torch.nn.functional.one_hot(y, C).float()), p)
    return p


EXPECT = {  # format -> (value space, default factor at 32 px)
    "idc": ("raw01", 2), "dream": ("raw01", 2), "mtt": ("normalized", 1), "dsa": ("normalized", 1), "kip": ("zca", 1),
}


@pytest.mark.parametrize("fmt", sorted(EXPECT))
def test_each_layout_reads_with_right_metadata(tmp_path, fmt):
    x, y = _images(), _labels()
    loaded = formats.load(write(tmp_path, fmt, x, y))  # auto-detected
    cs = loaded.cset
    assert loaded.fmt == fmt and cs.meta["format"] == fmt
    assert (cs.value_space, cs.factor) == EXPECT[fmt]
    assert (cs.dataset, cs.num_classes, cs.ipc) == ("cifar10", 10, IPC)
    assert cs.stored_shape == [20, 3, 32, 32] and cs.labels.dtype == torch.int64
    assert torch.equal(cs.images, x) and torch.equal(cs.labels, y)  # KIP: NHWC -> NCHW exactly
    assert cs.decoded_count == 20 * cs.factor ** 2
    assert formats.load(write(tmp_path / "explicit", fmt, x, y), fmt).cset.describe() == cs.describe()


def test_dsa_experiment_index(tmp_path):
    p = write(tmp_path, "dsa")
    base = _images()
    assert torch.equal(formats.read(p).images, base)  # YOCO's choice: experiment 0
    last = formats.load(p, experiment=-1)  # IDC's choice: the last one
    assert torch.equal(last.cset.images, base + 2) and last.cset.meta["experiment"] == 2
    assert any("3 experiments" in n for n in last.notes)
    with pytest.raises(UsageError, match="out of range"):
        formats.read(p, experiment=3)


def test_kip_soft_labels_take_argmax_and_numpy_arrays_load(tmp_path):
    y = _labels()
    soft = torch.nn.functional.one_hot(y, C).float() * 0.6 + 0.04
    x = _images()
    p = tmp_path / "kip.pt"
    torch.save((x.permute(0, 2, 3, 1).numpy(), soft.numpy()), p)  # converted KIP files may hold arrays
    cs = formats.read(p)
    assert cs.meta["format"] == "kip" and cs.meta["soft_labels"] and cs.meta["layout"] == "NHWC"
    assert torch.equal(cs.labels, y) and torch.equal(cs.images, x)


def test_mtt_folder_or_either_file(tmp_path):
    d = write(tmp_path, "mtt")
    sets = [formats.read(p) for p in (d, d / "images_best.pt", d / "labels_best.pt")]
    assert all(torch.equal(s.images, sets[0].images) for s in sets)
    assert formats.read(d, value_space="zca").value_space == "zca"
    (d / "labels_best.pt").unlink()
    with pytest.raises(UsageError, match="two files"):
        formats.read(d / "images_best.pt")


def test_class_membership_from_labels_not_order(tmp_path):
    y = _labels()[torch.randperm(20, generator=torch.Generator().manual_seed(1))]
    cs = formats.read(write(tmp_path, "idc", y=y))
    assert cs.class_counts() == [2] * 10
    _, dec_y, origin = cs.decoded()
    assert torch.equal(y[origin], dec_y)  # every decoded image keeps its stored image's class


def test_decoding_gives_the_right_tiles(tmp_path):
    # each stored image: quadrant k (row-major) filled with (m * 4 + k) / 100, a constant the
    # bilinear resize keeps, so every decoded image tells which tile of which image it is
    x = torch.zeros(20, 3, 32, 32)
    for m in range(20):
        for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            x[m, :, i * 16:(i + 1) * 16, j * 16:(j + 1) * 16] = (m * 4 + k) / 100
    cs = formats.read(write(tmp_path, "idc", x=x))
    dec, dec_y, origin = cs.decoded()
    assert dec.shape == (80, 3, 32, 32)
    B = IPC * 4
    for d in range(80):
        c, k = d // B, (d % B) // IPC
        m = c * IPC + d % IPC  # docs/method.md §1.3 index mapping
        assert int(origin[d]) == m and int(dec_y[d]) == c
        assert torch.allclose(dec[d], torch.full((3, 32, 32), (m * 4 + k) / 100))


def test_imagenet_size_defaults_to_factor_3(tmp_path):
    x = _images(n=10, side=224)
    p = tmp_path / "idc" / "imagenet10" / "data.pt"
    p.parent.mkdir(parents=True)
    torch.save([x, torch.arange(10)], p)
    cs = formats.read(p)
    assert (cs.dataset, cs.factor, cs.decoded_count) == ("imagenet10", 3, 90)
    assert formats.read(p, factor=2).factor == 2


def test_dataset_inference(tmp_path):
    p = tmp_path / "svhn" / "data.pt"  # the path names one of the candidates: take it
    p.parent.mkdir()
    torch.save([_images(), _labels()], p)
    assert formats.read(p).dataset == "svhn"
    q = tmp_path / "x.pt"
    torch.save([_images(c=1, side=28), _labels()], q)  # mnist or fashion: ambiguous
    with pytest.raises(UsageError) as e:
        formats.read(q)
    assert "mnist, fashion" in e.value.message and "--dataset" in e.value.hint
    assert formats.read(q, dataset="fashion").dataset == "fashion"
    with pytest.raises(UsageError, match="cifar10 images are 3x32x32"):
        formats.read(q, dataset="cifar10")
    r = tmp_path / "c100.pt"
    torch.save([_images(n=100), torch.arange(100)], r)
    assert formats.read(r).dataset == "cifar100"  # 100 classes at 3x32 is unambiguous


def test_ipc_option_checks_the_file(tmp_path):
    p = write(tmp_path, "idc")
    assert formats.read(p, ipc=2).ipc == 2
    with pytest.raises(UsageError, match="holds 2 images per class"):
        formats.read(p, ipc=10)


@pytest.mark.parametrize("fmt", sorted(EXPECT))
def test_export_then_import_is_bit_exact(tmp_path, fmt):
    src = formats.read(write(tmp_path, fmt))
    out = tmp_path / ("out" if fmt == "mtt" else "out.pt")
    assert formats.export(src, out, fmt) == []
    back = formats.read(out, fmt, dataset="cifar10")
    assert torch.equal(back.images, src.images) and torch.equal(back.labels, src.labels)
    assert (back.value_space, back.factor) == (src.value_space, src.factor)
    again = tmp_path / ("again" if fmt == "mtt" else "again.pt")
    formats.export(back, again, fmt)  # same set => same bytes
    for a, b in ([(out / n, again / n) for n in ("images_best.pt", "labels_best.pt")] if fmt == "mtt"
                 else [(out, again)]):
        assert a.read_bytes() == b.read_bytes()


def test_export_refuses_a_layout_of_another_value_space(tmp_path):
    dsa = formats.read(write(tmp_path, "dsa"))
    with pytest.raises(UsageError) as e:
        formats.export(dsa, tmp_path / "x.pt", "idc")
    assert "normalized set as idc" in e.value.message and e.value.hint == "export it as dsa or mtt"
    assert not (tmp_path / "x.pt").exists()


def test_export_idc_sorts_by_class_and_notes_factor(tmp_path):
    y = torch.tensor([3, 1, 3, 1])
    x = _images(n=4)
    src = formats.CondensedSet(images=x, labels=y, dataset="cifar10", num_classes=10, factor=1)
    notes = formats.export(src, tmp_path / "d.pt", "idc")
    assert any("reordered" in n for n in notes)
    assert any("has factor 1; idc readers assume 2" in n and "`yoco import` reads the factor from the file" in n
               for n in notes)
    data, targets = torch.load(tmp_path / "d.pt", weights_only=True)
    assert targets.tolist() == [1, 1, 3, 3] and torch.equal(data, x[[1, 3, 0, 2]])
    assert [p.name for p in tmp_path.iterdir()] == ["d.pt"]  # no temp file left behind


@pytest.mark.parametrize("case, error", [
    ("rank", "4-D"), ("length", "labels for"), ("nan", "NaN/Inf"), ("inf", "NaN/Inf"),
    ("soft_idc", "1-D"), ("negative", "must lie in"), ("bare", "no labels"), ("dict", "layout yoco knows"),
])
def test_bad_contents_are_integrity_errors(tmp_path, case, error):
    x, y = _images(), _labels()
    obj = {"rank": [x[:, 0], y], "length": [x, y[:-1]], "nan": [x.index_fill(0, torch.tensor([3]), float("nan")), y],
           "inf": [x.index_fill(0, torch.tensor([0]), float("inf")), y], "negative": [x, y - 1],
           "soft_idc": [x, torch.nn.functional.one_hot(y, C)], "bare": x, "dict": {"images": x}}[case]
    p = tmp_path / "bad.pt"
    torch.save(obj, p)
    with pytest.raises(IntegrityError, match=error):
        formats.read(p, "auto" if case in ("bare", "dict") else "idc", dataset="cifar10")
