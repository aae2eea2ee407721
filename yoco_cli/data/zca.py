"""ZCA whitening as the publishers of ZCA-space condensed sets built it (KIP, MTT with --zca).

A set in the `zca` value space was trained on, and must be tested on, images put through
the ZCA transform its publisher fit on the real training split. Evaluating it therefore
needs that publisher's exact recipe; they differ, so each is a row of `SETTINGS` with its
source. The transform is refit here from the real training split (it is a function of it),
so nothing has to be downloaded beyond the dataset itself.

mtt   Cazenavette et al., "Dataset Distillation by Matching Training Trajectories" (CVPR'22),
      github.com/GeorgeCazenavette/mtt-distillation `utils.py::get_dataset` with `--zca`
      (read at commit 0c42493): the images are ToTensor() only (raw [0, 1], no mean/std
      normalisation), then `kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True)` is fit on
      the whole training split and applied to train and test. kornia (`zca_mean`): per-feature
      mean removed, unbiased covariance C = X'X / (N - 1), C = U S U', T = U diag(1/sqrt(S + eps)) U',
      x -> (x - mean) T, features = the flattened C*H*W pixels.
kip   Nguyen, Novak, Xiao, Lee, "Dataset Distillation with Infinitely Wide Convolutional
      Networks" (NeurIPS'21) and its neural-tangents code (`_get_whitening_transform`,
      preprocess type "zca_normalize"): per-channel standardisation with the training split's
      statistics, then per-image "layer norm" (subtract the image's mean, divide by its L2
      norm), then C = X'X / N without removing a dataset mean, regularised by
      reg * trace(C) / d with reg = 0.1, T = U diag(1/sqrt(s)) U', and eigenvalues past the
      N-th set to 1 when N < d ("rank control"). The regularisation strength 0.1 is the value
      the KIP ConvNet results use as far as the public code shows (verified only in copies of
      that code, not in the KIP data release itself); it is a setting here, not a guess buried
      in code, and enters every evaluation's cache key.

Flattening order does not matter: both recipes are equivariant to permuting the features.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import UsageError


@dataclass(frozen=True)
class ZcaSettings:
    publisher: str
    standardize: bool     # per-channel (x - mean) / std with the training split's own statistics first
    layer_norm: bool      # per image: subtract its mean, divide by its L2 norm
    center: bool          # remove the per-feature training mean (kornia) before and when applying
    unbiased: bool        # covariance over N - 1 (kornia) instead of N
    reg: float
    reg_relative: bool    # reg * trace(C) / d (KIP) instead of an absolute eps (kornia)
    rank_control: bool    # eigenvalues past the N-th -> 1 when N < d (KIP)
    source: str

    def as_dict(self) -> dict:
        return asdict(self)


SETTINGS: dict[str, ZcaSettings] = {
    "mtt": ZcaSettings("mtt", standardize=False, layer_norm=False, center=True, unbiased=True, reg=0.1,
                       reg_relative=False, rank_control=False,
                       source="GeorgeCazenavette/mtt-distillation utils.py get_dataset --zca: ToTensor, "
                              "kornia ZCAWhitening(eps=0.1, compute_inv=True) fit on the training split"),
    "kip": ZcaSettings("kip", standardize=True, layer_norm=True, center=False, unbiased=False, reg=0.1,
                       reg_relative=True, rank_control=True,
                       source="KIP (Nguyen et al. 2021) zca_normalize: per-channel standardisation, per-image "
                              "layer norm, ZCA regularised by 0.1 * trace/d, rank control"),
}


def settings_for(publisher: str | None, what: str = "this set") -> ZcaSettings:
    """The recipe of a ZCA set's publisher, or a usage error naming what is missing."""
    key = (publisher or "").lower()
    if key in SETTINGS:
        return SETTINGS[key]
    raise UsageError(f"{what} is in the zca value space, but the ZCA settings of its publisher "
                     f"({publisher or 'not recorded'}) are unknown: evaluating it needs the transform its images "
                     f"were whitened with", f"yoco knows them for {' and '.join(SETTINGS)} sets; import the file "
                     "with --format kip (or --format mtt --value-space zca) if it is one of those")


@dataclass
class ZcaTransform:
    settings: ZcaSettings
    matrix: Any                 # float64 [d, d], acts on the right of flattened rows
    mean: Any | None            # float64 [d] (center=True)
    channel_mean: Any | None    # float64 [C] (standardize=True)
    channel_std: Any | None

    def apply(self, x, batch: int = 4096):
        """[N, C, H, W] raw [0, 1] images -> the publisher's ZCA space (float32, same shape)."""
        import torch

        out = torch.empty(x.shape, dtype=torch.float32)
        for s in range(0, x.shape[0], batch):
            rows = self._prepare(x[s:s + batch])
            if self.mean is not None:
                rows = rows - self.mean
            out[s:s + batch] = (rows @ self.matrix).float().reshape(rows.shape[0], *x.shape[1:])
        return out

    def _prepare(self, x):
        return _prepare(x, self.settings, self.channel_mean, self.channel_std)


def _prepare(x, st: ZcaSettings, channel_mean, channel_std):
    """Standardise and layer-normalise as the recipe says; -> float64 rows [N, d]."""
    x = x.double()
    if st.standardize:
        x = (x - channel_mean.view(1, -1, 1, 1)) / channel_std.view(1, -1, 1, 1)
    rows = x.reshape(x.shape[0], -1)
    if st.layer_norm:
        rows = rows - rows.mean(1, keepdim=True)
        norms = rows.norm(dim=1, keepdim=True)
        rows = rows / norms.clamp_min(1e-12)  # a constant image has norm 0: leave it at 0, not NaN
    return rows


def fit(train_x, settings: ZcaSettings) -> ZcaTransform:
    """Fit the publisher's ZCA transform on a real training split ([N, C, H, W], raw [0, 1])."""
    import torch

    n = int(train_x.shape[0])
    if n < 2:
        raise UsageError(f"a ZCA transform needs at least 2 training images, the split has {n}")
    channel_mean = channel_std = None
    if settings.standardize:
        per_channel = train_x.double().transpose(0, 1).reshape(train_x.shape[1], -1)
        channel_mean, channel_std = per_channel.mean(1), per_channel.std(1, unbiased=False).clamp_min(1e-12)
    rows = _prepare(train_x, settings, channel_mean, channel_std)
    mean = rows.mean(0) if settings.center else None
    if mean is not None:
        rows = rows - mean
    d = rows.shape[1]
    cov = rows.T @ rows / (n - 1 if settings.unbiased else n)
    reg = settings.reg * float(torch.trace(cov)) / d if settings.reg_relative else settings.reg
    eigvals, eigvecs = torch.linalg.eigh(cov + reg * torch.eye(d, dtype=cov.dtype) if settings.reg_relative
                                         else cov)
    eigvals = eigvals.flip(0).clamp_min(0)   # descending, as an SVD orders them
    eigvecs = eigvecs.flip(1)
    scale = (eigvals if settings.reg_relative else eigvals + settings.reg).rsqrt()
    if settings.rank_control and n < d:
        scale[n:] = 1.0
    matrix = (eigvecs * scale) @ eigvecs.T
    return ZcaTransform(settings, matrix, mean, channel_mean, channel_std)
