"""Stage manifests: the commit point of every stage run, and the key that names it.

key = sha256(canonical JSON of {stage, stage_version, params, inputs}), as in DVC's
run-cache: change one parameter or one input digest and exactly what depends on it is
recomputed. Provenance (versions, timings, argv) is recorded but never part of the key.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any


def _normalise(value: Any) -> Any:
    """Make params JSON-stable: tuples become lists, floats must be finite, keys strings."""
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"non-finite float in parameters: {value}")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"parameter value of type {type(value).__name__} is not JSON-serialisable")


def canonical_json(value: Any) -> str:
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


STORE_FORMAT = 2  # manifests are objects; runs/<stage>/<key>.json is a commit record naming one


def commit_record(m: Manifest, sealed: str) -> str:
    """What runs/<stage>/<key>.json holds: the digest of the manifest object (the manifest itself is
    content-addressed, so an edit to it is a digest mismatch, found as a damaged object's is)."""
    return json.dumps({"format": STORE_FORMAT, "stage": m.stage, "key": m.key, "manifest": sealed},
                      indent=2, sort_keys=True) + "\n"


def manifest_digest_of(record: dict) -> str | None:
    """The manifest digest a commit record names; None for a legacy manifest (written before sealing)."""
    if not isinstance(record, dict):
        raise TypeError("not a JSON object")
    if "manifest" not in record:
        return None
    digest = record["manifest"]
    if not isinstance(digest, str) or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError("not a manifest digest")
    return digest


def legacy_key_matches(m: Manifest) -> bool:
    """An unsealed manifest's only check: its key is still the hash of its parameters and inputs."""
    try:
        return run_key(m.stage, m.stage_version, m.params, m.inputs) == m.key
    except (TypeError, ValueError):
        return False


def run_key(stage: str, version: int, params: dict, inputs: dict[str, str]) -> str:
    doc = {"stage": stage, "stage_version": version, "params": params, "inputs": inputs}
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


@dataclass
class Manifest:
    stage: str
    stage_version: int
    key: str
    params: dict
    inputs: dict[str, str]
    outputs: dict[str, dict]  # name -> {"digest": hex, "size": int}
    meta: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.key[:12]

    def digest(self, name: str) -> str:
        return self.outputs[name]["digest"]

    @property
    def size(self) -> int:
        return sum(int(o.get("size", 0)) for o in self.outputs.values())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        doc = json.loads(text)
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})
