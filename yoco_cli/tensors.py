"""Tensor files in the store: safetensors, byte-for-byte deterministic.

safetensors writes its `__metadata__` map in hash order, so a file with several
metadata keys gets a different digest on every run. We keep exactly one key,
"yoco", holding canonical JSON, and the same inputs always give the same bytes.

`load` reads a file, or a `store.Blob`: bytes the store has already checked against their
digest. A blob is parsed in place (each tensor is a view of the one buffer), so what is
used is exactly what was hashed, at no extra memory. `save(..., seal=True)` adds a digest
of the tensors to the metadata, which `load` checks: for files outside the content-addressed
store (resumable checkpoints), whose names carry no digest.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, TypeAlias

from .errors import IntegrityError
from .store.manifest import canonical_json
from .store.store import Blob

Source: TypeAlias = Path | str | Blob  # what `load` reads: a file, or bytes the store has verified

SEAL = "tensors_sha256"
# safetensors dtype names -> torch dtype names (resolved lazily: no torch at import time)
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
           "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def save(path: Path | str, tensors: dict[str, Any], meta: dict | None = None, seal: bool = False) -> Path:
    """Write tensors and our metadata. The OS refusing the write (a full disk, say) surfaces as an
    OSError with its errno, whichever layer (Python or safetensors' Rust code) met it."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = dict(meta or {})
    if seal:
        meta[SEAL] = _tensor_digest(clean)
    try:
        save_file(clean, str(path), metadata={"yoco": canonical_json(meta)})
    except SafetensorError as e:
        raise _os_error(e, path) from None
    return Path(path)


def _os_error(e: Exception, path) -> OSError:
    """safetensors reports I/O failures as `SafetensorError: ... (os error 28)`: give back the errno."""
    m = re.search(r"os error (\d+)|Os \{ code: (\d+)", str(e))
    if m:
        code = int(m.group(1) or m.group(2))
        return OSError(code, os.strerror(code), str(path))
    return OSError(f"cannot write {path} ({e})")


def _tensor_digest(ts: dict[str, Any]) -> str:
    """A checkpoint's seal: its tensor names, then `digest` of the tensors in name order."""
    import hashlib

    names = sorted(ts)
    return hashlib.sha256(("|".join(names) + "|" + digest(*(ts[k] for k in names))).encode()).hexdigest()


def load(source: Source, device: str = "cpu") -> tuple[dict[str, Any], dict]:
    """Read tensors and our metadata from a file or a verified `store.Blob`. A file that is not
    safetensors, or whose seal does not match its tensors, is an integrity error."""
    if isinstance(source, Blob):
        tensors, meta = _parse(source)
    else:
        tensors, meta = _open(source, device)
    if SEAL in meta:
        want = meta.pop(SEAL)
        if _tensor_digest(tensors) != want:
            raise IntegrityError(f"{source} is damaged: its tensors do not match the digest it was sealed with")
    if device != "cpu" and isinstance(source, Blob):
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta


def _open(path, device: str) -> tuple[dict[str, Any], dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            meta_raw = (f.metadata() or {}).get("yoco", "{}")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  safe_open cannot be iterated
    except (SafetensorError, OSError, ValueError) as e:
        raise IntegrityError(f"{path} is not a readable safetensors file ({e})") from None
    return tensors, json.loads(meta_raw)


def _parse(blob: Blob) -> tuple[dict[str, Any], dict]:
    """safetensors layout: u64 little-endian header length, JSON header, then the tensors' bytes.
    Every tensor becomes a view of the blob's buffer (checked to lie inside it)."""
    import torch

    buf = blob.data
    bad = lambda why: IntegrityError(f"{blob} is not a readable safetensors file ({why})")
    if len(buf) < 8:
        raise bad("shorter than its header")
    n = int.from_bytes(buf[:8], "little")
    if n > len(buf) - 8:
        raise bad(f"header of {n} bytes in a {len(buf)}-byte file")
    try:
        header = json.loads(bytes(buf[8:8 + n]))
    except ValueError as e:
        raise bad(f"header: {e}") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    raw_meta = header.pop("__metadata__", None) or {}
    base, tensors = 8 + n, {}
    for name, info in header.items():
        try:
            dtype = getattr(torch, _DTYPES[info["dtype"]])
            shape = [int(d) for d in info["shape"]]
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise bad(f"tensor {name!r} has a header entry yoco cannot read") from None
        count, itemsize = math.prod(shape), dtype.itemsize
        if min(shape, default=1) < 0 or end - start != count * itemsize or start < 0 or base + end > len(buf):
            raise bad(f"tensor {name!r} does not fit the file")
        if count == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            tensors[name] = torch.frombuffer(buf, dtype=dtype, count=count, offset=base + start).view(shape)
    try:
        meta = json.loads(raw_meta.get("yoco", "{}"))
    except (ValueError, AttributeError) as e:
        raise bad(f"metadata: {e}") from None
    return tensors, meta


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
