"""`--executor ray` on a real two-node Ray cluster on 127.0.0.1 (a head and a worker node, each its own
process group): the digits pipeline's artifacts equal the local executor's digest for digest, a
worker node killed mid-sweep changes nothing, a second run sends no task, and every process of the
cluster and the driver listens on the loopback address only. Skipped without Ray installed
(`pip install "yoco-cli[ray]"`; `.ci/run` installs it)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray")

from raycluster import Cluster, listening, loopback

ARGS = ["pipeline", "digits", "--method", "random", "--to", "1", "2", "--metrics", "lbpe", "--metrics", "random",
        "--seeds", "2", "--dynamics-epochs", "4", "--eval-epochs", "40"]
STAGES = ("condense", "dynamics-run", "prune", "eval-run")


def _yoco(home, *args, env=None, **kw):
    cmd = [sys.executable, "-m", "yoco_cli", "--json", *map(str, args)]
    return subprocess.Popen(cmd, env={**os.environ, **(env or {}), "YOCO_HOME": str(home), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _finish(p, timeout=240) -> dict:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-3000:]
    return json.loads(out)


def _artifacts(home) -> dict:
    """stage -> {run key: {output: digest}} of every run in a store."""
    out = {}
    for stage in STAGES:
        runs = {}
        for path in sorted((home / "runs" / stage).glob("*.json")):
            m = json.loads(path.read_text())
            runs[m["key"]] = {name: o["digest"] for name, o in m["outputs"].items()}
        out[stage] = runs
    return out


def _eval_runs(home) -> int:
    d = home / "runs" / "eval-run"
    return len(list(d.glob("*.json"))) if d.is_dir() else 0


@pytest.mark.timeout(280)
def test_ray_cluster_equals_local_survives_a_dead_node_and_resends_nothing(tmp_path):
    local_home, ray_home = tmp_path / "local", tmp_path / "ray"
    local = _yoco(local_home, *ARGS, "--executor", "local")  # runs while the cluster starts
    with Cluster(cpus_per_node=1) as cluster:
        env = {**cluster.env, "YOCO_EXECUTOR": "", "YOCO_RAY_ADDRESS": ""}
        driver = _yoco(ray_home, *ARGS, "--executor", "ray", "--address", cluster.address, env=env)
        # wait until the evaluation sweep is under way, then kill the worker node outright
        deadline = time.monotonic() + 200
        while _eval_runs(ray_home) < 2 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        sockets = listening(cluster.pids() | {driver.pid})
        at_kill = _eval_runs(ray_home)
        cluster.kill("worker")
        got = _finish(driver)
        assert at_kill < 9 == len(got["evals"])  # the kill came mid-sweep, and every run still finished
        assert sockets and all(loopback(addr) for _, addr in sockets), sockets
        assert any(pid == driver.pid for pid, _ in sockets)  # the driver's own servers were checked too
        assert got["executor"].startswith("ray (2 nodes") and len(got["where"]) >= 2, got["where"]

        want = _finish(local)
        assert got["tables"] == want["tables"] and got["evals"] == want["evals"]
        assert _artifacts(ray_home) == _artifacts(local_home)  # artifact digest for artifact digest

        again = _finish(_yoco(ray_home, *ARGS, "--executor", "ray", "--address", cluster.address, env=env))
        assert again["sent"] == 0 and again["trained_now"] == 0 and again["tables"] == want["tables"]
    assert not cluster.pids()  # everything the test started is gone
