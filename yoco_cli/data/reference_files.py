"""Write yoco's dynamics and scores in the reference's own pickle layouts (docs/method.md §2.3, §3.10).

Both files are plain `pickle.dump`s of dicts holding torch tensors, as the reference writes
them, so `pickle.load` with only torch installed reads them, the reference's `test.py` and
`generate_importance_score.py` take them as their own, and yoco's `--from-file` readers take
them back (they accept only tensors, arrays and plain containers).

td-*.pickle      {'data-name': str, 'training_dynamics': [record, ...]} with one record per
                 training batch, in order: {'epoch': int, 'iteration': int, 'idx': int64 [b],
                 'output': float16 [b, C] log-softmax}
data-score-*.pickle  {'targets': int32 [N], 'correctness', 'forgetting', 'last_correctness'
                 (int32 [N]), 'accumulated_margin' (float32 [N]), 'last_correct_count' (zeros),
                 'correct_num' (int32 [E]), 'loss_epoch' (float32 [E]), 'entropy', 'loss',
                 'LBPE_0_10' = 'el2n', 'LBPE_t_{t+1}' per chosen epoch, 'LBPE_top{K}' (float32 [N]),
                 'kmeans_{k}' / 'imbalance_kmeans_{k}' (lists of int)}
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ..files import atomic_write

# The reference pickles with Python's default protocol; 4 reads on every Python 3.8+.
PROTOCOL = 4


def td_document(records, data_name: str) -> dict:
    """A `data.dynamics.Records` as the reference's td-pickle dict (each record its own tensors)."""
    out = []
    for epoch, it, idx, output in records.batches():
        out.append({"epoch": int(epoch), "iteration": int(it), "idx": idx.long().clone(),
                    "output": output.half().clone()})
    return {"data-name": data_name, "training_dynamics": out}


def write_pickle(doc: Any, path: Path | str) -> Path:
    """Plain pickle, written atomically (no half-written file at `path` on a crash)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            pickle.dump(doc, f, protocol=PROTOCOL)

    atomic_write(Path(path), write)
    return Path(path)


def score_document(dyn, values: dict, infos: dict, kmeans: dict | None = None) -> dict:
    """One run's scores as the reference's data-score dict.

    `dyn` is the run's `Dynamics` (for correctness, forgetting, correct_num, loss_epoch and the
    single-epoch LBPE_t_{t+1} vectors), `values`/`infos` yoco's scores of that run by metric.
    """
    import torch

    c = dyn.correct
    forgetting = torch.zeros(c.shape[1], dtype=torch.int32)
    if c.shape[0] > 1:
        forgetting = (c[:-1] & ~c[1:]).sum(0, dtype=torch.int32)
    doc: dict[str, Any] = {
        "targets": dyn.targets.to(torch.int32),
        "correctness": c.sum(0, dtype=torch.int32),
        "forgetting": forgetting,
        "last_correctness": c[-1].to(torch.int32) if c.shape[0] else torch.zeros(c.shape[1], dtype=torch.int32),
        "accumulated_margin": dyn.margin_sum.float(),
        "last_correct_count": torch.zeros(c.shape[1], dtype=torch.int32),
        "correct_num": dyn.correct_num.to(torch.int32),
        "loss_epoch": dyn.loss_epoch.float(),
    }
    for name in ("entropy", "loss"):
        if name in values:
            doc[name] = values[name].float()
    if "el2n" in values:
        doc["LBPE_0_10"] = values["el2n"].float()
        doc["el2n"] = doc["LBPE_0_10"]
    if "lbpe" in values:
        info = infos.get("lbpe", {})
        for t in info.get("epochs", []):
            doc[f"LBPE_{t}_{t + 1}"] = dyn.err[t].float().clone()
        doc[f"LBPE_top{info.get('k', 0)}"] = values["lbpe"].float()
    for name, idx in (kmeans or {}).items():
        doc[name] = [int(i) for i in idx]
    return doc


def json_document(values: dict) -> dict:
    """{metric: [score per decoded index]} (floats as JSON numbers)."""
    return {name: [float(v) for v in vec.double().tolist()] for name, vec in values.items()}
