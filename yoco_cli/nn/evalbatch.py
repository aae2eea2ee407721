"""The batch size of eval-mode passes (test accuracy, entropy/loss, embeddings), chosen by measurement.

The best batch depends on the device and on how busy it is: on the 2-core dev CPU batch 128 was
fastest when quiet, and under load it cost 1.5x the CPU of batch 512 (torch's thread pool spins at
every barrier, and a bigger batch has fewer of them). So the table below is only where a process
starts: the first pass of each model shape on a device is also a short probe. It runs the first
rows with the table's batch (those outputs are the real ones), then the same rows with each
candidate size, timed in CPU seconds (GPU: wall seconds after a sync), and keeps the cheapest,
for the rest of that pass and the rest of the process.

Results never depend on the probe. A candidate whose outputs on the probe rows differ by a single
bit from the table batch's is not eligible (on the dev CPU every ConvNet batch >= 32 is bit-exact;
batch 1 is not, and GPU kernels can differ by shape), and the rows outside whole batches of the
chosen size are run in exactly the table's batches, so every row is computed either as with the
table batch or in a batch shape the probe showed to give the same bits.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from typing import Any

TABLE = {"cpu": 128, "cuda": 1024}  # the former constants: 128 was fastest on the quiet 2-core dev CPU
CANDIDATES = {"cpu": (64, 128, 256, 512), "cuda": (256, 512, 1024, 2048, 4096)}
MARGIN = 0.95  # a candidate must be 5% cheaper than the table batch to replace it (probe noise)
_chosen: dict[tuple, int] = {}


def table_batch(device) -> int:
    return TABLE["cpu"] if device.type == "cpu" else TABLE["cuda"]


def chosen(device, key: Hashable) -> int | None:
    """The batch the probe picked for `key` on `device` in this process (None: not probed yet)."""
    return _chosen.get(_slot(device, key))


def _slot(device, key: Hashable) -> tuple:
    import torch

    return (str(device), torch.get_num_threads() if device.type == "cpu" else 0, key)


def run(forward: Callable[[int, int], Any], n: int, device, key: Hashable | None = None,
        batch_size: int = 0) -> list:
    """[forward(start, stop) for consecutive eval batches covering rows [0, n)].

    `forward` returns a tensor or a tuple/list of tensors for its rows. `batch_size` > 0 is used as
    given; otherwise the probe's choice for `key` (a model shape), probing on first use.
    """
    import torch

    device = torch.device(device)
    if batch_size:
        return [forward(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    base = table_batch(device)
    slot = _slot(device, key) if key is not None else None
    if slot is not None and slot not in _chosen:
        probed = _probe(forward, n, device, base)
        if probed is not None:
            _chosen[slot], head, m = probed
            return head + _aligned(forward, m, n, _chosen[slot], base)
    return _aligned(forward, 0, n, _chosen.get(slot, base) if slot is not None else base, base)


def _aligned(forward, start: int, n: int, bs: int, base: int) -> list:
    """Whole batches of `bs` on the grid of lcm(bs, base) from `start`; the rest in batches of `base`."""
    grid = math.lcm(bs, base)
    whole = start + (n - start) // grid * grid
    outs = [forward(s, s + bs) for s in range(start, whole, bs)]
    return outs + [forward(s, min(s + base, n)) for s in range(whole, n, base)]


def _probe(forward, n: int, device, base: int):
    """(chosen batch, outputs of rows [0, m), m) after timing the candidates on rows [0, m); None if n is too small."""
    sizes = [c for c in CANDIDATES["cpu" if device.type == "cpu" else "cuda"] if c != base]
    m = max([math.lcm(c, base) for c in sizes if math.lcm(c, base) <= n], default=0)
    sizes = [c for c in sizes if m and m % math.lcm(c, base) == 0]
    if not sizes:
        return None
    head, base_cost = _timed(forward, m, base, device)
    best, best_cost = base, base_cost * MARGIN
    for c in sizes:
        try:
            outs, cost = _timed(forward, m, c, device)
        except RuntimeError as e:  # a size the GPU has no memory for is simply not a candidate
            if device.type != "cuda" or "out of memory" not in str(e):
                raise
            import torch

            torch.cuda.empty_cache()
            continue
        if cost < best_cost and _same(outs, head):
            best, best_cost = c, cost
    return best, head, m


def _timed(forward, m: int, bs: int, device) -> tuple[list, float]:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        t = time.perf_counter()
        outs = [forward(s, s + bs) for s in range(0, m, bs)]
        torch.cuda.synchronize(device)
        return outs, time.perf_counter() - t
    t = time.process_time()  # what the pass costs the machine, whatever else runs on it
    outs = [forward(s, s + bs) for s in range(0, m, bs)]
    return outs, time.process_time() - t


def _parts(outs: list) -> list:
    import torch

    if isinstance(outs[0], torch.Tensor):
        return [torch.cat(outs)]
    return [torch.cat([o[i] for o in outs]) for i in range(len(outs[0]))]


def _same(a: list, b: list) -> bool:
    """Bit for bit (NaN where NaN)."""
    import torch

    pa, pb = _parts(a), _parts(b)
    if len(pa) != len(pb):
        return False
    for x, y in zip(pa, pb):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.is_floating_point():
            if not (torch.equal(x.isnan(), y.isnan()) and torch.equal(x.masked_fill(x.isnan(), 0), y.masked_fill(y.isnan(), 0))):
                return False
        elif not torch.equal(x, y):
            return False
    return True
