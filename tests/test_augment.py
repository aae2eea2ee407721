"""DSA ops, Siamese mode, CutMix and the ImageNet pipeline: properties, not snapshots."""
from __future__ import annotations

import pytest
import torch

from yoco_cli.errors import UsageError
from yoco_cli.nn.augment import (
    DSA,
    DSAParams,
    ImageNetAug,
    _warp,
    cutmix,
    cutmix_box,
    shift_images,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_flip_is_a_flip():
    x = torch.randn(6, 3, 8, 8)
    assert torch.equal(DSA("flip", params=DSAParams(flip=1.0))(x, gen()), x.flip(3))
    assert torch.equal(DSA("flip", params=DSAParams(flip=0.0))(x, gen()), x)
    out = DSA("flip")(x, gen(1))
    for a, b in zip(out, x):  # per sample: either flipped or untouched
        assert torch.equal(a, b) or torch.equal(a, b.flip(2))


def test_shift_images_moves_and_zero_fills():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = shift_images(x, torch.tensor([1]), torch.tensor([-1]))
    assert torch.equal(out[0, 0, 0], torch.tensor([0.0, 4, 5, 6]))
    assert torch.equal(out[0, 0, 3], torch.zeros(4))


def test_crop_is_an_integer_shift_within_4px():
    x = torch.rand(4, 3, 32, 32) + 1.0  # no zeros inside, so zero fill is visible
    out = DSA("crop")._shift(x, gen(3), 0.125)
    for i in range(4):
        hits = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                if torch.equal(out[i:i + 1], shift_images(x[i:i + 1], torch.tensor([dy]), torch.tensor([dx])))]
        assert len(hits) == 1
    assert not torch.equal(out, x)


def test_translate_shifts_columns_only():
    # the reference's translate pads and shifts the width axis only (crop moves both axes)
    x = torch.rand(16, 3, 32, 32) + 1.0
    out = DSA("translate").translate(x, gen(5))
    moved = 0
    for i in range(16):
        hits = [dx for dx in range(-4, 5)
                if torch.equal(out[i:i + 1], shift_images(x[i:i + 1], torch.tensor([0]), torch.tensor([dx])))]
        assert len(hits) == 1
        moved += hits[0] != 0
    assert moved > 0


def test_siamese_shares_one_draw_per_batch():
    img = torch.rand(1, 3, 16, 16)
    x = img.repeat(5, 1, 1, 1)
    full = "color_crop_cutout_flip_scale_rotate"
    same = DSA(full, siamese=True)(x, gen(0))
    assert all(torch.equal(same[0], s) for s in same)
    per = DSA(full)(x, gen(0))
    assert not all(torch.allclose(per[0], s) for s in per)
    a, b = DSA(full, siamese=True).apply_same([x[:2], x[:3]], gen(7))
    assert torch.equal(a[0], b[0]) and a.shape[0] == 2 and b.shape[0] == 3


def test_seeded_determinism():
    x = torch.randn(8, 3, 32, 32)
    d = DSA("color_crop_cutout_flip_scale_rotate_translate")
    assert torch.equal(d(x, gen(5)), d(x, gen(5)))
    assert not torch.equal(d(x, gen(5)), d(x, gen(6)))


def test_color_ops_keep_their_means():
    x = torch.rand(4, 3, 8, 8)
    d = DSA("color")
    sat = d.saturation(x, gen(0))
    assert torch.allclose(sat.mean(1), x.mean(1), atol=1e-6)  # per-pixel channel mean unchanged
    con = d.contrast(x, gen(0))
    assert torch.allclose(con.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-6)
    bri = d.brightness(x, gen(0)) - x  # a constant shift per image in [-0.5, 0.5]
    assert torch.allclose(bri, bri[:, :1, :1, :1].expand_as(bri), atol=1e-6)
    assert bri.abs().max() <= 0.5


def test_cutout_zeroes_one_clipped_16px_square():
    x = torch.ones(50, 1, 32, 32)
    out = DSA("cutout").cutout(x, gen(2))
    for img in out[:, 0]:
        rows = torch.nonzero((img == 0).any(1)).flatten()
        cols = torch.nonzero((img == 0).any(0)).flatten()
        h, w = len(rows), len(cols)
        assert 0 < h <= 16 and 0 < w <= 16
        assert int((img == 0).sum()) == h * w  # a filled rectangle
        assert (h == 16 or rows[0] == 0 or rows[-1] == 31) and (w == 16 or cols[0] == 0 or cols[-1] == 31)


def test_scale_and_rotate_are_identity_at_zero():
    x = torch.rand(2, 3, 16, 16)
    eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3)
    assert torch.allclose(_warp(x, eye), x, atol=1e-5)
    out = DSA("rotate", params=DSAParams(rotate=0.0)).rotate(x, gen())
    assert torch.allclose(out, x, atol=1e-5)
    assert not torch.allclose(DSA("scale").scale(x, gen()), x, atol=1e-3)


def test_dsa_is_differentiable():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    DSA("color_crop_cutout_flip_scale_rotate", siamese=True)(x, gen(1)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_op():
    with pytest.raises(UsageError, match="blur"):
        DSA("color_blur")


def test_cutmix_ratio_is_the_actual_box_area():
    n, fired = 16, 0
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 12, 10).contiguous()
    y = torch.arange(n)
    for seed in range(60):
        mixed, ya, yb, ratio = cutmix(x, y, gen(seed), p=0.5)
        if mixed is x:  # not fired
            assert ratio == 1.0 and torch.equal(ya, yb)
            continue
        fired += 1
        assert torch.equal(ya, y)
        for i in range(n):
            pasted = int((mixed[i] != i).sum()) if yb[i] != i else None
            if pasted is not None:
                assert ratio == pytest.approx(1 - pasted / 120)
            assert torch.all((mixed[i] == i) | (mixed[i] == yb[i]))
    assert 15 < fired < 45  # p = 0.5
    assert cutmix_box(32, 32, 0.75, 0, 0) == (0, 8, 0, 8)  # side 16, clipped at the corner


def test_imagenet_pipeline_shapes_and_seed():
    x = torch.rand(3, 3, 40, 40)
    aug = ImageNetAug(size=32)
    a, b = aug(x, gen(4)), aug(x, gen(4))
    assert a.shape == (3, 3, 32, 32) and torch.equal(a, b) and torch.isfinite(a).all()
    assert not torch.equal(a, aug(x, gen(5)))
