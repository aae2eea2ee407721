"""A shared read-only store (issue 23, case 6): read-only commands on a read-only home, and YOCO_SHARED
layering read-only stores under a writable home, as git's alternates do.

Read-only is real here: the store is bind-mounted read-only in a private user and mount namespace
(`unshare -rm`), so the checks hold for root too; without unshare those tests are skipped.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

SET = "digits/random/ipc2"
FAST = ["--dynamics-epochs", "3", "--dynamics-seeds", "1"]
PRUNE = ["prune", "--from", "2", "--to", "1", "--metric", "lbpe", "--balanced", *FAST]
PRUNED = f"{SET}@lbpe-easy-balanced-ipc1"


def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False)
    return r.returncode == 0


needs_ro = pytest.mark.skipif(not _can_unshare(), reason="needs `unshare -rm` to mount a folder read-only")


def ok(r):
    assert r.exit_code == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One home with a set, its dynamics and scores, a pruned set and an evaluation of it."""
    from conftest import invoke_cli

    from yoco_cli.cli import common

    home = tmp_path_factory.mktemp("shared") / "home"
    old = os.environ.get("YOCO_HOME")
    os.environ["YOCO_HOME"] = str(home)
    common.state.home, common.state.store = None, None
    try:
        ok(invoke_cli("condense", "digits", "--ipc", "2", "--method", "random"))
        ok(invoke_cli(*PRUNE))
        ok(invoke_cli("eval", PRUNED, "--epochs", "2", "--repeats", "1"))
    finally:
        os.environ["YOCO_HOME"] = old or ""
        common.state.home, common.state.store = None, None
    return home


def snapshot(root) -> dict:
    """Every path under root with its mode, size, mtime and content digest."""
    out = {}
    for here, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(here, name)
            st = os.lstat(p)
            with open(p, "rb") if name in files else open(os.devnull, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


_RUNNER = """
import json, sys
from typer.testing import CliRunner
from yoco_cli.cli.app import app
results = []
for argv in json.loads(sys.argv[1]):
    sys.argv = ["yoco", *argv]
    r = CliRunner().invoke(app, argv, catch_exceptions=True)
    results.append({"argv": argv, "code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr})
print(json.dumps(results))
"""


def run_with_read_only(folder, mount, commands: list[list[str]], env: dict) -> list[dict]:
    """Run yoco commands (in one process) with `folder` bind-mounted read-only at `mount`."""
    mount.mkdir(exist_ok=True)
    script = (f'mount --bind "{folder}" "{mount}" && mount -o remount,ro,bind "{mount}" && '
              f'exec "{sys.executable}" -c "$RUNNER" "$COMMANDS"')
    env = {**os.environ, **env, "RUNNER": _RUNNER, "COMMANDS": json.dumps(commands), "OMP_NUM_THREADS": "1"}
    p = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, capture_output=True, text=True,
                       check=False, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@needs_ro
def test_read_only_commands_work_on_a_read_only_home(made, tmp_path):
    """Issue 23, case 6: on a read-only home `cache ls/verify/info`, `show`, `report`, `export`,
    `fetch --list` and `gc --dry-run` all exited 2 "not writable". They only read: now they work, and
    a command that writes still says the home is not writable (exit 2)."""
    home = tmp_path / "home"
    shutil.copytree(made, home)
    before = snapshot(home)
    ro = tmp_path / "ro"
    out = tmp_path / "out"
    out.mkdir()
    commands = [["cache", "ls"], ["cache", "verify"], ["cache", "info", PRUNED], ["show", PRUNED], ["report"],
                ["export", PRUNED, str(out / "set.pt")], ["fetch", "--list"], ["cache", "gc", "--dry-run"],
                ["condense", "digits", "--ipc", "1", "--method", "random"]]
    results = run_with_read_only(home, ro, commands, {"YOCO_HOME": str(ro)})
    for r in results[:-1]:
        assert r["code"] == 0, r
    assert PRUNED in results[0]["stdout"] and (out / "set.pt").is_file()
    assert results[-1]["code"] == 2 and "not writable" in results[-1]["stderr"], results[-1]
    assert snapshot(home) == before


@needs_ro
def test_a_shared_store_serves_prune_and_report_with_nothing_trained_and_nothing_written_to_it(made, tmp_path):
    """The acceptance case: a store made by one home, mounted read-only as YOCO_SHARED under an empty
    home, serves the prune (and `yoco report`) with nothing trained; what is new (names) goes to the
    new home; gc of the new home touches nothing of the shared store."""
    mine = tmp_path / "mine"
    ro = tmp_path / "ro"
    before = snapshot(made)
    commands = [["--json", *PRUNE], ["--json", "report"], ["cache", "gc"], ["cache", "verify"], ["cache", "ls"]]
    results = run_with_read_only(made, ro, commands, {"YOCO_HOME": str(mine), "YOCO_SHARED": str(ro)})
    for r in results:
        assert r["code"] == 0, r
    prune = json.loads(results[0]["stdout"])
    assert all(row["cached"] for row in prune["results"]), prune
    (table,) = json.loads(results[1]["stdout"])  # the shared store's evaluation, in the paper's shape
    assert table["source"] == SET and table["rows"][0][0] == "YOCO" and table["rows"][0][1][0]["n"] == 1
    assert snapshot(made) == before
    runs = list((mine / "runs").rglob("*.json")) if (mine / "runs").exists() else []
    assert runs == [], runs  # nothing computed: every run came from the shared store
    assert (mine / "refs" / f"{PRUNED}.json").is_file()  # the name the command gives is the new home's


def test_results_go_to_the_home_and_shared_objects_are_verified_on_read(made, tmp_path, monkeypatch, cli):
    """Lookups fall through to the shared store, verified on read: a damaged shared object is exit 3
    and left in place (never moved); a run the home lacks is computed into the home."""
    from yoco_cli.cli import common
    from yoco_cli.store import Store

    shared = tmp_path / "shared"
    shutil.copytree(made, shared)
    mine = tmp_path / "mine"
    monkeypatch.setenv("YOCO_HOME", str(mine))
    monkeypatch.setenv("YOCO_SHARED", str(shared))
    common.state.home, common.state.store = None, None
    store = Store(mine)
    m = store.resolve(PRUNED)
    assert store.load_run(m.stage, m.key) is not None and not store.manifest_path(m.stage, m.key).exists()
    ok(cli("eval", PRUNED, "--epochs", "1", "--repeats", "1"))  # a new result: into the home
    assert list((mine / "runs" / "eval").glob("*.json")) and not list((shared / "runs" / "eval").glob("*.json"))[1:]
    obj = Store(shared).object_path(m.digest("set"))
    obj.chmod(0o644)
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 1
    obj.write_bytes(bytes(data))
    r = cli("show", PRUNED)
    assert r.exit_code == 3 and "shared store" in r.stderr and "left in place" in r.stderr, r.stderr
    assert obj.exists() and not (shared / "quarantine").exists()
    r = cli("cache", "rm", PRUNED)
    assert r.exit_code == 2 and "shared store" in r.stderr, r.stderr


def test_the_shared_option_names_a_shared_store_on_the_command_line(made, cli, monkeypatch):
    """`--shared PATH` (repeatable) layers a store as YOCO_SHARED does, and overrides it."""
    monkeypatch.delenv("YOCO_SHARED", raising=False)
    assert cli("cache", "info", PRUNED).exit_code == 2  # the empty home alone
    r = ok(cli("--shared", made, "--json", "cache", "info", PRUNED))
    assert r.json()["stage"] == "prune"
    monkeypatch.setenv("YOCO_SHARED", "/nonexistent")
    assert cli("--shared", made, "--shared", "/also/nonexistent", "show", PRUNED).exit_code == 0
