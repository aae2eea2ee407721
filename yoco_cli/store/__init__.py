"""Content-addressed cache shared by every stage. Knows nothing about torch or Typer."""
from .manifest import Manifest, canonical_json, run_key
from .runner import StageResult, run_cached
from .store import Store, default_home

__all__ = ["Manifest", "StageResult", "Store", "canonical_json", "default_home", "run_cached", "run_key"]
