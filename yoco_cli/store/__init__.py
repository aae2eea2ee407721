"""Content-addressed cache shared by every stage. Knows nothing about torch or Typer."""
from .manifest import Manifest, canonical_json, run_key
from .store import Store, default_home
from .runner import StageResult, run_cached

__all__ = ["Manifest", "Store", "StageResult", "canonical_json", "default_home", "run_cached", "run_key"]
