"""The package's version: a leaf that the store, remote and executors import without loading the API."""

__version__ = "0.1.0"
