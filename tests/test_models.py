"""Models: shapes at 8x8, 32x32 and 224x224, embed sizes, specs, saving, torchvision, devices."""
from __future__ import annotations

import builtins

import pytest
import torch

from yoco_cli.errors import UsageError
from yoco_cli.nn.device import resolve_device
from yoco_cli.nn.engine import load_model, save_model
from yoco_cli.nn.models import (
    build_model,
    model_from_spec,
    parse_model_arg,
    uses_batchnorm,
)

CASES = [  # name, channels, size, options, embed dim
    ("convnet", 3, 32, {}, 2048),            # docs/method.md §3.7: ConvNet-3 -> 128*4*4
    ("convnet", 1, 8, {}, 128),              # 8 -> 4 -> 2 -> 1
    ("convnet", 1, 8, {"width": 64, "depth": 2}, 256),
    ("convnet", 3, 32, {"norm": "batch"}, 2048),
    ("convnet", 3, 32, {"norm": "none", "width": 16}, 256),
    ("resnet10_ap", 3, 32, {}, 512),
    ("resnet10_ap", 1, 8, {}, 512),
    ("resnet10_bn", 3, 32, {}, 256),         # CIFAR variant 32-64-128-256
    ("resnet18_bn", 1, 8, {}, 256),
    ("densenet", 3, 32, {}, 384),
    ("densenet", 1, 8, {}, 384),
]


@pytest.mark.parametrize("name,ch,size,opts,dim", CASES)
def test_shapes(name, ch, size, opts, dim):
    m = build_model(name, 10, ch, size, **opts).eval()
    x = torch.randn(2, ch, size, size)
    with torch.no_grad():
        assert m.embed(x).shape == (2, dim)
        assert m(x).shape == (2, 10)


@pytest.mark.parametrize("name,dim", [("convnet", 128 * 28 * 28), ("resnet10_ap", 512), ("resnet18_bn", 512),
                                      ("densenet", 384)])
def test_shapes_224(name, dim):
    m = build_model(name, 7, 3, 224).eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 224, 224)
        assert m.embed(x).shape == (1, dim)
        assert m(x).shape == (1, 7)


def test_resnet_ap_is_instance_norm_and_avgpool():
    m = build_model("resnet10_ap", 10, 3, 224)
    kinds = {type(mod).__name__ for mod in m.modules()}
    assert "GroupNorm" in kinds and "BatchNorm2d" not in kinds and "AvgPool2d" in kinds
    assert not uses_batchnorm(m) and uses_batchnorm(build_model("resnet10_bn", 10, 3, 32))
    gn = [mod for mod in m.modules() if isinstance(mod, torch.nn.GroupNorm)]
    assert all(g.num_groups == g.num_channels for g in gn)  # one group per channel = instance norm


def test_spec_roundtrip_and_save(tmp_path):
    m = build_model("convnet", 10, 1, 8, width=16, depth=2)
    assert m.spec == {"name": "convnet", "num_classes": 10, "channels": 1, "image_size": 8,
                      "options": {"depth": 2, "width": 16}}
    again = model_from_spec(m.spec)
    assert [k for k in again.state_dict()] == [k for k in m.state_dict()]
    path = save_model(m, tmp_path / "m.safetensors")
    back = load_model(path)
    x = torch.randn(3, 1, 8, 8)
    m.eval()
    with torch.no_grad():
        assert torch.equal(back(x), m(x))
    assert back.spec == m.spec


def test_bad_names_are_usage_errors():
    with pytest.raises(UsageError, match="unknown model"):
        build_model("convnett", 10, 3, 32)
    with pytest.raises(UsageError, match="norm"):
        build_model("convnet", 10, 3, 32, norm="layer")
    with pytest.raises(UsageError):
        build_model("convnet", 10, 3, 32, colour=3)
    assert parse_model_arg("convnet:width=64,norm=batch") == ("convnet", {"width": 64, "norm": "batch"})
    with pytest.raises(UsageError):
        parse_model_arg("convnet:width")


def test_torchvision_missing_or_broken_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def broken(name, *a, **k):  # what the CUDA-only wheel does on this CPU machine
        if name.startswith("torchvision"):
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(UsageError, match="torchvision"):
        build_model("tv:resnet18", 10, 3, 32)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA"):
            resolve_device("cuda")
        with pytest.raises(UsageError):
            resolve_device("cuda:1")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward():
    dev = resolve_device("cuda")
    m = build_model("convnet", 10, 3, 32).to(dev)
    assert m(torch.randn(2, 3, 32, 32, device=dev)).shape == (2, 10)
    with pytest.raises(UsageError):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("threads", [1, 2])
def test_convnet_pooling_gives_avg_pool2d_bits(threads):
    """The matrix-product pooling of small CPU maps is a speed change only: forward and backward
    bits equal F.avg_pool2d's, on ReLU'd and signed inputs of every scale, at 1 and 2 threads."""
    import torch.nn.functional as F

    from yoco_cli.nn.models import POOL_MATMUL_MAX, AvgPool2

    pool, gen = AvgPool2(), torch.Generator().manual_seed(0)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for n, c, h, w in ((64, 64, 8, 8), (64, 64, 4, 4), (3, 128, 2, 2), (5, 64, 7, 7), (9, 3, 8, 6)):
            assert h * w <= POOL_MATMUL_MAX
            for scale in (1e-3, 1.0, 1e3):
                x = (torch.randn(n, c, h, w, generator=gen) * scale).relu_().requires_grad_(True)
                g = torch.randn(n, c, h // 2, w // 2, generator=gen)
                ref = F.avg_pool2d(x, 2)
                got = pool(x)
                assert torch.equal(got, ref), (n, c, h, w, scale)
                assert torch.equal(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(ref, x, g)[0])
    finally:
        torch.set_num_threads(old)
    # larger maps and other devices/dtypes take avg_pool2d itself
    big = torch.randn(2, 4, 16, 16)
    assert torch.equal(pool(big), F.avg_pool2d(big, 2))
    half = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    assert torch.equal(pool(half), F.avg_pool2d(half, 2))
