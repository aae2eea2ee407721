"""Missing values are asked for on a terminal (a real pseudo-terminal here) and are usage errors otherwise."""
from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time

import pytest


def _two_ipc10_sets(cli):
    for seed in ("0", "1"):
        r = cli("condense", "digits", "--method", "random", "--ipc", "10", "--seed", seed,
                "--name", f"digits/random-s{seed}/ipc10")
        assert r.exit_code == 0, r.stderr


def run_in_pty(argv: list[str], env: dict, answers: list[tuple[str, str]], timeout: float = 120.0):
    """Run argv with stdin/stdout/stderr on a pty; answer each prompt (substring -> reply) in turn."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execvpe(argv[0], argv, env)
    buf, pending, deadline = b"", list(answers), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            buf += data
            if pending and pending[0][0].encode() in buf.replace(b"\r\n", b"\n"):
                os.write(fd, (pending.pop(0)[1] + "\n").encode())
        else:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"timed out; output so far:\n{buf.decode(errors='replace')}")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), buf.decode(errors="replace"), pending


def test_prune_asks_for_the_set_and_the_targets_on_a_terminal(cli, yoco_home):
    _two_ipc10_sets(cli)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["YOCO_HOME"] = str(yoco_home)
    argv = [sys.executable, "-m", "yoco_cli", "prune", "--from", "10", "--metric", "random", "--json"]
    code, text, unanswered = run_in_pty(argv, env, [("which set (1-2)", "2"), ("target IPC(s), from 1 to 9", "1 2")])
    assert unanswered == [], text
    assert "digits/random-s0/ipc10" in text and "digits/random-s1/ipc10" in text  # the choices were shown
    assert code == 0, text
    refs = sorted(p.relative_to(yoco_home / "refs").as_posix() for p in (yoco_home / "refs").rglob("*.json"))
    assert "digits/random-s1/ipc10@random-hard-imbalanced-ipc1.json" in refs
    assert "digits/random-s1/ipc10@random-hard-imbalanced-ipc2.json" in refs


def test_without_a_terminal_missing_values_are_usage_errors(cli):
    _two_ipc10_sets(cli)
    r = cli("prune", "--from", "10", "--to", "1", "--metric", "random")
    assert r.exit_code == 2 and "2 stored sets" in r.stderr and "name one" in r.stderr
    r = cli("prune", "digits/random-s0/ipc10", "--metric", "random")
    assert r.exit_code == 2 and "--to" in r.stderr
