"""Batched augmentation on the device, every draw from an explicit `torch.Generator`.

DSA (differentiable Siamese augmentation, docs/method.md §5.4). The strategy string is split on "_":
`flip`, `color` and `cutout` always apply when named; exactly one of the remaining named
ops (`crop`, `scale`, `rotate`, `translate`) is drawn uniformly per call. Order:
flip -> color (brightness, saturation, contrast) -> the drawn op -> cutout. Per-sample mode
draws parameters for each image; Siamese mode draws ONE parameter set for the whole
batch, so that real and synthetic images can get the identical transformation
(`apply_same`). Every op is differentiable with respect to the images (condensation
back-propagates through them). Applied to normalized tensors, as the reference does.

    dsa = DSA("color_crop_flip_scale_rotate")
    x_aug = dsa(x, gen)

CutMix (docs/method.md §5.5): `cutmix(x, y, gen, p=0.5)` -> (mixed_x, y_a, y_b, ratio), where
ratio = 1 - (clipped box area)/(H*W) is the weight of y_a in the loss.

ImageNet per-sample pipeline (docs/method.md §2.1, §5.2) on raw [0,1] images: RandomResizedCrop
(scale 0.5-1, ratio 3/4-4/3) + horizontal flip in one `grid_sample`, ColorJitter 0.4
(brightness, contrast, saturation; one random order per batch) and AlexNet PCA lighting
0.1. Crops whose side would exceed the image are clamped to it (torchvision retries and
falls back to a centre crop instead).

Draws are made on the generator's device and moved to the data, so a run is
reproducible for a seed on a given device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UsageError

ALWAYS_ON = ("flip", "color", "cutout")
CHOICE_OPS = ("crop", "scale", "rotate", "translate")
DEFAULT_STRATEGY = "color_crop_flip_scale_rotate"  # evaluation and dynamics (docs/method.md §5.2)


@dataclass(frozen=True)
class DSAParams:
    flip: float = 0.5         # probability of a horizontal flip
    brightness: float = 1.0   # x + (u - 0.5) * brightness
    saturation: float = 2.0   # (x - mean_c) * (u * saturation) + mean_c
    contrast: float = 0.5     # (x - mean) * (u + contrast) + mean
    crop: float = 0.125       # integer shift up to floor(H * crop + 0.5), zero fill
    translate: float = 0.125  # horizontal-only integer shift up to floor(W * translate + 0.5), zero fill
    scale: float = 1.2        # sx, sy ~ U(1/scale, scale)
    rotate: float = 15.0      # degrees, ~ U(-rotate, rotate)
    cutout: float = 0.5       # square side floor(H * cutout + 0.5)


def parse_strategy(strategy: str) -> tuple[list[str], list[str]]:
    tokens = [t for t in (strategy or "").split("_") if t]
    unknown = [t for t in tokens if t not in ALWAYS_ON + CHOICE_OPS]
    if unknown:
        raise UsageError(f"unknown augmentation {unknown[0]!r} in {strategy!r}",
                         f"combine {', '.join(ALWAYS_ON + CHOICE_OPS)} with '_', e.g. {DEFAULT_STRATEGY}")
    always = [t for t in ALWAYS_ON if t in tokens]
    choice = [t for t in tokens if t in CHOICE_OPS]
    return always, list(dict.fromkeys(choice))


class DSA:
    def __init__(self, strategy: str = DEFAULT_STRATEGY, siamese: bool = False, params: DSAParams = DSAParams()):
        self.strategy = strategy
        self.always, self.choice = parse_strategy(strategy)
        self.siamese = siamese
        self.p = params

    def __bool__(self) -> bool:
        return bool(self.always or self.choice)

    # -- draws -------------------------------------------------------------------------
    def _n(self, x) -> int:
        return 1 if self.siamese else x.shape[0]

    def _rand(self, x, gen, *shape) -> torch.Tensor:
        u = torch.rand(self._n(x), *shape, generator=gen, device=gen.device).to(x.device)
        return u.expand(x.shape[0], *shape) if self.siamese else u

    def _randint(self, x, gen, low: int, high: int) -> torch.Tensor:
        r = torch.randint(low, high, (self._n(x),), generator=gen, device=gen.device).to(x.device)
        return r.expand(x.shape[0]) if self.siamese else r

    # -- the pipeline ------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if "flip" in self.always:
            x = self.flip(x, gen)
        if "color" in self.always:
            x = self.contrast(self.saturation(self.brightness(x, gen), gen), gen)
        if self.choice:
            k = int(torch.randint(len(self.choice), (1,), generator=gen, device=gen.device))
            x = getattr(self, self.choice[k])(x, gen)
        if "cutout" in self.always:
            x = self.cutout(x, gen)
        return x

    def apply_same(self, xs: list[torch.Tensor], gen: torch.Generator) -> list[torch.Tensor]:
        """Siamese use: one draw applied to several batches (e.g. real and synthetic images)."""
        if not self.siamese:
            raise ValueError("apply_same needs a Siamese DSA (siamese=True)")
        out = self(torch.cat(xs), gen)
        return list(out.split([t.shape[0] for t in xs]))

    # -- ops (each usable on its own, e.g. in tests) -------------------------------------
    def flip(self, x, gen):
        mask = (self._rand(x, gen) < self.p.flip).view(-1, 1, 1, 1)
        return torch.where(mask, x.flip(3), x)

    def brightness(self, x, gen):
        return x + (self._rand(x, gen) - 0.5).view(-1, 1, 1, 1) * self.p.brightness

    def saturation(self, x, gen):
        mean = x.mean(dim=1, keepdim=True)
        return (x - mean) * (self._rand(x, gen) * self.p.saturation).view(-1, 1, 1, 1) + mean

    def contrast(self, x, gen):
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (self._rand(x, gen) + self.p.contrast).view(-1, 1, 1, 1) + mean

    def crop(self, x, gen):
        return self._shift(x, gen, self.p.crop)

    def translate(self, x, gen):
        # the reference's translate moves columns only (crop moves both axes): one draw per sample
        sw = int(x.shape[3] * self.p.translate + 0.5)
        tx = self._randint(x, gen, -sw, sw + 1)
        return shift_images(x, torch.zeros_like(tx), tx)

    def _shift(self, x, gen, ratio: float):
        sh, sw = int(x.shape[2] * ratio + 0.5), int(x.shape[3] * ratio + 0.5)
        ty = self._randint(x, gen, -sh, sh + 1)
        tx = self._randint(x, gen, -sw, sw + 1)
        return shift_images(x, ty, tx)

    def scale(self, x, gen):
        lo, hi = 1.0 / self.p.scale, self.p.scale
        sx = self._rand(x, gen) * (hi - lo) + lo
        sy = self._rand(x, gen) * (hi - lo) + lo
        zero = torch.zeros_like(sx)
        theta = torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)
        return _warp(x, theta)

    def rotate(self, x, gen):
        ang = (self._rand(x, gen) - 0.5) * 2 * self.p.rotate / 180 * math.pi
        c, s, zero = torch.cos(ang), torch.sin(ang), torch.zeros_like(ang)
        theta = torch.stack([torch.stack([c, s, zero], 1), torch.stack([-s, c, zero], 1)], 1)
        return _warp(x, theta)

    def cutout(self, x, gen):
        _, _, h, w = x.shape
        ch, cw = int(h * self.p.cutout + 0.5), int(w * self.p.cutout + 0.5)
        oy = self._randint(x, gen, 0, h + (1 - ch % 2))
        ox = self._randint(x, gen, 0, w + (1 - cw % 2))
        rows = torch.arange(h, device=x.device)[None, :] - (oy - ch // 2)[:, None]
        cols = torch.arange(w, device=x.device)[None, :] - (ox - cw // 2)[:, None]
        inside = ((rows >= 0) & (rows < ch))[:, :, None] & ((cols >= 0) & (cols < cw))[:, None, :]
        return x * (~inside).unsqueeze(1).to(x.dtype)


def shift_images(x: torch.Tensor, ty: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
    """out[..., i, j] = x[..., i + ty, j + tx] where inside the image, else 0 (per-sample integer shifts)."""
    n, c, h, w = x.shape
    src_r = torch.arange(h, device=x.device)[None, :] + ty[:, None]
    src_c = torch.arange(w, device=x.device)[None, :] + tx[:, None]
    ok_r = ((src_r >= 0) & (src_r < h)).to(x.dtype)
    ok_c = ((src_c >= 0) & (src_c < w)).to(x.dtype)
    x = x.gather(2, src_r.clamp(0, h - 1)[:, None, :, None].expand(n, c, h, w)) * ok_r[:, None, :, None]
    return x.gather(3, src_c.clamp(0, w - 1)[:, None, None, :].expand(n, c, h, w)) * ok_c[:, None, None, :]


def _warp(x, theta):
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


# -- CutMix ----------------------------------------------------------------------------------

def _beta(gen: torch.Generator, a: float) -> float:
    if a == 1.0:  # Beta(1, 1) is uniform: no detour through numpy
        return float(torch.rand(1, generator=gen, device=gen.device))
    import numpy as np

    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
    return float(np.random.default_rng(seed).beta(a, a))


def cutmix_box(h: int, w: int, lam: float, cy: int, cx: int) -> tuple[int, int, int, int]:
    """CutMix box centred at (cy, cx), clipped to the image: (y1, y2, x1, x2).

    With cut = floor(H*sqrt(1-lam)) the rows span [cy - cut//2, cy + cut//2), as the reference's
    rand_bbox does: an odd cut loses one pixel (side 2*(cut//2) before clipping). Columns alike.
    """
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    y1, y2 = min(max(cy - ch // 2, 0), h), min(max(cy + ch // 2, 0), h)
    x1, x2 = min(max(cx - cw // 2, 0), w), min(max(cx + cw // 2, 0), w)
    return y1, y2, x1, x2


def cutmix(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, p: float = 0.5, beta: float = 1.0):
    """With probability p paste a box from a permuted partner; returns (x, y_a, y_b, ratio of y_a)."""
    if p <= 0 or float(torch.rand(1, generator=gen, device=gen.device)) >= p:
        return x, y, y, 1.0
    n, _, h, w = x.shape
    lam = _beta(gen, beta)
    perm = torch.randperm(n, generator=gen, device=gen.device).to(x.device)
    cy = int(torch.randint(h, (1,), generator=gen, device=gen.device))
    cx = int(torch.randint(w, (1,), generator=gen, device=gen.device))
    y1, y2, x1, x2 = cutmix_box(h, w, lam, cy, cx)
    mixed = x.clone()
    mixed[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
    ratio = 1.0 - (y2 - y1) * (x2 - x1) / float(h * w)
    return mixed, y, y[perm], ratio


def mixed_loss(logits: torch.Tensor, y_a, y_b, ratio: float) -> torch.Tensor:
    loss = F.cross_entropy(logits, y_a)
    if ratio < 1.0:
        loss = ratio * loss + (1.0 - ratio) * F.cross_entropy(logits, y_b)
    return loss


# -- ImageNet per-sample pipeline --------------------------------------------------------------

# AlexNet PCA lighting constants (public, from the AlexNet paper's ImageNet RGB statistics)
_EIGVAL = (0.2175, 0.0188, 0.0045)
_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))
_GRAY = (0.299, 0.587, 0.114)


class ImageNetAug:
    def __init__(self, size: int = 224, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), jitter: float = 0.4,
                 lighting: float = 0.1, flip: bool = True):
        self.size, self.scale, self.ratio = size, scale, ratio
        self.jitter, self.lighting, self.flip = jitter, lighting, flip

    def _u(self, n, gen, lo, hi, x):
        return (torch.rand(n, generator=gen, device=gen.device) * (hi - lo) + lo).to(x.device)

    def resized_crop(self, x, gen):
        n = x.shape[0]
        area = self._u(n, gen, *self.scale, x)
        logr = self._u(n, gen, math.log(self.ratio[0]), math.log(self.ratio[1]), x)
        cw = (area * logr.exp()).sqrt().clamp(max=1.0)
        ch = (area / logr.exp()).sqrt().clamp(max=1.0)
        # crop centre uniform over the positions that keep the crop inside the image
        cx = (self._u(n, gen, 0, 1, x) * (1 - cw) + cw / 2) * 2 - 1
        cy = (self._u(n, gen, 0, 1, x) * (1 - ch) + ch / 2) * 2 - 1
        sx = cw
        if self.flip:
            sx = torch.where(self._u(n, gen, 0, 1, x) < 0.5, -cw, cw)
        zero = torch.zeros_like(cw)
        theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, ch, cy], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), [n, x.shape[1], self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def color(self, x, gen):
        n = x.shape[0]
        order = torch.randperm(3, generator=gen, device=gen.device).tolist()
        for op in order:
            a = self._u(n, gen, 1 - self.jitter, 1 + self.jitter, x).view(-1, 1, 1, 1)
            if op == 0:  # brightness: blend with black
                x = x * a
            elif x.shape[1] == 3:
                gray = (x * torch.tensor(_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
                ref = gray if op == 1 else gray.mean(dim=(2, 3), keepdim=True)  # 1 saturation, 2 contrast
                x = x * a + ref * (1 - a)
            elif op == 2:
                x = x * a + x.mean(dim=(1, 2, 3), keepdim=True) * (1 - a)
        return x

    def light(self, x, gen):
        if x.shape[1] != 3 or self.lighting <= 0:
            return x
        alpha = torch.randn(x.shape[0], 3, generator=gen, device=gen.device).to(x.device) * self.lighting
        vec = torch.tensor(_EIGVEC, device=x.device, dtype=x.dtype)
        val = torch.tensor(_EIGVAL, device=x.device, dtype=x.dtype)
        rgb = (vec[None] * (alpha * val[None])[:, None, :]).sum(-1)  # [n, 3]
        return x + rgb[:, :, None, None]

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.light(self.color(self.resized_crop(x, gen), gen), gen)
