"""The networks of the paper's protocol (docs/method.md §2.2, §5.2, §5.3), built by name.

    build_model("convnet", num_classes=10, channels=3, image_size=32)        # ConvNet-3, width 128, instance norm
    build_model("resnet10_ap", 10, 3, 224)                                    # ResNetAP-10 (IDC's ImageNet net)
    build_model("resnet10_bn", 10, 3, 32); build_model("resnet18_bn", ...)    # BatchNorm ResNets
    build_model("densenet", 10, 3, 32)                                        # CIFAR DenseNet, 6-12-24-16, growth 12
    build_model("tv:resnet18", 10, 3, 224)                                    # any torchvision model (optional)

Every model has `embed(x)` (the features the classifier sees: 2048-d for ConvNet-3 at
32 px, 512-d pooled for ResNetAP-10) and `forward(x) = classifier(embed(x))`, and carries
`model.spec`, a JSON-able dict from which `model_from_spec` rebuilds the same architecture
(weights are stored separately, as safetensors).

"Instance norm" is GroupNorm with one group per channel and affine parameters, exactly
the reference's choice (docs/method.md §2.2). Pooling stops once a map is 1 pixel, so every model
accepts any image size from 8x8 up (8x8 digits go 8 -> 4 -> 2 -> 1 through ConvNet-3).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError

NORMS = ("instance", "batch", "none")


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "instance":
        return nn.GroupNorm(ch, ch, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "none":
        return nn.Identity()
    raise UsageError(f"unknown norm {kind!r}", f"use one of {', '.join(NORMS)}")


# 2x2 average pooling of small maps on the CPU as one matrix product with a constant 0/0.25 matrix.
# torch's CPU avg_pool2d costs about 10 ns an output at these sizes (forward and backward 2.4 of the
# 11 ms of a digits training step, 1 thread); the product costs about a quarter of that. Each output
# is 0.25 * (((a + b) + c) + d) either way, so on maps of up to 8x8 (64 products a row, one block of
# the matrix kernel) both passes give avg_pool2d's very bits (tests/test_models.py checks this on the
# machine it runs on); larger maps keep avg_pool2d, where the kernel may sum in another order.
# One difference: a NaN or inf poisons its whole map here (0 x inf), only its window in avg_pool2d;
# the next 3x3 convolution spreads it over the map anyway, and such a run has diverged.
POOL_MATMUL_MAX = 64
_POOL_MATRICES: dict[tuple, torch.Tensor] = {}


def _pool_matrix(h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    key = (h, w, dtype)
    if key not in _POOL_MATRICES:
        ho, wo = h // 2, w // 2
        rows = torch.arange(2 * ho).repeat_interleave(2 * wo) * w + torch.arange(2 * wo).repeat(2 * ho)
        cols = (torch.arange(2 * ho) // 2).repeat_interleave(2 * wo) * wo + (torch.arange(2 * wo) // 2).repeat(2 * ho)
        m = torch.zeros(h * w, ho * wo, dtype=dtype)
        m[rows, cols] = 0.25
        _POOL_MATRICES[key] = m
    return _POOL_MATRICES[key]


class AvgPool2(nn.AvgPool2d):
    """AvgPool2d(2) whose CPU forward on small float32 maps is one matrix product (same bits, see above)."""

    def __init__(self):
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.device.type != "cpu" or x.dtype != torch.float32:
            return super().forward(x)
        n, c, h, w = x.shape
        if h < 2 or w < 2 or h * w > POOL_MATMUL_MAX:
            return super().forward(x)
        return (x.reshape(n * c, h * w) @ _pool_matrix(h, w, x.dtype)).view(n, c, h // 2, w // 2)


class ConvNet(nn.Module):
    """depth x [conv3x3(pad 1, bias) -> norm -> ReLU -> AvgPool 2x2] -> flatten -> Linear."""

    def __init__(self, num_classes: int, channels: int = 3, image_size: int = 32, width: int = 128,
                 depth: int = 3, norm: str = "instance"):
        super().__init__()
        layers: list[nn.Module] = []
        ch, size = channels, image_size
        for _ in range(depth):
            layers += [nn.Conv2d(ch, width, 3, padding=1), _norm(norm, width), nn.ReLU(inplace=True)]
            if size >= 2:  # a 1-pixel map cannot be pooled further
                layers.append(AvgPool2())
                size //= 2
            ch = width
        self.features = nn.Sequential(*layers)
        self.feature_dim = width * size * size
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


# -- ResNetAP (IDC's ResNet with average-pool downsampling, docs/method.md §5.3) -------------------

class _APBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = _norm(norm, cout)
        # a strided block downsamples by average pooling between its two convs (not a strided conv)
        self.pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = _norm(norm, cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride > 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False),
                                          nn.AvgPool2d(stride) if stride > 1 else nn.Identity(), _norm(norm, cout))

    def forward(self, x):
        out = self.pool(F.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetAP(nn.Module):
    def __init__(self, num_classes: int, channels: int = 3, image_size: int = 32, depth: int = 10,
                 width: int = 64, norm: str = "instance"):
        super().__init__()
        blocks = {10: 1, 18: 2}.get(depth)
        if blocks is None:
            raise UsageError(f"ResNetAP depth {depth} is not supported", "use 10 or 18")
        large = image_size >= 128
        # large inputs: 7x7 stride-1 stem then AvgPool 4 (224 -> 56); small inputs: 3x3 stem, no pooling
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 7 if large else 3, padding=3 if large else 1, bias=False),
            _norm(norm, width), nn.ReLU(inplace=True), nn.AvgPool2d(4) if large else nn.Identity())
        size = image_size // 4 if large else image_size
        stages, cin = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0 and size >= 2) else 1
                stages.append(_APBlock(cin, cout, stride, norm))
                size //= stride
                cin = cout
        self.layers = nn.Sequential(*stages)
        self.feature_dim = cin
        self.classifier = nn.Linear(cin, num_classes)
        for m in self.modules():  # docs/method.md §5.3: He-style normal init for convs, unit norms
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def embed(self, x):
        return F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)

    def forward(self, x):
        return self.classifier(self.embed(x))


# -- BatchNorm ResNet (cross-architecture evaluation) ------------------------------------------

class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride > 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetBN(nn.Module):
    """CIFAR variant (3x3 stem, widths 32-64-128-256) below 128 px; ImageNet variant (7x7/2 + maxpool, 64-512) above."""

    def __init__(self, num_classes: int, channels: int = 3, image_size: int = 32, depth: int = 10,
                 width: int | None = None):
        super().__init__()
        blocks = {10: 1, 18: 2}.get(depth)
        if blocks is None:
            raise UsageError(f"ResNet depth {depth} is not supported", "use 10 or 18")
        large = image_size >= 128
        width = width or (64 if large else 32)
        if large:
            self.stem = nn.Sequential(nn.Conv2d(channels, width, 7, stride=2, padding=3, bias=False),
                                      nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
            size = image_size // 4
        else:
            self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(width), nn.ReLU(inplace=True))
            size = image_size
        stages, cin = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0 and size >= 2) else 1
                stages.append(_BasicBlock(cin, width * mult, stride))
                size //= stride
                cin = width * mult
        self.layers = nn.Sequential(*stages)
        self.feature_dim = cin
        self.classifier = nn.Linear(cin, num_classes)

    def embed(self, x):
        return F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)

    def forward(self, x):
        return self.classifier(self.embed(x))


# -- DenseNet (CIFAR style, blocks 6-12-24-16, growth 12) --------------------------------------

class _Bottleneck(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class _Transition(nn.Module):
    def __init__(self, cin: int, cout: int, pool: bool):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2) if pool else nn.Identity()

    def forward(self, x):
        return self.pool(self.conv(F.relu(self.bn(x))))


class DenseNet(nn.Module):
    def __init__(self, num_classes: int, channels: int = 3, image_size: int = 32, growth: int = 12,
                 blocks: tuple[int, ...] = (6, 12, 24, 16), reduction: float = 0.5):
        super().__init__()
        ch = 2 * growth
        large = image_size >= 128
        # large inputs get a downsampling stem so block 1 does not run at full resolution
        self.stem = (nn.Sequential(nn.Conv2d(channels, ch, 7, stride=2, padding=3, bias=False), nn.MaxPool2d(3, 2, 1))
                     if large else nn.Conv2d(channels, ch, 3, padding=1, bias=False))
        size = image_size // 4 if large else image_size
        parts: list[nn.Module] = []
        for i, n in enumerate(blocks):
            for _ in range(n):
                parts.append(_Bottleneck(ch, growth))
                ch += growth
            if i < len(blocks) - 1:
                out = math.floor(ch * reduction)
                parts.append(_Transition(ch, out, pool=size >= 2))
                size = size // 2 if size >= 2 else size
                ch = out
        self.features = nn.Sequential(*parts)
        self.bn = nn.BatchNorm2d(ch)
        self.feature_dim = ch
        self.classifier = nn.Linear(ch, num_classes)

    def embed(self, x):
        out = F.relu(self.bn(self.features(self.stem(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x):
        return self.classifier(self.embed(x))


# -- torchvision (optional) --------------------------------------------------------------------

class TorchvisionModel(nn.Module):
    """Wraps a torchvision classifier; `embed` = the input of its last Linear layer."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        last = [m for m in net.modules() if isinstance(m, nn.Linear)]
        if not last:
            raise UsageError("this torchvision model has no Linear classifier", "pick a classification model")
        self._head = last[-1]
        self.feature_dim = self._head.in_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        seen: list[torch.Tensor] = []
        handle = self._head.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
        try:
            self.net(x)
        finally:
            handle.remove()
        return seen[-1].flatten(1)

    def forward(self, x):
        return self.net(x)


def _torchvision(arch: str, num_classes: int, channels: int, **options) -> nn.Module:
    try:
        import torchvision.models as tvm
    except Exception as e:  # noqa: BLE001  ImportError, or RuntimeError from a CUDA-only wheel on a CPU machine
        raise UsageError(f"model tv:{arch} needs torchvision, which cannot be imported here "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
                         "install the `vision` extra with a torchvision matching your torch, or pick a built-in model")
    if channels != 3:
        raise UsageError(f"tv:{arch} expects 3-channel images, the set has {channels}", "use a built-in model")
    try:
        net = tvm.get_model(arch, weights=None, num_classes=num_classes, **options)
    except (ValueError, TypeError) as e:
        raise UsageError(f"torchvision cannot build {arch!r}: {e}", "see torchvision.models.list_models()") from None
    return TorchvisionModel(net)


# -- registry ----------------------------------------------------------------------------------

def _convnet(nc, ch, size, **o):
    return ConvNet(nc, ch, size, width=int(o.pop("width", 128)), depth=int(o.pop("depth", 3)),
                   norm=str(o.pop("norm", "instance")), **o)


_BUILDERS = {
    "convnet": _convnet,
    "resnet10_ap": lambda nc, ch, size, **o: ResNetAP(nc, ch, size, depth=10, **o),
    "resnet18_ap": lambda nc, ch, size, **o: ResNetAP(nc, ch, size, depth=18, **o),
    "resnet10_bn": lambda nc, ch, size, **o: ResNetBN(nc, ch, size, depth=10, **o),
    "resnet18_bn": lambda nc, ch, size, **o: ResNetBN(nc, ch, size, depth=18, **o),
    "densenet": lambda nc, ch, size, **o: DenseNet(nc, ch, size, **o),
}


def known_models() -> list[str]:
    return sorted(_BUILDERS) + ["tv:<torchvision name>"]


def model_spec(name: str, num_classes: int, channels: int, image_size: int, **options: Any) -> dict:
    """The JSON-able description `model_from_spec` rebuilds (also part of stage cache keys)."""
    return {"name": name, "num_classes": int(num_classes), "channels": int(channels),
            "image_size": int(image_size), "options": dict(sorted(options.items()))}


def build_model(name: str, num_classes: int, channels: int, image_size: int, **options: Any) -> nn.Module:
    spec = model_spec(name, num_classes, channels, image_size, **options)
    if name.startswith("tv:"):
        model = _torchvision(name[3:], num_classes, channels, **options)
    elif name in _BUILDERS:
        try:
            model = _BUILDERS[name](num_classes, channels, image_size, **dict(options))
        except TypeError as e:
            raise UsageError(f"bad option for model {name!r}: {e}") from None
    else:
        import difflib

        close = difflib.get_close_matches(name, list(_BUILDERS), n=2)
        raise UsageError(f"unknown model {name!r}",
                         f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known_models())}")
    model.spec = spec  # type: ignore[assignment]  # a plain attribute: nn.Module types only tensors and submodules
    return model


def spec_of(model: nn.Module) -> dict:
    """The `spec` that build_model attached (read past nn.Module's typing of attributes as tensors)."""
    return model.__dict__["spec"]


def model_from_spec(spec: dict) -> nn.Module:
    try:
        return build_model(spec["name"], spec["num_classes"], spec["channels"], spec["image_size"],
                           **spec.get("options", {}))
    except KeyError as e:
        raise UsageError(f"model spec lacks {e}", "a spec has name, num_classes, channels, image_size, options") from None


def uses_batchnorm(model: nn.Module) -> bool:
    """BatchNorm keeps running statistics, which the batched (vmap) trainer cannot carry."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def parse_model_arg(text: str) -> tuple[str, dict]:
    """`convnet`, `convnet:width=64,depth=3,norm=batch` or `tv:resnet18` -> (name, options)."""
    if text.startswith("tv:"):
        return text, {}
    name, _, rest = text.partition(":")
    options: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq:
            raise UsageError(f"model option {part!r} is not key=value", "e.g. convnet:width=64,norm=batch")
        options[key.strip()] = _parse_value(value.strip())
    return name, options


def _parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v
