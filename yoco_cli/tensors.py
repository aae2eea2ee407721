"""Tensor files in the store: safetensors, byte-for-byte deterministic.

safetensors writes its `__metadata__` map in hash order, so a file with several
metadata keys gets a different digest on every run. We keep exactly one key,
"yoco", holding canonical JSON, and the same inputs always give the same bytes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import IntegrityError
from .store.manifest import canonical_json


def save(path: Path | str, tensors: dict[str, Any], meta: dict | None = None) -> Path:
    from safetensors.torch import save_file

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(clean, str(path), metadata={"yoco": canonical_json(meta or {})})
    return Path(path)


def load(path: Path | str, device: str = "cpu") -> tuple[dict[str, Any], dict]:
    """Read tensors and our metadata; a file that is not safetensors is an integrity error."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            meta_raw = (f.metadata() or {}).get("yoco", "{}")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise IntegrityError(f"{path} is not a readable safetensors file ({e})") from None
    return tensors, json.loads(meta_raw)


def digest(*tensors: Any) -> str:
    """sha256 over tensors' shape, dtype and bytes, in order: the one name of in-memory data (a
    real split) in cache keys. Files are named by `store.sha256_file` of their bytes instead."""
    import hashlib

    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()
