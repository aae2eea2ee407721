"""Scores (one function per metric, registered by name) and selection rules (docs/method.md §3, §4)."""
from .scores import REGISTRY, get  # noqa: F401
