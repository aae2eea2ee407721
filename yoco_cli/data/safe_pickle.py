"""Read the reference's pickles (dynamics `td-*.pickle`, `data-score-*.pickle`) without running code.

A pickle names the functions it calls to rebuild objects; we allow only the handful that
rebuild torch tensors, numpy arrays and plain containers. Tensor storages in a plain
pickle arrive as `torch.storage._load_from_bytes(b)`, which would call an unrestricted
`torch.load`; we route those bytes through `torch.load(weights_only=True)` instead.
Anything else (os.system, builtins.eval, arbitrary classes) is refused with exit 3.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, UsageError


def _load_storage_bytes(b: bytes):
    import torch

    return torch.load(io.BytesIO(b), weights_only=True)


def _allowed() -> dict[tuple[str, str], Any]:
    import collections

    import numpy as np
    import torch
    import torch._utils

    allow: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch", "Size"): torch.Size,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allow[(mod, "_reconstruct")] = np.core.multiarray._reconstruct if hasattr(np, "core") else None
        allow[(mod, "scalar")] = np.core.multiarray.scalar if hasattr(np, "core") else None
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool_"):
        allow[("torch", name.rstrip("_"))] = getattr(torch, name.rstrip("_"), None)
    for name in ("FloatStorage", "HalfStorage", "LongStorage", "IntStorage", "ByteStorage", "BoolStorage",
                 "DoubleStorage"):
        allow[("torch", name)] = getattr(torch, name, None)
    return {k: v for k, v in allow.items() if v is not None}


class _Restricted(pickle.Unpickler):
    def __init__(self, f, allow):
        super().__init__(f)
        self._allow = allow

    def find_class(self, module: str, name: str):
        try:
            return self._allow[(module, name)]
        except KeyError:
            raise IntegrityError(
                f"the pickle wants to call {module}.{name}, which yoco refuses to run",
                "only tensors, arrays and plain containers are read from reference pickles",
            ) from None


def load(path: Path | str) -> Any:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p} does not exist")
    if p.is_dir():
        raise UsageError(f"{p} is a directory, not a pickle file")
    import warnings

    with open(p, "rb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy.core deprecation shims
        try:
            return _Restricted(f, _allowed()).load()
        except IntegrityError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
            raise IntegrityError(f"{p} is not a readable pickle ({type(e).__name__}: {e})") from None
