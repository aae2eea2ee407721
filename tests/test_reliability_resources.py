"""Reliability: the machine refusing (full disk, missing matplotlib, names too long) is one line and a
documented exit code, with nothing half-committed; options are checked before any training.

Issue 12's failures 6 (resource errors were internal errors, exit 1; with --name the run was
committed but not its name) and 7 (`--stop-epoch 0` trained the preset dynamics first).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

SET = "digits/random/ipc2"
CONDENSE = ["condense", "digits", "--ipc", "2", "--method", "random"]


def one_line(r, code: int, *words):
    assert r.exit_code == code, (r.exit_code, r.stderr)
    lines = r.stderr.splitlines()
    assert [x for x in lines if x.startswith("error:")] == lines[-1:], r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[-1], (w, r.stderr)


def nothing_committed(store):
    assert store.all_runs() == [] and store.refs() == {}
    assert not store.tmp.exists() or list(store.tmp.iterdir()) == []


# -- a full disk ---------------------------------------------------------------------------------------
def test_a_full_disk_while_writing_a_result_is_one_line_exit_2(cli, store, monkeypatch):
    """Failure 6: `SafetensorError ... No space left on device` was an internal error (exit 1). The
    error safetensors raises is what it raises on a real full disk (its Rust I/O error, errno 28)."""
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*a, **kw):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    with monkeypatch.context() as m:
        m.setattr(safetensors.torch, "save_file", full)
        one_line(cli(*CONDENSE), 2, "no space left on the device", "--home")
    nothing_committed(store)
    assert cli(*CONDENSE).exit_code == 0 and cli("cache", "verify").exit_code == 0


FULL_DISK = textwrap.dedent("""
    set -e
    mount -t tmpfs -o size=256k tmpfs "$YOCO_HOME"
    python -m yoco_cli cache ls >/dev/null                       # creates the layout
    cat /dev/zero > "$YOCO_HOME/filler" 2>/dev/null || true      # fills the disk...
    truncate -s -8K "$YOCO_HOME/filler"                          # ...but for two pages
    set +e
    python -m yoco_cli condense digits --ipc 4 --method random --name full/disk; echo "rc=$?"
    python -m yoco_cli cache verify --json >/dev/null; echo "verify=$?"
    ls "$YOCO_HOME/runs" "$YOCO_HOME/tmp" | tr '\\n' ' '; echo
    rm "$YOCO_HOME/filler"
    python -m yoco_cli condense digits --ipc 4 --method random --name full/disk >/dev/null; echo "again=$?"
""")


@pytest.mark.skipif(shutil.which("unshare") is None
                    or subprocess.run(["unshare", "-rm", "true"], check=False).returncode != 0,
                    reason="needs `unshare -rm` (user namespaces) to mount a small tmpfs")
def test_a_really_full_disk(tmp_path):
    """The same on a real filesystem that fills up: a 256 KiB tmpfs (mounted in a private user
    namespace, so no root is needed) as the yoco home."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "YOCO_HOME": str(home), "OMP_NUM_THREADS": "1", "PATH": os.path.dirname(sys.executable)
           + os.pathsep + os.environ.get("PATH", "")}
    r = subprocess.run(["unshare", "-rm", "sh", "-c", FULL_DISK], env=env, capture_output=True, text=True,
                       timeout=300, check=False)
    out = r.stdout
    assert "rc=2" in out and "no space left on the device" in r.stderr, (out, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert "verify=0" in out and "again=0" in out, out  # consistent, and the next run works
    listing = out.split("verify=0")[1].split("again=")[0]
    assert "condense" not in listing and "stage-" not in listing, listing  # no run, no staging left


# -- names and paths -----------------------------------------------------------------------------------
def test_a_name_too_long_is_refused_before_any_work(cli, store):
    """Failure 6: with a 300-character --name the run was committed, then writing its name failed
    (Errno 36, exit 1)."""
    one_line(cli(*CONDENSE, "--name", "x" * 300), 2, "shorter --name")
    nothing_committed(store)
    one_line(cli(*CONDENSE, "--name", "ok/" + "y" * 260 + "/ok"), 2, "shorter --name")
    nothing_committed(store)
    assert cli(*CONDENSE, "--name", "a/" + "z" * 240).exit_code == 0  # long but legal: fine
    assert store.refs_to("condense", store.all_runs()[0].key) == ["a/" + "z" * 240]


def test_a_name_is_written_with_its_run_or_not_at_all(store, tmp_path, monkeypatch):
    """If writing the name still fails after a fresh commit (the disk fills at that moment), the commit
    is undone: never a run without the name it was asked for."""
    import errno

    from yoco_cli.errors import ResourceError
    from yoco_cli.stages.sets import set_result
    from yoco_cli.store import Store, run_cached

    def no_space(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", "refs")

    monkeypatch.setattr(Store, "set_ref", no_space)
    import torch

    from yoco_cli.data.condensed import CondensedSet

    cset = CondensedSet(torch.rand(4, 1, 8, 8), torch.tensor([0, 0, 1, 1]), "digits", 10)
    with pytest.raises(ResourceError, match="no space left"):
        run_cached(store, "t", 1, {}, {}, lambda tmp, key: set_result(tmp, cset, "x"), ref="named/run")
    assert store.all_runs() == []


def test_an_output_file_name_near_the_limit_is_written(cli, store, tmp_path):
    """A 250-byte file name is legal; the temp file next to it must not be longer than that."""
    assert cli(*CONDENSE).exit_code == 0
    out = tmp_path / ("k" * 245 + ".json")
    r = cli("prune", SET, "--to", "1", "--metric", "random", "--indices", out)
    assert r.exit_code == 0, r.stderr
    assert out.read_text().startswith('{"indices":')


# -- a missing optional dependency -------------------------------------------------------------------
def hide_matplotlib(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError


@pytest.fixture
def no_matplotlib(monkeypatch):
    hide_matplotlib(monkeypatch)


def test_plot_without_matplotlib_is_a_usage_error_with_an_install_hint(cli, store, tmp_path, monkeypatch):
    """Failure 6: `yoco report --plot` without matplotlib was `internal error: ModuleNotFoundError`."""
    assert cli(*CONDENSE).exit_code == 0
    assert cli("prune", SET, "--to", "1", "--metric", "random").exit_code == 0
    r = cli("eval", f"{SET}@random-hard-imbalanced-ipc1", "--epochs", "2", "--repeats", "1")
    assert r.exit_code == 0, r.stderr
    hide_matplotlib(monkeypatch)
    one_line(cli("report", "--plot", tmp_path / "p.png"), 2, "matplotlib", "pip install")
    assert not (tmp_path / "p.png").exists()


def test_pipeline_checks_plot_support_before_training(cli, store, tmp_path, no_matplotlib):
    one_line(cli("pipeline", "--to", "1", "--plot", tmp_path / "p.png"), 2, "matplotlib")
    assert store.all_runs() == []


# -- options checked before training ----------------------------------------------------------------
@pytest.mark.parametrize("opts, words", [
    (["--stop-epoch", "0"], "--stop-epoch must be at least 1"),
    (["--k", "0"], "--k must be at least 1"),
    (["--k", "5", "--stop-epoch", "3"], "smaller than K=5"),
    (["--stop-epoch", "50"], "past the 3 epochs"),
])
def test_prune_options_fail_before_dynamics_train(cli, store, opts, words):
    """Failure 7: `yoco prune ... --stop-epoch 0` trained the full preset dynamics before refusing."""
    assert cli(*CONDENSE).exit_code == 0
    r = cli("prune", SET, "--to", "1", "--dynamics-epochs", "3", "--dynamics-seeds", "1", *opts)
    one_line(r, 2, words)
    assert [m.stage for m in store.all_runs()] == ["condense"]  # no dynamics were recorded


def test_score_options_fail_before_dynamics_train(cli, store):
    assert cli(*CONDENSE).exit_code == 0
    one_line(cli("score", SET, "--dynamics-epochs", "3", "--stop-epoch", "9"), 2, "past the 3 epochs")
    assert [m.stage for m in store.all_runs()] == ["condense"]


# -- issue 23, the small ones -----------------------------------------------------------------------
@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf"])
def test_a_bad_lock_timeout_is_a_usage_error(cli, monkeypatch, value):
    """YOCO_LOCK_TIMEOUT=abc was an internal error (exit 1) and -1 was accepted silently."""
    monkeypatch.setenv("YOCO_LOCK_TIMEOUT", value)
    r = cli("condense", "digits", "--ipc", "1", "--method", "random")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"YOCO_LOCK_TIMEOUT={value!r} is not a number of seconds" in r.stderr and "Traceback" not in r.stderr


def test_a_good_lock_timeout_is_used(store, monkeypatch):
    from yoco_cli.store.store import lock_timeout

    monkeypatch.setenv("YOCO_LOCK_TIMEOUT", "2.5")
    assert lock_timeout() == 2.5
    monkeypatch.delenv("YOCO_LOCK_TIMEOUT")
    assert lock_timeout() == -1.0


@pytest.mark.parametrize("attr", ["size=-5", "approx_size=-1", "ipc=0", "factor=0"])
def test_registry_fields_that_describe_no_real_file_are_refused(cli, tmp_path, monkeypatch, attr):
    """A registry line with `size=-5` parsed."""
    reg = tmp_path / "registry.txt"
    reg.write_text(f"x/y - http://127.0.0.1/x kind=file {attr}\n")
    monkeypatch.setenv("YOCO_REGISTRY", str(reg))
    r = cli("fetch", "--list")
    key = attr.split("=")[0]
    assert r.exit_code == 2 and "registry.txt:1" in r.stderr and f"{key} must be at least" in r.stderr, r.stderr


@pytest.mark.parametrize("layout", ["one tree", "train and test"])
def test_an_empty_class_folder_is_refused(cli, tmp_path, layout):
    """An empty class folder in `folder:` was accepted silently (a class with no images to learn)."""
    from PIL import Image

    root = tmp_path / "pets"
    base = root / "train" if layout == "train and test" else root
    for c in ("cat", "dog"):
        for i in range(3):
            (base / c).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(base / c / f"{i}.png")
            if layout == "train and test":
                (root / "test" / c).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (0, 40 * i, 0)).save(root / "test" / c / f"{i}.png")
    (base / "emu").mkdir()
    r = cli("fetch", f"folder:{root}")
    assert r.exit_code == 2 and "emu has no training images" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    (base / "emu").rmdir()
    assert cli("fetch", f"folder:{root}").exit_code == 0


@pytest.mark.parametrize("command", ["condense", "import"])
def test_a_condensed_set_may_not_take_a_name_that_reads_as_a_pruned_one(cli, tmp_path, command):
    """`--name x@lbpe-easy-balanced-ipc1` was accepted for a condensed set (it reads as a pruned set)."""
    import torch

    if command == "condense":
        args = ["condense", "digits", "--ipc", "1", "--method", "random"]
    else:
        torch.save([torch.rand(10, 1, 8, 8), torch.arange(10)], tmp_path / "s.pt")
        args = ["import", tmp_path / "s.pt", "--dataset", "digits"]
    r = cli(*args, "--name", "x@lbpe-easy-balanced-ipc1")
    assert r.exit_code == 2 and "reads as that of something derived from a set" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1
    assert cli(*args, "--name", "x/lbpe-ipc1").exit_code == 0


_DRIVER = """
import os, signal, sys, time
from yoco_cli.executors.base import Task
from yoco_cli.executors.local import LocalExecutor


def slow(seconds, progress=None):
    time.sleep(seconds)
    progress({"epoch": 1})  # the driver is gone by now: the pipe is broken
    return []


if __name__ == "__main__":
    ex = LocalExecutor(max_parallel=1)
    ex.submit(Task("t", "slow", slow, (3.0,)))
    print("submitted", flush=True)
    time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGKILL)  # a driver killed mid-sweep
"""


def test_workers_exit_quietly_when_their_driver_dies(tmp_path):
    """A SIGKILLed driver made every worker print a BrokenPipeError traceback."""
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})  # returns once the worker closed stderr too
    assert p.returncode == -9 and p.stdout.startswith("submitted"), (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and "BrokenPipeError" not in p.stderr, p.stderr


def test_download_retries_are_bounded_in_time_too(tmp_path):
    """`fetch --retries 1000000000` against a refused port retried for minutes (doubling waits)."""
    import socket

    from yoco_cli.errors import FetchError
    from yoco_cli.remote import http

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: every try is refused at once
    waits: list[float] = []
    with pytest.raises(FetchError, match="cannot connect"):
        http.download(f"http://127.0.0.1:{port}/x", tmp_path / "x", retries=10**9, sleep=waits.append)
    assert sum(waits) <= http.RETRY_WINDOW_S and max(waits) <= http.MAX_BACKOFF_S and len(waits) < 20, waits
