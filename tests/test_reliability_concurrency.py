"""Reliability: gc, rm and verify are safe while stages run; killed processes leave nothing that lasts.

Issue 12's failure 3: looping gc while imports ran lost committed outputs (exit 0, then "output ...
is missing") or failed them (exit 3), because gc deleted objects that were in objects/ but not yet
referenced by their manifest. Writers now hold the store lock shared from moving objects in until
the manifest is written; gc/rm hold it exclusive (yoco_cli/store/locks.py).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

from yoco_cli.stages.importing import PAUSE_ENV, import_file


def set_file(tmp_path, name: str, seed: int):
    p = tmp_path / name
    x = torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    torch.save([x, torch.arange(10).repeat_interleave(2)], p)
    return p


def yoco(home, *args, pause=None, **popen):
    env = {**os.environ, "YOCO_HOME": str(home), "OMP_NUM_THREADS": "1"}
    if pause is not None:
        env[PAUSE_ENV] = str(pause)
    return subprocess.Popen([sys.executable, "-m", "yoco_cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_gc_waits_for_a_commit_between_its_objects_and_its_manifest(store, tmp_path, monkeypatch):
    """Deterministic: the import stops after its object is in objects/ and before its manifest is
    written; a `yoco cache gc` in another process runs right then. Old yoco deleted the object (the
    import then failed with exit 3, or committed a manifest whose output was gone)."""
    from yoco_cli.store.store import Store

    in_window, gc_done = threading.Event(), threading.Event()
    real_commit = Store.commit_run

    def slow_commit(self, m):
        in_window.set()
        gc_done.wait(timeout=20)  # (new yoco: gc blocks on the lock, so this wait times out)
        real_commit(self, m)

    monkeypatch.setattr(Store, "commit_run", slow_commit)
    result = {}
    t = threading.Thread(target=lambda: result.update(m=import_file(store, set_file(tmp_path, "a.pt", 0),
                                                                   dataset="cifar10")[0]))
    t.start()
    assert in_window.wait(timeout=60)
    gc = yoco(store.root, "--json", "cache", "gc")
    try:
        gc.wait(timeout=4)  # old yoco: finishes at once; new yoco: waits for the commit
    except subprocess.TimeoutExpired:
        pass
    gc_done.set()
    t.join(timeout=60)
    assert gc.wait(timeout=60) == 0, gc.stderr.read()
    assert "m" in result, "the import failed"
    assert store.has_object(result["m"].digest("set")) and store.verify() == []


def test_gc_loop_while_processes_import(store, tmp_path):
    """Three imports in parallel (each pausing mid-stage) while gc loops: every one succeeds and keeps
    its output; gc never fails. (benchmarks/soak.py does this at scale, with kills.)"""
    files = [set_file(tmp_path, f"s{i}.pt", i) for i in range(3)]
    procs = [yoco(store.root, "import", f, "--dataset", "cifar10", "--name", f"mine/s{i}", pause=0.5)
             for i, f in enumerate(files)]
    passes = 0
    while any(p.poll() is None for p in procs):
        res = store.gc()
        assert set(res["objects"]).isdisjoint(store.referenced_digests())
        passes += 1
        time.sleep(0.02)
    results = [(p.wait(), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results] == [0] * 3, results
    assert passes >= 3 and store.verify() == []
    assert sorted(store.refs()) == [f"mine/s{i}" for i in range(3)]


HOLDER = textwrap.dedent("""
    import sys, time
    from yoco_cli.store import Store
    s = Store(sys.argv[1]).ensure()
    with s.lock("condense", sys.argv[2]):
        s.partial_dir("condense", sys.argv[2])
        with s.staging() as d:
            (d / "half-written").write_bytes(b"x")
            print("ready", flush=True)
            time.sleep(120)
""")


def holder(store, key: str):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.root), key], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def test_gc_and_verify_clean_up_after_killed_processes_but_not_live_ones(cli, store):
    """A process killed while holding a key lock, a partial folder and a staging folder leaves all
    three; gc removes them. The same things held by a live process are left alone."""
    dead, live = "a" * 64, "b" * 64
    victim, alive = holder(store, dead), holder(store, live)
    try:
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        assert len(list(store.tmp.glob("stage-*"))) == 2
        r = cli("--json", "cache", "gc")
        assert r.exit_code == 0, r.stderr
        doc = r.json()
        assert doc["locks"] == [f"condense-{dead}.lock"] and doc["partial"] == [f"condense/{dead}"]
        assert len(doc["tmp"]) == 1 and doc["tmp"][0].startswith(f"stage-{victim.pid}-")
        assert store.lock_path("condense", live).exists() and (store.root / "partial" / "condense" / live).is_dir()
        assert len(list(store.tmp.glob("stage-*/half-written"))) == 1  # the live one's
        r = cli("--json", "cache", "verify")
        assert r.exit_code == 0 and r.json()["cleaned"] == {"locks": [], "partial": []}
    finally:
        alive.kill()
        alive.wait(timeout=10)
    r = cli("--json", "cache", "verify")  # now it is dead too: verify tidies its lock and partial folder
    assert r.json()["cleaned"] == {"locks": [f"condense-{live}.lock"], "partial": [f"condense/{live}"]}


def test_removing_a_lock_file_never_lets_two_holders_in(tmp_path):
    """The cleanup protocol: a waiter that finds its lock file unlinked locks the new file instead."""
    from yoco_cli.store.locks import KeyLock, try_remove

    path = tmp_path / "k.lock"
    first = KeyLock(path)
    assert first.acquire(timeout=0)
    got = threading.Event()
    second = KeyLock(path)
    t = threading.Thread(target=lambda: second.acquire() and got.set())
    t.start()
    time.sleep(0.2)
    assert not try_remove(path)  # held: not removed
    os.unlink(path)  # what try_remove does while holding the lock...
    first.release()  # ...then releases: the waiter wakes on the unlinked file, and must relock
    t.join(timeout=10)
    assert got.is_set() and path.exists()
    third = KeyLock(path)
    assert not third.acquire(timeout=0.2)  # the waiter holds the file that is there now
    second.release()
    assert try_remove(path) and not path.exists()


def test_rm_of_an_input_while_a_stage_reads_it_fails_cleanly(cli, store, tmp_path):
    """`cache rm` of a set that a running prune is about to read: the prune fails in one line (exit 3),
    never an internal error, and a rerun after recomputing works."""
    m, _ = import_file(store, set_file(tmp_path, "a.pt", 0), dataset="cifar10", name="mine/a")
    from yoco_cli.stages.sets import load_set

    store.rm([m])
    from yoco_cli.errors import IntegrityError

    with pytest.raises(IntegrityError, match="missing from the store"):
        load_set(store, m)
    r = cli("prune", "mine/a", "--to", "1", "--metric", "random")
    assert r.exit_code == 2 and "no condensed set named" in r.stderr  # its name went with it


@pytest.mark.parametrize("point", ["compute", "put", "commit", "ref"])
def test_an_interruption_at_any_point_of_a_commit_leaves_the_cache_consistent(store, tmp_path, monkeypatch, point):
    """Ctrl-C (or a kill) before, inside or after the commit window: no visible half-artifact, a
    name only with its run, verify clean, and the rerun computes it."""
    from yoco_cli.store import Store

    p = set_file(tmp_path, "a.pt", 0)
    where = {"compute": "yoco_cli.stages.importing._pause_for_tests", "put": "yoco_cli.store.store.Store.put_file",
             "commit": "yoco_cli.store.store.Store.commit_run", "ref": "yoco_cli.store.store.Store.set_ref"}[point]

    def interrupt(*a, **kw):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(where, interrupt)
        with pytest.raises(KeyboardInterrupt):
            import_file(store, p, dataset="cifar10", name="mine/a")
    assert store.all_runs() == [] and store.refs() == {} and store.verify() == []
    assert list(store.tmp.iterdir()) == []
    m, cached = import_file(Store(store.root), p, dataset="cifar10", name="mine/a")
    assert not cached and store.resolve("mine/a").key == m.key and store.verify() == []


@pytest.mark.parametrize("stage, where", [("score", "yoco_cli.stages.score._write"),
                                          ("prune", "yoco_cli.stages.prune._compute")])
def test_ctrl_c_inside_score_or_prune_exits_130_and_the_rerun_completes(cli, store, monkeypatch, stage, where):
    """Interruption of the stages not covered elsewhere (import, condense, dynamics, eval and fetch
    have their own tests): exit 130, nothing of that stage committed, verify clean, the rerun works."""
    assert cli("condense", "digits", "--ipc", "2", "--method", "random").exit_code == 0
    args = (["score", "digits/random/ipc2", "--dynamics-epochs", "2", "--dynamics-seeds", "1"] if stage == "score"
            else ["prune", "digits/random/ipc2", "--to", "1", "--metric", "random"])

    def interrupt(*a, **kw):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(where, interrupt)
        r = cli(*args)
    assert r.exit_code == 130 and "interrupted" in r.stderr
    assert store.all_runs(stage) == [] and store.verify() == [] and list(store.tmp.iterdir()) == []
    assert cli(*args).exit_code == 0 and len(store.all_runs(stage)) == 1


def _commit_blob(store, i: int):
    """A stage run whose output is i's bytes, through the store's usual commit protocol."""
    from yoco_cli.store import StageResult, run_cached

    def compute(tmp, key):
        p = tmp / "out.bin"
        p.write_bytes(b"result %d " % i + os.urandom(64))
        return StageResult({"out": p})

    return run_cached(store, "threaded", 1, {"i": i}, {}, compute)[0]


def test_gc_in_another_thread_of_the_same_process_never_loses_a_commit(store):
    """Issue 23's case 1: one thread commits results while another loops `Store(home).gc()`. The store
    lock was re-entrant per process and shared by its threads, so gc deleted objects and temp manifests
    of a commit in flight (lost results, FileNotFoundError) or raised RuntimeError. Now gc waits for
    every commit in flight, in any thread."""
    from yoco_cli.store.store import Store

    store.ensure()
    stop, errors, made = threading.Event(), [], []
    passes = [0]

    def gc_loop():
        while not stop.is_set():
            try:
                Store(store.root).gc()
                passes[0] += 1
            except BaseException as e:  # noqa: BLE001 - the test reports whatever gc raised
                errors.append(f"gc: {type(e).__name__}: {e}")
                return

    def commits():
        try:
            for i in range(150):
                made.append(_commit_blob(Store(store.root), i))
        except BaseException as e:  # noqa: BLE001
            errors.append(f"commit: {type(e).__name__}: {e}")
        finally:
            stop.set()

    threads = [threading.Thread(target=gc_loop), threading.Thread(target=commits)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(made) == 150 and passes[0] > 0
    lost = [m.key[:12] for m in made if not store.has_object(m.digest("out"))]
    assert lost == [] and store.verify() == []
    assert all(store.read_output(m, "out").data.startswith(b"result %d " % m.params["i"]) for m in made)


def test_a_killed_process_staging_folder_is_swept_by_the_next_process(store):
    """A SIGKILLed prune or fetch left tmp/stage-*/.owner.lock until the next gc. The next process that
    stages an output sweeps it (when nobody holds the store lock); a live one's folder stays."""
    from yoco_cli.store import locks
    from yoco_cli.store.store import OWNER, Store

    dead = store.tmp / "stage-999999999-abc"
    dead.mkdir()
    (dead / OWNER).touch()  # its owner died: nobody holds the lock
    (dead / "out.bin").write_bytes(b"half")
    live = store.tmp / f"stage-{os.getpid()}-live"
    live.mkdir()
    held = locks.KeyLock(live / OWNER)
    assert held.acquire(timeout=0)
    try:
        with Store(store.root).staging():  # the next process stages its first output
            assert not dead.exists() and live.exists() and (live / OWNER).exists()
    finally:
        held.release()
