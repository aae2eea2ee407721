"""A real two-node Ray cluster on 127.0.0.1 for the tests (head and worker as separate process groups).

Every process of a node shares its launcher's process group (started in a new session), so the
tests stop exactly what they started by group id (never `ray stop`, which stops every Ray process
on the machine, other people's included) and can kill one node mid-sweep.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from typing_extensions import Self  # typing.Self is 3.11+

NODE = Path(__file__).with_name("ray_node.py")
# the driver's own address is 127.0.0.1 too (Ray otherwise picks the machine's outward address);
# fast node-death detection so that a killed node's tasks are retried within seconds
ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
       "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3",
       "RAY_health_check_initial_delay_ms": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, cpus_per_node: int = 1, timeout: float = 90.0):
        self.tmp = tempfile.mkdtemp(prefix="yr", dir="/tmp")  # Ray's socket paths must stay short
        self.env = {**os.environ, **ENV, "RAY_TMPDIR": self.tmp}
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, subprocess.Popen] = {}
        self.cpus, self.timeout = cpus_per_node, timeout

    def _start(self, name: str, *args: str) -> None:
        with open(Path(self.tmp) / f"{name}.log", "w") as log:  # the child keeps its own copy of the descriptor
            p = subprocess.Popen([sys.executable, str(NODE), *args], env=self.env, stdout=subprocess.PIPE,
                                 stderr=log, text=True, start_new_session=True)
        self.nodes[name] = p
        line = p.stdout.readline()  # blocks until the node is up (or its launcher died)
        if not line.startswith("ready"):
            raise RuntimeError(f"ray node {name} did not start: {(Path(self.tmp) / f'{name}.log').read_text()[-2000:]}")

    def __enter__(self) -> Self:
        try:
            self._start("head", "head", str(self.port), str(self.cpus))
            self._start("worker", "worker", self.address, str(self.cpus))
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def pids(self) -> set[int]:
        """Every live process of the cluster's nodes (members of the launchers' process groups)."""
        groups = {p.pid for p in self.nodes.values()}
        ps = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True, check=False)
        out = ps.stdout.split("\n")
        return {int(a) for a, b in (line.split() for line in out if line.strip()) if int(b) in groups}

    def kill(self, name: str) -> None:
        """SIGKILL a whole node at once, as a machine failure would."""
        p = self.nodes.pop(name)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)

    def stop(self) -> None:
        for p in self.nodes.values():
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 15
        for name, p in list(self.nodes.items()):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # whatever of the group is left (workers, agents)
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)
        self.nodes.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def listening(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, local address) of every TCP socket in LISTEN state owned by `pids` (from `ss -ltnpH`)."""
    import re

    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False).stdout
    found = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 6:
            continue
        for pid in map(int, re.findall(r"pid=(\d+)", line)):
            if pid in pids:
                found.append((pid, cols[3]))
    return found


def loopback(addr: str) -> bool:
    host = addr.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "::1", "::ffff:127.0.0.1") or host.startswith("127.")
