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
