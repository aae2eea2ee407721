"""Executors and the sweep driver: byte-identical results on every executor, one writer, retries,
Ctrl-C, failures, and a stored run never sent out."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from test_dynamics import digits_subset  # tests/ is on sys.path (no __init__.py)

from yoco_cli import executors
from yoco_cli.errors import IntegrityError, UsageError
from yoco_cli.executors import Done, Output, Shared
from yoco_cli.executors.base import pack, unpack
from yoco_cli.executors.local import LocalExecutor
from yoco_cli.executors.serial import SerialExecutor
from yoco_cli.nn.engine import threads
from yoco_cli.stages import dynamics as D
from yoco_cli.stages import evaluate as E
from yoco_cli.stages import sweep
from yoco_cli.stages.sweep import Pool
from yoco_cli.store import Store

KW = {"epochs": 3, "model": "convnet:width=8,depth=2", "device": "cpu"}


@pytest.fixture(scope="module")
def pool():
    """One pool of two workers for the module: starting workers (importing torch) is the slow part."""
    with LocalExecutor(max_parallel=2) as ex:
        yield ex


def _digests(store: Store, stage: str) -> dict[str, dict]:
    return {m.key: {n: o["digest"] for n, o in m.outputs.items()} for m in store.all_runs(stage)}


def test_local_pool_equals_serial_one_thread_digest_for_digest(store, tmp_path, pool):
    """Each run in a worker process (one thread) gives the bytes of the same run alone on one thread."""
    m, cset = digits_subset(store, 2, factor=2)
    sent = pool.submitted
    epochs = []
    g, info = E.run_eval(store, m, cset, repeats=3, pool=Pool(executor=pool), on_epoch=lambda ev: epochs.append(ev.epoch), **KW)
    d, dinfo = D.compute_dynamics(store, m, cset, seeds=2, pool=Pool(executor=pool), **KW)  # the next sweep: no hook
    assert pool.submitted - sent == 5
    assert sorted(epochs) == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # every worker's epochs reached the driver
    assert info["computed"] == [0, 1, 2] and dinfo["computed"] == [0, 1]
    assert {m_.provenance["executor"] for m_ in store.all_runs("eval-run")} == {"local"}
    workers = {m_.provenance["worker"] for m_ in store.all_runs("eval-run") + store.all_runs("dynamics-run")}
    assert all(f"pid {os.getpid()}" not in w for w in workers)  # computed in the workers, not here

    alone = Store(tmp_path / "alone").ensure()
    m2, cset2 = digits_subset(alone, 2, factor=2)
    with threads(1), SerialExecutor() as ex:
        g2, _ = E.run_eval(alone, m2, cset2, repeats=3, pool=Pool(executor=ex), **KW)
        d2, _ = D.compute_dynamics(alone, m2, cset2, seeds=2, pool=Pool(executor=ex), **KW)
    assert g2.outputs == g.outputs and d2.outputs == d.outputs
    assert _digests(alone, "eval-run") == _digests(store, "eval-run")
    assert _digests(alone, "dynamics-run") == _digests(store, "dynamics-run")


def test_stored_runs_are_never_sent_out(store, pool):
    m, cset = digits_subset(store, 1)
    E.run_eval(store, m, cset, repeats=2, **KW)
    sent = pool.submitted
    _g, info = E.run_eval(store, m, cset, repeats=3, pool=Pool(executor=pool), **KW)
    assert info["computed"] == [2] and pool.submitted - sent == 1  # only the new repeat
    _g, info = E.run_eval(store, m, cset, repeats=3, pool=Pool(executor=pool), **KW)
    assert info["computed"] == [] and pool.submitted - sent == 1
    assert info["report"].summary() == "every run came from the cache; nothing was sent out"


# -- jobs for the fault tests (module level: worker processes import them by name) ---------------

def die_once_job(spec, progress=None):
    """Crashes its worker (as a kill or an out-of-memory would) the first time, then succeeds."""
    marker = Path(spec["marker"])
    if not marker.exists():
        marker.write_text("died once")
        os._exit(9)
    return [Output({"out": f"value {spec['value']}".encode()}, {"value": spec["value"]})]


def value_job(spec, progress=None):
    if spec["value"] == "bad":
        raise UsageError("this job refuses its input", "give it a good one")
    if spec["value"] == "slow":
        import time

        time.sleep(30)
    return [Output({"out": f"value {spec['value']}".encode()}, {"value": spec["value"]})]


def _jobs(values, fn=value_job, **extra):
    return [sweep.Job([sweep.Run("test-run", 1, {"v": v}, {}, f"job {v}")], fn, {"value": v, **extra})
            for v in values]


def test_a_worker_that_dies_is_replaced_and_its_task_retried(store, tmp_path, pool):
    jobs = _jobs(["a"], die_once_job, marker=str(tmp_path / "marker")) + _jobs(["b", "c"])
    report = sweep.run(store, jobs, pool)
    assert (tmp_path / "marker").read_text() == "died once"
    assert sorted(m.meta["value"] for m in report.manifests.values()) == ["a", "b", "c"]
    assert store.object_path(report.manifests[jobs[0].runs[0].key].digest("out")).read_bytes() == b"value a"
    assert store.verify() == []


def test_a_failing_job_raises_its_own_error_after_the_running_ones_commit(store, pool):
    with pytest.raises(UsageError, match="refuses its input") as err:
        sweep.run(store, _jobs(["ok", "bad"]), pool)
    assert err.value.hint == "give it a good one" and "pid" in err.value.message  # names the worker
    assert [m.meta["value"] for m in store.all_runs("test-run")] == ["ok"]
    assert store.verify() == []


def test_ctrl_c_cancels_outstanding_tasks_and_keeps_the_cache_consistent(store, pool):
    jobs = _jobs(["quick"]) + _jobs(["slow", "slow2"])
    jobs[1].cost = 10  # dispatched first, with "quick"
    seen = []

    def interrupt(status):
        seen.append(status.done)
        if status.done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep.run(store, jobs, pool, on_status=interrupt)
    assert pool._workers == [] and seen[-1] == 1  # every worker killed, the driver stopped at once
    assert [m.meta["value"] for m in store.all_runs("test-run")] == ["quick"]
    assert store.verify() == [] and not list(store.tmp.iterdir())
    report = sweep.run(store, _jobs(["quick"]), SerialExecutor())
    assert report.sent == 0


class _Tampering(SerialExecutor):
    """Delivers a result whose bytes do not match the digest computed where it ran."""

    def wait(self, timeout=None):
        done: Done = super().wait(timeout)[0]
        done.outputs[0].files["out"] = b"changed on the way"
        return [done]


def test_bytes_that_do_not_match_their_digest_are_never_committed(store):
    with pytest.raises(IntegrityError, match="does not match the digest"):
        sweep.run(store, _jobs(["x"]), _Tampering())
    assert store.all_runs("test-run") == [] and store.verify() == []


def test_shared_inputs_pack_by_name():
    big = Shared("test:abc", torch.arange(10))
    data, found = pack(("f", [big, big], {"k": big}))
    assert list(found) == ["test:abc"] and len(data) < 200  # the tensor is not inside
    out = unpack(data, {"test:abc": torch.arange(10)})
    assert torch.equal(out[1][0].value, torch.arange(10)) and out[2]["k"].name == "test:abc"


def test_choose_by_name_env_and_auto(monkeypatch):
    monkeypatch.delenv("YOCO_EXECUTOR", raising=False)
    monkeypatch.delenv("YOCO_RAY_ADDRESS", raising=False)
    assert isinstance(executors.choose("serial"), SerialExecutor)
    assert executors.choose("local", max_parallel=3).slots() == 3
    monkeypatch.setenv("YOCO_EXECUTOR", "serial")
    assert isinstance(executors.choose(None, tasks=100, seconds=1e6), SerialExecutor)
    monkeypatch.setenv("YOCO_EXECUTOR", "threads")
    with pytest.raises(UsageError, match="YOCO_EXECUTOR 'threads' is not an executor"):
        executors.choose(None)
    with pytest.raises(UsageError, match="--executor 'gpu' is not an executor"):
        executors.choose("gpu")
    with pytest.raises(UsageError, match="--address is for the ray executor"):
        executors.choose("local", address="127.0.0.1:6379")
    with pytest.raises(UsageError, match="--max-parallel must be at least 1"):
        executors.choose("local", max_parallel=0)
    monkeypatch.setattr("yoco_cli.executors.local.usable_cores", lambda: 2)
    assert executors.auto_name("cpu", tasks=73, seconds=600, max_parallel=None) == "local"
    assert executors.auto_name("cpu", tasks=73, seconds=2, max_parallel=None) == "serial"  # workers cost more
    assert executors.auto_name("cpu", tasks=1, seconds=600, max_parallel=None) == "serial"
    assert executors.auto_name("cuda", tasks=73, seconds=600, max_parallel=None) == "serial"  # engine stacks
    assert executors.auto_name("cpu", tasks=73, seconds=600, max_parallel=1) == "serial"
    assert [executors.gpu_share(s) for s in (8, 32, 64, 224)] == [0.125, 0.125, 0.25, 1.0]
