"""Shared fixtures: every test gets its own empty yoco home (as simonw's tools do)."""
from __future__ import annotations

import json as _json
import os
import sys

import pytest


@pytest.fixture(autouse=True)
def yoco_home(tmp_path, monkeypatch):
    home = tmp_path / "yoco-home"
    monkeypatch.setenv("YOCO_HOME", str(home))
    monkeypatch.setenv("YOCO_OFFLINE", "1")  # no test may touch the internet
    monkeypatch.delenv("YOCO_REGISTRY", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    from yoco_cli.cli import common

    common.state.home = None
    common.state.store = None
    return home


@pytest.fixture(autouse=True)
def _thread_policy():
    """A CLI call adopts a thread policy for its process (yoco_cli/nn/device.py); in the test process
    it must not leak into the next test's library calls."""
    yield
    from yoco_cli.nn import device

    if device._policy is not None:
        device._policy = None
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    except ImportError:
        pass


class Result:
    def __init__(self, r):
        self.exit_code = r.exit_code
        self.stdout = r.stdout
        self.stderr = r.stderr
        self.exception = r.exception

    def json(self):
        return _json.loads(self.stdout)


def invoke_cli(*args, input=None) -> Result:
    """Run `yoco ARGS...` in this process, as the `cli` fixture does."""
    from typer.testing import CliRunner

    from yoco_cli.cli.app import app

    argv = [str(a) for a in args]
    saved = sys.argv
    sys.argv = ["yoco", *argv]  # what a real run records as its provenance (and names in hints)
    try:
        r = CliRunner().invoke(app, argv, input=input, catch_exceptions=True)
    finally:
        sys.argv = saved
    return Result(r)


@pytest.fixture
def cli():
    """cli("prune", "--to", "1") -> Result with exit_code, stdout, stderr, json()."""
    return invoke_cli


@pytest.fixture
def store(yoco_home):
    from yoco_cli.store import Store

    return Store(yoco_home).ensure()
