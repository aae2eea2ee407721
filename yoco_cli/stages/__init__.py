"""Stages: params + run function each, executed through the store (see store/runner.py)."""
