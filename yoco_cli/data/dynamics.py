"""Training dynamics as per-(epoch, sample) sufficient statistics (docs/method.md §2.3, §3).

The reference dumps fp16 log-softmax outputs for every batch of every epoch (0.9 GB for
CIFAR-100 IPC 10) and replays them to score. We accumulate, online, exactly what the
scores need and nothing else:

    err[t, i]      float32  ||p_{i,t} - e_{y_i}||_2          (LBPE any window/top-K, EL2N)
    correct[t, i]  bits     argmax p_{i,t} == y_i              (forgetting, correctness, top-K epochs)
    margin_sum[i]  float32  sum_t p_{i,t}[y] - max_{k!=y} p_{i,t}[k]   (AUM over all epochs)
    correct_num[t] int64    sum_i correct[t, i]                (top-K epoch choice)
    loss_epoch[t]  float32  sum over the epoch's batches of the batch-mean NLL (`--use-loss`)
    targets[i]     int64    labels of the decoded images (index = decoded index, docs/method.md §1.3)

The engine and the reader of the reference's `td-*.pickle` both feed `Recorder.update`
with log-probabilities, so both paths give identical statistics by construction.

The error is computed and kept in float32, as the reference computes it
(`||exp(out.float()) - e_y||`), and by a formula that does not cancel: the algebraic form
sqrt(sum p^2 - 2 p_y + 1) loses every digit when p_y -> 1, which is exactly the easy samples
YOCO keeps (measured: up to 4.6e-4 relative on LBPE/EL2N, 10-24 of 40 CCS images moved).

`Records` (optional, `yoco dynamics --records`) are the per-batch log-probabilities themselves,
in the reference's record order, so a run can be written out as a reference `td-*.pickle`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import tensors
from ..errors import IntegrityError

FORMAT = "yoco-dynamics/2"          # 2: float32 err (1: float16, still readable)
READABLE = ("yoco-dynamics/1", FORMAT)
RECORDS_FORMAT = "yoco-records/1"


@dataclass
class Dynamics:
    targets: Any       # int64 [N]
    err: Any           # float32 [E, N]
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
            "targets": self.targets.long(), "err": self.err.float(), "correct_bits": bits,
            "margin_sum": self.margin_sum.float(), "correct_num": self.correct_num.long(),
            "loss_epoch": self.loss_epoch.float(),
        }, {"format": FORMAT, **self.meta, "num_samples": self.num_samples})

    @classmethod
    def load(cls, path: tensors.Source) -> Dynamics:
        import numpy as np
        import torch

        ts, meta = tensors.load(path)
        if meta.get("format") not in READABLE:
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


@dataclass
class Records:
    """Per-batch log-probabilities in record order (the reference's `td-*.pickle` content, docs/method.md §2.3).

    Record r is batch r of the run: `epoch[r]`, `iteration[r]` (batch index within its epoch)
    and `size[r]` rows of `idx` (decoded indices) and `output` (float16 log-softmax [rows, C]),
    rows laid end to end in record order. Cost: (2 C + 4) bytes per sample and epoch.
    """
    epoch: Any       # int32 [R]
    iteration: Any   # int32 [R]
    size: Any        # int32 [R]
    idx: Any         # int32 [rows]
    output: Any      # float16 [rows, C]

    def __len__(self) -> int:
        return int(self.size.shape[0])

    def save(self, path: Path | str, meta: dict) -> Path:
        return tensors.save(path, {"epoch": self.epoch, "iteration": self.iteration, "size": self.size,
                                   "idx": self.idx, "output": self.output}, {"format": RECORDS_FORMAT, **meta})

    @classmethod
    def load(cls, path: tensors.Source) -> Records:
        ts, meta = tensors.load(path)
        if meta.get("format") != RECORDS_FORMAT:
            raise IntegrityError(f"{path} is not a yoco records file")
        return cls(ts["epoch"], ts["iteration"], ts["size"], ts["idx"], ts["output"])

    def batches(self):
        """(epoch, iteration, idx int64 [b], output float16 [b, C]) per record, in order."""
        start = 0
        for e, it, b in zip(self.epoch.tolist(), self.iteration.tolist(), self.size.tolist()):
            yield e, it, self.idx[start:start + b].long(), self.output[start:start + b]
            start += b


def errors(p, y):
    """||p - e_y||_2 per row in float32, without cancellation for p_y -> 1.

    (1 - p_y)^2 is formed from 1 - p_y, which is exact in floating point for p_y in [0.5, 1]
    (Sterbenz), instead of from sum p^2 - 2 p_y + 1, whose terms cancel to nothing there.
    """
    sq = p.float().pow(2)
    p_y = p.gather(1, y[:, None]).float()
    sq = sq.scatter(1, y[:, None], (1.0 - p_y).pow(2))
    return sq.sum(1).sqrt()


class Recorder:
    """Accumulates `Dynamics` (and optionally `Records`) from (epoch, indices, log-probabilities) batches."""

    def __init__(self, targets, epochs: int, num_classes: int, device=None, keep_records: bool = False):
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
        self.records = _RecordBuffer(epochs * n, num_classes) if keep_records else None

    def update(self, epoch: int, idx, log_probs, batch_sizes: list[int] | None = None) -> None:
        """One batch: `log_probs` [b, C] (log-softmax, any float dtype) for decoded indices `idx` [b].

        The reference logs the log-softmax as float16 and scores exp() of that (docs/method.md §2.3, §3, §9.14),
        so every path rounds to float16 first: the engine's float32 outputs then give the same
        statistics as a reference pickle of the same outputs (argmax ties included). From there
        on everything is float32 (error, margin) or wider (sums), as in the reference.

        `batch_sizes`: the rows are several consecutive batches of this epoch, no index twice (a
        replay of recorded batches in bulk); the result is bit for bit that of one call per batch.
        """
        half = log_probs.detach().half()
        lp = half.float()
        p = lp.exp()
        y = self.targets[idx]
        p_y = p.gather(1, y[:, None]).squeeze(1)
        other_max = p.scatter(1, y[:, None], float("-inf")).amax(1)
        margin = p_y - other_max
        correct = _is_argmax(p, y, p_y, other_max)
        self.err[epoch, idx] = errors(p, y)
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
        if self.records is not None:  # one record per batch, as the reference logs them
            start = 0
            for b in batch_sizes or [int(idx.shape[0])]:
                self.records.add(epoch, idx[start:start + b], half[start:start + b])
                start += b

    def state(self) -> dict:
        """Tensors to checkpoint mid-run (records included when kept)."""
        import torch

        st = {"err": self.err, "correct": self.correct.to(torch.uint8), "margin_sum": self.margin_sum,
              "correct_num": self.correct_num, "loss_epoch": self.loss_epoch}
        if self.records is not None:
            st.update({f"records.{k}": v for k, v in self.records.state().items()})
        return st

    def load_state(self, ts: dict) -> None:
        import torch

        self.err.copy_(ts["err"])
        self.correct.copy_(ts["correct"].to(torch.bool))
        self.margin_sum.copy_(ts["margin_sum"])
        self.correct_num.copy_(ts["correct_num"])
        self.loss_epoch.copy_(ts["loss_epoch"])
        if self.records is not None:
            self.records.load_state({k[len("records."):]: v for k, v in ts.items() if k.startswith("records.")})

    def result(self, meta: dict) -> Dynamics:
        return Dynamics(self.targets.cpu(), self.err.cpu(), self.correct.cpu(),
                        self.margin_sum.cpu().float(), self.correct_num.cpu(), self.loss_epoch.cpu().float(),
                        {"num_classes": self.num_classes, "epochs": int(self.err.shape[0]), **meta})

    def result_records(self) -> Records | None:
        return None if self.records is None else self.records.result()


class _RecordBuffer:
    """Growing CPU buffers for `Records` (preallocated for one pass over every sample per epoch)."""

    def __init__(self, rows: int, num_classes: int):
        import torch

        self.idx = torch.zeros(max(rows, 1), dtype=torch.int32)
        self.output = torch.zeros(max(rows, 1), num_classes, dtype=torch.float16)
        self.meta: list[tuple[int, int, int]] = []  # (epoch, iteration, size) per record
        self.rows = 0

    def add(self, epoch: int, idx, half) -> None:
        import torch

        b = int(idx.shape[0])
        if self.rows + b > self.idx.shape[0]:  # more records than one pass per epoch: grow
            grow = max(self.idx.shape[0], b)
            self.idx = torch.cat([self.idx, torch.zeros(grow, dtype=torch.int32)])
            self.output = torch.cat([self.output, torch.zeros(grow, self.output.shape[1], dtype=torch.float16)])
        iteration = self.meta[-1][1] + 1 if self.meta and self.meta[-1][0] == epoch else 0
        self.idx[self.rows:self.rows + b] = idx.to("cpu", torch.int32)
        self.output[self.rows:self.rows + b] = half.to("cpu")
        self.meta.append((int(epoch), iteration, b))
        self.rows += b

    def state(self) -> dict:
        import torch

        m = torch.tensor(self.meta, dtype=torch.int64).reshape(-1, 3)
        return {"idx": self.idx[:self.rows], "output": self.output[:self.rows], "meta": m}

    def load_state(self, ts: dict) -> None:
        rows = int(ts["idx"].shape[0])
        if rows > self.idx.shape[0]:
            self.idx, self.output = ts["idx"].clone(), ts["output"].clone()
        else:
            self.idx[:rows] = ts["idx"]
            self.output[:rows] = ts["output"]
        self.meta = [tuple(r) for r in ts["meta"].tolist()]
        self.rows = rows

    def result(self) -> Records:
        import torch

        m = torch.tensor(self.meta, dtype=torch.int32).reshape(-1, 3)
        return Records(m[:, 0].contiguous(), m[:, 1].contiguous(), m[:, 2].contiguous(),
                       self.idx[:self.rows].clone(), self.output[:self.rows].clone())
