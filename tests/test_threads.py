"""The thread policy: --threads / YOCO_THREADS / OMP_NUM_THREADS / auto, per workload."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from yoco_cli.errors import UsageError
from yoco_cli.nn import device as D


@pytest.fixture(autouse=True)
def _restore_policy(monkeypatch):
    import torch

    old_policy, old_threads = D._policy, torch.get_num_threads()
    for var in ("YOCO_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    yield
    D._policy = old_policy
    torch.set_num_threads(old_threads)


def test_step_macs_matches_hand_count():
    # ConvNet-2 width 64 on 8x8x1: 8*8*1*64*9 + 4*4*64*64*9 multiply-adds per image, x3 for fwd+bwd
    assert D.step_macs(1, 8, 64, 2, 1) == 3 * (8 * 8 * 64 * 9 + 4 * 4 * 64 * 64 * 9)
    spec = {"name": "convnet", "channels": 3, "image_size": 32, "options": {"width": 128, "depth": 3}}
    assert D.model_step_macs(spec, 64) == D.step_macs(3, 32, 128, 3, 64)


def test_auto_gives_small_work_one_thread_and_large_work_the_free_cores(monkeypatch):
    monkeypatch.setattr(D, "free_cores", lambda: 7)
    policy = D.configure_threads(None)
    assert policy.source == "auto"
    digits = D.step_macs(1, 8, 64, 2, 64)  # the digits presets' training step
    cifar = D.step_macs(3, 32, 128, 3, 64)  # the paper's ConvNet-3 on CIFAR-10
    assert digits < D.MULTI_THREAD_MACS < cifar
    assert policy.choose(digits) == 1
    assert policy.choose(cifar) == 7
    assert policy.choose(cifar, D.resolve_device("cpu")) == 7


def test_precedence_option_then_yoco_threads_then_omp(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert (D.configure_threads(None).fixed, D._policy.source) == (3, "OMP_NUM_THREADS")
    monkeypatch.setenv("YOCO_THREADS", "2")
    assert (D.configure_threads(None).fixed, D._policy.source) == (2, "YOCO_THREADS")
    assert (D.configure_threads("1").fixed, D._policy.source) == (1, "--threads")
    assert D.configure_threads("auto").fixed is None  # an explicit auto overrides the environment


def test_use_threads_applies_a_fixed_count_and_leaves_torch_alone_without_a_policy():
    import torch

    D._policy = None
    torch.set_num_threads(2)
    assert D.use_threads(1.0) == 2  # no policy: a library caller keeps its own setting
    D.configure_threads("1")
    assert D.use_threads(1e12) == 1 and torch.get_num_threads() == 1


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_bad_counts_are_usage_errors_naming_the_setting(bad, monkeypatch):
    with pytest.raises(UsageError, match=r"--threads .* is not a thread count"):
        D.configure_threads(bad)
    monkeypatch.setenv("YOCO_THREADS", bad)
    with pytest.raises(UsageError, match=r"YOCO_THREADS .* is not a thread count"):
        D.configure_threads(None)


def test_cli_option_is_checked_and_recorded(cli):
    r = cli("--threads", "zero", "cache", "dir")
    assert r.exit_code == 2
    assert "--threads 'zero' is not a thread count" in r.stderr and "--threads 1" in r.stderr
    assert cli("condense", "digits", "--ipc", "2", "--method", "random").exit_code == 0
    r = cli("--threads", "1", "--json", "dynamics", "digits/random/ipc2", "--seeds", "1", "--epochs", "1")
    assert r.exit_code == 0, r.stderr
    from yoco_cli.store import Store

    store = Store(None)
    run = store.all_runs("dynamics-run")[0]
    assert run.meta["device"] == "cpu (1 thread)"


def test_cli_sets_passive_waiting_before_torch_loads_unless_the_user_chose():
    code = ("import os, sys; from yoco_cli.nn.device import configure_threads; configure_threads(None); "
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "False"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ACTIVE", "False"]
