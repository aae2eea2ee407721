"""The content-addressed store: objects, keys, refs, verify/gc/rm, and imports under concurrency and kills."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from yoco_cli.errors import UsageError
from yoco_cli.stages.importing import PAUSE_ENV, import_file
from yoco_cli.store import StageResult, run_cached, run_key


def _set_file(tmp_path, name="data.pt", seed=0):
    p = tmp_path / name
    x = torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    torch.save([x, torch.arange(10).repeat_interleave(2)], p)
    return p


def _objects(store):
    """The output objects (each run's manifest is an object too: counted apart)."""
    sealed = store.sealed_digests()
    return [p for p in store.all_objects() if p.name not in sealed]


def test_objects_are_named_by_content_and_read_only(store):
    d1, n = store.put_bytes(b"hello")
    d2, _ = store.put_bytes(b"hello")
    assert d1 == d2 and n == 5 and len(_objects(store)) == 1
    p = store.object_path(d1)
    assert p.read_bytes() == b"hello" and p.name == d1
    assert oct(p.stat().st_mode & 0o777) == oct(0o444)


def test_keys_change_with_params_and_inputs_only():
    base = run_key("prune", 1, {"to": 1, "metric": "lbpe"}, {"set": "a" * 64})
    assert base == run_key("prune", 1, {"metric": "lbpe", "to": 1}, {"set": "a" * 64})  # order-free
    assert base != run_key("prune", 1, {"to": 2, "metric": "lbpe"}, {"set": "a" * 64})
    assert base != run_key("prune", 1, {"to": 1, "metric": "lbpe"}, {"set": "b" * 64})
    assert base != run_key("prune", 2, {"to": 1, "metric": "lbpe"}, {"set": "a" * 64})


def test_import_key_follows_reading_params(store, tmp_path):
    p = _set_file(tmp_path)
    a, _ = import_file(store, p, dataset="cifar10")
    b, _ = import_file(store, p, dataset="cifar10", factor=1)
    c, cached = import_file(store, p, fmt="idc", dataset="cifar10")  # auto resolves to idc: same key
    assert a.key != b.key and c.key == a.key and cached
    assert a.params == {"format": "idc", "dataset": "cifar10", "factor": 2, "ipc": 2, "experiment": None,
                        "value_space": "raw01"}
    assert set(a.inputs) == {"file"} and len(a.inputs["file"]) == 64


def test_refs_name_runs(store, tmp_path):
    m, _ = import_file(store, _set_file(tmp_path), name="mine/cifar10")
    assert store.resolve("mine/cifar10").key == m.key
    assert store.resolve(m.key[:8]).key == m.key  # unique key prefix
    assert store.refs_to("import", m.key) == ["mine/cifar10"]  # --name replaces the default name
    with pytest.raises(UsageError, match="invalid name"):
        import_file(store, _set_file(tmp_path, "b.pt", 1), name="../escape")
    with pytest.raises(UsageError, match="no artifact"):
        store.resolve("mine/cifar1O")


def test_same_file_imported_twice_is_one_object(store, tmp_path):
    p = _set_file(tmp_path)
    m1, c1 = import_file(store, p)
    copy = tmp_path / "elsewhere.pt"
    copy.write_bytes(p.read_bytes())
    m2, c2 = import_file(store, copy, name="copy")
    assert (c1, c2) == (False, True) and m1.key == m2.key
    assert len(_objects(store)) == 1 and len(store.all_runs("import")) == 1


def _corrupt(store):
    obj = _objects(store)[0]
    os.chmod(obj, 0o644)
    data = bytearray(obj.read_bytes())
    data[-1] ^= 0xFF
    obj.write_bytes(bytes(data))


def test_verify_detects_corruption_and_missing_objects(cli, store, tmp_path):
    import_file(store, _set_file(tmp_path))
    assert cli("cache", "verify").exit_code == 0
    _corrupt(store)
    r = cli("cache", "verify")
    assert r.exit_code == 3 and "corrupted" in r.stderr and "Traceback" not in r.stderr
    assert _objects(store) == [] and len(store.quarantined()) == 1  # moved aside: its run now recomputes
    r = cli("cache", "verify", "--json")
    assert r.exit_code == 3 and any("damaged copy is in quarantine" in p for p in r.json()["problems"])
    m, _ = import_file(store, _set_file(tmp_path))  # recomputed
    store.object_path(m.digest("set")).unlink()
    r = cli("cache", "verify", "--json")
    assert r.exit_code == 3 and any("is missing" in p for p in r.json()["problems"])


def test_gc_and_rm_with_dry_run(cli, store, tmp_path):
    m, _ = import_file(store, _set_file(tmp_path), name="keep")
    store.put_bytes(b"orphan")  # no manifest uses it
    assert cli("cache", "gc", "--dry-run", "--json").json()["objects"] and len(_objects(store)) == 2
    r = cli("cache", "gc")
    assert r.exit_code == 0 and len(_objects(store)) == 1, r.stderr
    r = cli("cache", "rm", "keep", "--dry-run", "--json")
    assert r.json()["named"] == [f"keep (import {m.key[:12]})"] and store.resolve("keep").key == m.key
    assert cli("cache", "rm", "keep", "--yes").exit_code == 0
    assert _objects(store) == [] and store.refs() == {} and store.all_runs() == []


def test_staged_outputs_never_visible_until_commit(store):
    def boom(tmp, key):
        (tmp / "x").write_bytes(b"half")
        raise RuntimeError("crash mid-stage")

    with pytest.raises(RuntimeError):
        run_cached(store, "t", 1, {}, {}, boom, ref="t/x")
    assert store.all_runs() == [] and store.refs() == {} and _objects(store) == []
    m, cached = run_cached(store, "t", 1, {}, {}, lambda tmp, key: StageResult({"x": _w(tmp)}))
    assert not cached and store.has_object(m.digest("x"))


def _w(tmp):
    (tmp / "x").write_bytes(b"whole")
    return tmp / "x"


def _yoco(home, *args, pause=None):
    env = {**os.environ, "YOCO_HOME": str(home), "OMP_NUM_THREADS": "1"}
    if pause is not None:
        env[PAUSE_ENV] = str(pause)
    return subprocess.Popen([sys.executable, "-m", "yoco_cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_importing_at_once(store, tmp_path):
    p = _set_file(tmp_path)
    procs = [_yoco(store.root, "import", p, "--dataset", "cifar10", pause=1.0) for _ in range(2)]
    results = [(q.wait(timeout=60), q.stderr.read()) for q in procs]
    assert [rc for rc, _ in results] == [0, 0], results
    said = sorted("already in the cache" in err for _, err in results)
    assert said == [False, True]  # one computed, the other waited on the lock and reused it
    assert len(_objects(store)) == 1 and len(store.all_runs("import")) == 1
    assert store.verify() == []


def test_killed_import_leaves_no_visible_entry(cli, store, tmp_path):
    p = _set_file(tmp_path)
    q = _yoco(store.root, "import", p, "--dataset", "cifar10", pause=60)
    try:
        deadline = time.time() + 30
        while not list(store.tmp.glob("stage-*/set.safetensors")):  # staged, not yet committed
            assert time.time() < deadline and q.poll() is None, q.stderr.read() if q.poll() is not None else ""
            time.sleep(0.05)
        q.send_signal(signal.SIGKILL)
        q.wait(timeout=10)
    finally:
        if q.poll() is None:
            q.kill()
    assert cli("cache", "verify").exit_code == 0
    assert cli("cache", "ls", "--json").json()["artifacts"] == [] and store.refs() == {}
    assert cli("cache", "gc", "--json").json()["tmp"]  # the dead process's staging folder is swept
    assert list(store.tmp.iterdir()) == []
    _m, cached = import_file(store, p, dataset="cifar10")  # and the next run simply computes it
    assert not cached and store.verify() == []
