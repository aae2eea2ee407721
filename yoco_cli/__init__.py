"""yoco: You Only Condense Once -- resize condensed datasets to any IPC.

The command line is `yoco`; from Python the same workflow is these functions (yoco_cli/api.py):

    import yoco_cli as yoco
    src = yoco.condense("digits", ipc=10, method="random")
    [one] = yoco.prune(src, to=1, metric="lbpe", balanced=True)
    print(yoco.evaluate(one, repeats=1).best_mean)

Importing this package does not import torch (the functions import it when they run).
"""

from ._version import __version__
from .api import (
    DynamicsResult,
    EvalResult,
    FetchResult,
    ScoreResult,
    SetResult,
    condense,
    dynamics,
    evaluate,
    fetch,
    fetch_hub,
    load_set,
    prune,
    publish,
    report,
    score,
    tune_process,
)

__all__ = [
    "DynamicsResult",
    "EvalResult",
    "FetchResult",
    "ScoreResult",
    "SetResult",
    "__version__",
    "condense",
    "dynamics",
    "evaluate",
    "fetch",
    "fetch_hub",
    "load_set",
    "prune",
    "publish",
    "report",
    "score",
    "tune_process",
]
