"""Scores (one function per metric, registered by name) and selection rules (spec sections 3 and 4)."""
from .scores import REGISTRY, get  # noqa: F401
