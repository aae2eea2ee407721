"""Training dynamics as per-(epoch, sample) sufficient statistics (spec sections 2.3 and 3).

The reference dumps fp16 log-softmax outputs for every batch of every epoch (0.9 GB for
CIFAR-100 IPC 10) and replays them to score. We accumulate, online, exactly what the
scores need and nothing else:

    err[t, i]      float16  ||p_{i,t} - e_{y_i}||_2          (LBPE any window/top-K, EL2N)
    correct[t, i]  bits     argmax p_{i,t} == y_i              (forgetting, correctness, top-K epochs)
    margin_sum[i]  float32  sum_t p_{i,t}[y] - max_{k!=y} p_{i,t}[k]   (AUM over all epochs)
    correct_num[t] int64    sum_i correct[t, i]                (top-K epoch choice)
    loss_epoch[t]  float32  sum over the epoch's batches of the batch-mean NLL (`--use-loss`)
    targets[i]     int64    labels of the decoded images (index = decoded index, spec 1.3)

The engine and the reader of the reference's `td-*.pickle` both feed `Recorder.update`
with log-probabilities, so both paths give identical statistics by construction.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import tensors
from ..errors import IntegrityError

FORMAT = "yoco-dynamics/1"


@dataclass
class Dynamics:
    targets: Any       # int64 [N]
    err: Any           # float16 [E, N]
    correct: Any       # bool [E, N]
    margin_sum: Any    # float32 [N]
    correct_num: Any   # int64 [E]
    loss_epoch: Any    # float32 [E]
    meta: dict         # num_classes, seed, epochs, how it was made

    @property
    def epochs(self) -> int:
        return int(self.err.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.err.shape[1])

    def save(self, path: Path | str) -> Path:
        import numpy as np
        import torch

        bits = torch.from_numpy(np.packbits(self.correct.cpu().numpy().astype(np.uint8), axis=1))
        return tensors.save(path, {
            "targets": self.targets.long(), "err": self.err.half(), "correct_bits": bits,
            "margin_sum": self.margin_sum.float(), "correct_num": self.correct_num.long(),
            "loss_epoch": self.loss_epoch.float(),
        }, {"format": FORMAT, **self.meta, "num_samples": self.num_samples})

    @classmethod
    def load(cls, path: Path | str) -> "Dynamics":
        import numpy as np
        import torch

        ts, meta = tensors.load(path)
        if meta.get("format") != FORMAT:
            raise IntegrityError(f"{path} is not a yoco dynamics file")
        n = int(meta["num_samples"])
        bits = np.unpackbits(ts["correct_bits"].numpy(), axis=1)[:, :n].astype(bool)
        meta = {k: v for k, v in meta.items() if k not in ("format", "num_samples")}
        return cls(ts["targets"], ts["err"], torch.from_numpy(bits), ts["margin_sum"],
                   ts["correct_num"], ts["loss_epoch"], meta)


def batch_means(values, sizes: list[int]):
    """Mean of each consecutive run of `sizes[k]` values; runs of equal sizes are reduced as rows of
    one matrix, which gives the same bits as reducing each batch alone (tests/test_reference_import.py)."""
    import torch

    out, start, k = [], 0, 0
    while k < len(sizes):
        b, same = sizes[k], 1
        while k + same < len(sizes) and sizes[k + same] == b:
            same += 1
        rows = values[start:start + b * same]
        out.append(rows.view(same, b).mean(1))  # an empty batch's mean is NaN, as torch gives it
        start, k = start + b * same, k + same
    return torch.cat(out) if out else values.new_zeros(0)


def _is_argmax(p, y, p_y, other_max):
    """`p.argmax(1) == y` without CPU argmax's slow kernel (1 ms per 4000 x 100): y wins outright
    where p_y beats every other class; ties and NaNs, where argmax's first-index rule decides, go
    through argmax itself. On GPUs argmax is cheap and the row test would cost a sync."""
    if p.device.type != "cpu":
        return p.argmax(1) == y
    correct = p_y > other_max
    unsure = (p_y == other_max) | p_y.isnan() | other_max.isnan()
    if bool(unsure.any()):
        rows = unsure.nonzero().squeeze(1)
        correct[rows] = p[rows].argmax(1) == y[rows]
    return correct


class Recorder:
    """Accumulates `Dynamics` from (epoch, indices, log-probabilities) batches, on any device."""

    def __init__(self, targets, epochs: int, num_classes: int, device=None):
        import torch

        device = device or targets.device
        n = int(targets.shape[0])
        self.targets = targets.to(device).long()
        self.num_classes = num_classes
        self.err = torch.zeros(epochs, n, dtype=torch.float32, device=device)
        self.correct = torch.zeros(epochs, n, dtype=torch.bool, device=device)
        self.margin_sum = torch.zeros(n, dtype=torch.float64, device=device)
        self.correct_num = torch.zeros(epochs, dtype=torch.int64, device=device)
        self.loss_epoch = torch.zeros(epochs, dtype=torch.float64, device=device)

    def update(self, epoch: int, idx, log_probs, batch_sizes: list[int] | None = None) -> None:
        """One batch: `log_probs` [b, C] (log-softmax, any float dtype) for decoded indices `idx` [b].

        The reference logs the log-softmax as float16 and scores exp() of that (spec 2.3, 3, P14),
        so every path rounds to float16 first: the engine's float32 outputs then give the same
        statistics as a reference pickle of the same outputs (argmax ties included).

        `batch_sizes`: the rows are several consecutive batches of this epoch, no index twice (a
        replay of recorded batches in bulk); the result is bit for bit that of one call per batch.
        """
        lp = log_probs.detach().half().float()
        p = lp.exp()
        y = self.targets[idx]
        p_y = p.gather(1, y[:, None]).squeeze(1)
        # ||p - e_y||^2 = sum p^2 - 2 p_y + 1  (clamped: rounding can make it a hair negative)
        err = (p.pow(2).sum(1) - 2 * p_y + 1).clamp_min(0).sqrt()
        other_max = p.scatter(1, y[:, None], float("-inf")).amax(1)
        margin = p_y - other_max
        correct = _is_argmax(p, y, p_y, other_max)
        self.err[epoch, idx] = err
        self.correct[epoch, idx] = correct
        self.margin_sum.index_add_(0, idx, margin.double())
        self.correct_num[epoch] += correct.sum()
        nll = -lp.gather(1, y[:, None])
        if batch_sizes is None:
            self.loss_epoch[epoch] += nll.mean().double()
        else:  # each batch adds its own mean, in order, as float64 (the same roundings as one call each)
            total = float(self.loss_epoch[epoch])
            for m in batch_means(nll.flatten(), batch_sizes).double().tolist():
                total += m
            self.loss_epoch[epoch] = total

    def result(self, meta: dict) -> Dynamics:
        return Dynamics(self.targets.cpu(), self.err.cpu().half(), self.correct.cpu(),
                        self.margin_sum.cpu().float(), self.correct_num.cpu(), self.loss_epoch.cpu().float(),
                        {"num_classes": self.num_classes, "epochs": int(self.err.shape[0]), **meta})
