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
    """stage -> {run key: {output: digest}} of every run in a store (manifests read and verified)."""
    from yoco_cli.store import Store

    store = Store(home, shared=[])
    return {stage: {m.key: {name: o["digest"] for name, o in m.outputs.items()} for m in store.all_runs(stage)}
            for stage in STAGES}


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


_PRIVATE = """
import sys
from yoco_cli.executors.ray_cluster import RayExecutor
ex = RayExecutor(None, 1)
import ray

@ray.remote
def where():
    return 1

ray.get(where.remote())  # a worker process is up too
print("ready", flush=True)
sys.stdin.read()  # until the test is done
"""


def _session(sid: int) -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True, check=False).stdout
    return {int(a) for a, b in (line.split() for line in out.splitlines() if line.strip()) if int(b) == sid}


@pytest.mark.timeout(180)
def test_the_private_cluster_listens_on_loopback_only(tmp_path):
    """Issue 23, case 8: `--executor ray` without --address started Ray's default one-machine cluster,
    whose processes listen on the machine's outward address (anyone who can reach them can run code).
    Every process of yoco's private cluster (GCS, raylet, agents, workers) and the driver now listens on
    127.0.0.1 only."""
    import signal
    import tempfile

    tmp = tempfile.mkdtemp(prefix="yp", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    p = subprocess.Popen([sys.executable, "-c", _PRIVATE], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("ready"), p.stderr.read()[-3000:] if p.poll() is not None else line
        sockets = listening(_session(p.pid))
    finally:
        p.stdin.close()
        for pid in _session(p.pid):  # the driver, the cluster and its workers: everything this test started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait(timeout=30)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    names = {pid for pid, _ in sockets}
    assert len(names) >= 3 and p.pid in names, sockets  # GCS, raylet and the driver at least
    assert all(loopback(addr) for _, addr in sockets), sockets


def test_joining_a_cluster_on_the_network_without_authentication_warns_once(monkeypatch):
    from yoco_cli.executors import ray_cluster as rc

    monkeypatch.setattr(rc, "_warned", set())
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.warns(rc.RayExposureWarning, match="10.0.0.5:6379 is reached over the network without token"):
        rc._warn_if_exposed("10.0.0.5:6379")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, none for loopback, auto or Ray's own auth
        rc._warn_if_exposed("10.0.0.5:6379")
        for address in ("127.0.0.1:6379", "localhost:6379", "[::1]:6379", "auto", None):
            rc._warn_if_exposed(address)
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        rc._warn_if_exposed("ray://head.example:10001")
    monkeypatch.delenv("RAY_AUTH_MODE")
    with pytest.warns(rc.RayExposureWarning):
        rc._warn_if_exposed("ray://head.example:10001")
