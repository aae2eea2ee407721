"""Soak: many `yoco` processes on one cache, random SIGKILLs, a gc loop; nothing lost, nothing wrong.

    python benchmarks/soak.py                        # 8 processes for 3 minutes
    python benchmarks/soak.py --minutes 5 --kill 0.4 --seed 1

1. A quiet run: every command of the pool below, once each, one after another, in a fresh cache.
   Its names and output digests are what every result must equal.
2. The soak: a second fresh cache; `--concurrency` yoco processes at all times, each a random command
   of the pool; with probability `--kill` a process gets SIGKILL: half of those at a random moment,
   half once it is staging outputs (its `tmp/stage-PID-*` folder exists: computing or committing);
   a loop runs `yoco cache gc` (another process) without pause the whole time.
0. Threads (before the rest, in a cache of their own): `--threads` threads of this process commit
   results through the store API while `--gc-threads` threads of it loop `Store(home).gc()`, for
   `--thread-seconds`; every committed run must keep its output with its bytes, and verify stays clean
   (`--threads-only` runs just this phase: `python benchmarks/soak.py --threads-only --thread-seconds 5`).
3. Then: a last gc, `yoco cache verify` (must exit 0), and every name in the soak cache is compared
   with the quiet run's: same run key, same output digests. A name that a process reported as
   written (exit 0) and that is gone is "lost"; a name whose outputs differ is "wrong".

The pool (all deterministic on one device and thread count): imports of four fabricated CIFAR-10
shaped sets, random and herding condensations of digits, random prunes of them (which need their
condensed set: when it is not there yet the prune fails with exit 2, which is fine), scores with
tiny dynamics (training), and evaluations of two epochs. Allowed exits: 0, 2 (an input not made yet),
-9 (our SIGKILL). Anything else is reported as a failure.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pool(files: list[Path]) -> list[list[str]]:
    cmds = [["import", str(f), "--dataset", "cifar10", "--name", f"soak/imp{i}"] for i, f in enumerate(files)]
    for s in range(3):
        cmds.append(["condense", "digits", "--ipc", "2", "--method", "random", "--seed", str(s), "--name",
                     f"soak/rand{s}"])
        cmds.append(["prune", f"soak/rand{s}", "--to", "1", "--metric", "random", "--seed", "7"])
        cmds.append(["score", f"soak/rand{s}", "--dynamics-epochs", "2", "--dynamics-seeds", "1"])
        cmds.append(["eval", f"soak/rand{s}", "--epochs", "2", "--repeats", "1"])
    cmds.append(["condense", "digits", "--ipc", "2", "--method", "herding", "--name", "soak/herd"])
    cmds.append(["prune", "soak/herd", "--to", "1", "--metric", "random"])
    return cmds


def fabricate(folder: Path, n: int = 4) -> list[Path]:
    import torch

    out = []
    for i in range(n):
        p = folder / f"set{i}.pt"
        x = torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(i))
        torch.save([x, torch.arange(10).repeat_interleave(2)], p)
        out.append(p)
    return out


def env_for(home: Path) -> dict:
    env = {**os.environ, "YOCO_HOME": str(home), "OMP_NUM_THREADS": "1", "YOCO_OFFLINE": "1", "NO_COLOR": "1"}
    env.pop("YOCO_TEST_IMPORT_PAUSE", None)
    return env


def yoco(home: Path, args: list[str], stdout=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "yoco_cli", "-q", *args], env=env_for(home),
                            stdout=stdout, stderr=subprocess.PIPE, text=True)


def snapshot(home: Path) -> dict[str, dict]:
    """name -> {stage, key, outputs: {output: digest}} for every name in a cache."""
    from yoco_cli.store import Store

    store = Store(home)
    out = {}
    for name, (stage, key) in store.refs().items():
        m = store.load_run(stage, key, require_objects=False)
        out[name] = {"stage": stage, "key": key,
                     "outputs": None if m is None else {k: o["digest"] for k, o in sorted(m.outputs.items())},
                     "objects_present": m is not None and all(store.has_object(o["digest"]) for o in m.outputs.values())}
    return out


def quiet_run(home: Path, cmds: list[list[str]]) -> dict[str, dict]:
    for args in cmds:  # the pool is in dependency order
        p = yoco(home, args)
        err = p.stderr.read()
        if p.wait() != 0:
            raise SystemExit(f"quiet run failed: yoco {' '.join(args)}: {err.strip()}")
    return snapshot(home)


def gc_loop(home: Path, stop: threading.Event, stats: dict) -> None:
    try:
        _gc_passes(home, stop, stats)
    except Exception as e:  # noqa: BLE001  a crash of the loop itself must show in the summary, not vanish with the thread
        stats["failures"].append(f"gc loop: {type(e).__name__}: {e}")


def _gc_passes(home: Path, stop: threading.Event, stats: dict) -> None:
    while not stop.is_set():
        p = yoco(home, ["--json", "cache", "gc"], stdout=subprocess.PIPE)
        out, err = p.communicate()
        stats["passes"] += 1
        if p.returncode != 0:
            stats["failures"].append(err.strip()[-300:])
        else:
            doc = json.loads(out)
            stats["objects_deleted"] += len(doc["objects"])
            stats["tmp_deleted"] += len(doc["tmp"])
            stats["locks_deleted"] += len(doc["locks"])


def soak(home: Path, cmds: list[list[str]], minutes: float, concurrency: int, kill_p: float,
         rng: random.Random) -> dict:
    stats = {"passes": 0, "failures": [], "objects_deleted": 0, "tmp_deleted": 0, "locks_deleted": 0}
    stop = threading.Event()
    gc = threading.Thread(target=gc_loop, args=(home, stop, stats))
    gc.start()
    running: list[tuple[subprocess.Popen, list[str], float | None]] = []
    launched, killed, exits, reported, kinds = 0, 0, {}, set(), {"timer": 0, "staged": 0}
    bad: list[str] = []
    deadline = time.monotonic() + minutes * 60
    while time.monotonic() < deadline or running:
        while time.monotonic() < deadline and len(running) < concurrency:
            args = rng.choice(cmds)
            kill = None
            if rng.random() < kill_p:  # half at a random moment, half once the process is staging outputs
                kill = ("timer", time.monotonic() + rng.uniform(0.3, 30.0)) if rng.random() < 0.5 else \
                    ("staged", rng.uniform(0.0, 0.5))
            running.append((yoco(home, args), args, kill))
            launched += 1
        time.sleep(0.05)
        still = []
        for p, args, kill in running:
            if p.poll() is None:
                if kill is not None and _due(kill, p, home):
                    p.send_signal(signal.SIGKILL)
                    killed += 1
                    kinds[kill[0]] += 1
                    kill = None
                still.append((p, args, kill))
                continue
            err = p.stderr.read()
            exits[p.returncode] = exits.get(p.returncode, 0) + 1
            if p.returncode == 0:
                reported.add(tuple(args))
            elif p.returncode not in (2, -9):
                bad.append(f"exit {p.returncode}: yoco {' '.join(args)}: {err.strip()[-300:]}")
            elif p.returncode == 2 and not re.search(r"no [a-z ]+ named '", err):  # only: input not made yet
                bad.append(f"exit 2: yoco {' '.join(args)}: {err.strip()[-300:]}")
        running = still
    stop.set()
    gc.join()
    return {"launched": launched, "killed": killed, "kill_kinds": kinds, "exits": exits, "reported": reported,
            "bad": bad, "gc": stats}


def _due(kill: tuple, p: subprocess.Popen, home: Path) -> bool:
    """A timer kill is due at its time; a "staged" kill once the process has a staging folder (it is
    computing or committing outputs), after a random extra delay."""
    kind, when = kill
    if kind == "timer":
        return time.monotonic() >= when
    if not any((home / "tmp").glob(f"stage-{p.pid}-*")):
        return False
    time.sleep(when)
    return True


def refs_of(args: tuple, quiet: dict) -> list[str]:
    """The names a command writes (as the quiet run shows them)."""
    a = list(args)
    if "--name" in a:
        return [a[a.index("--name") + 1]]
    if a[0] == "prune":
        return [n for n in quiet if n.startswith(a[1] + "@") and n.endswith("-ipc1") and "random" in n]
    if a[0] == "score":
        return [f"{a[1]}@scores", f"{a[1]}@dynamics"]
    return []  # eval writes no name: its runs are compared through the manifests below


def _thread_result(i: int) -> bytes:
    return f"thread-soak result {i}\n".encode() * (1 + i % 7)


def _committer(home: Path, first: int, stop: threading.Event, out: dict) -> None:
    """Commit runs `first`, `first + 1`, ... through the store's own protocol until stopped."""
    from yoco_cli.store import StageResult, Store, run_cached

    i = first
    while not stop.is_set():
        def compute(tmp: Path, key: str, i=i) -> StageResult:
            (tmp / "out.bin").write_bytes(_thread_result(i))
            return StageResult({"out": tmp / "out.bin"})
        try:
            m, _ = run_cached(Store(home), "thread-soak", 1, {"i": i}, {}, compute)
            out["made"].append((i, m.stage, m.key))
        except Exception as e:  # noqa: BLE001 - every failure is a finding, reported in the summary
            out["errors"].append(f"commit {i}: {type(e).__name__}: {e}")
        i += 1_000_000  # each committer its own run numbers


def _collector(home: Path, stop: threading.Event, out: dict) -> None:
    from yoco_cli.store import Store

    while not stop.is_set():
        try:
            Store(home).gc()
            out["gc_passes"] += 1
        except Exception as e:  # noqa: BLE001
            out["errors"].append(f"gc: {type(e).__name__}: {e}")


def thread_soak(home: Path, seconds: float, committers: int, collectors: int) -> dict:
    """Threads of one process committing results while other threads of it run gc (issue 23: the store
    lock was shared by a process's threads, so gc deleted commits in flight). Every committed run must
    keep its output, with the bytes it was given."""
    from yoco_cli.store import Store

    out: dict = {"made": [], "errors": [], "gc_passes": 0}
    stop = threading.Event()
    threads = [threading.Thread(target=_committer, args=(home, n, stop, out)) for n in range(committers)]
    threads += [threading.Thread(target=_collector, args=(home, stop, out)) for _ in range(collectors)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    store = Store(home)
    lost, wrong = [], []
    for i, stage, key in out["made"]:
        m = store.load_run(stage, key)
        if m is None:
            lost.append(i)
        elif bytes(store.read_output(m, "out").data) != _thread_result(i):
            wrong.append(i)
    return {"committers": committers, "collectors": collectors, "commits": len(out["made"]),
            "gc_passes": out["gc_passes"], "errors": out["errors"][:10], "lost": lost, "wrong": wrong,
            "verify": store.verify()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--kill", type=float, default=0.35, help="probability that a process gets SIGKILL")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the two caches (their paths are printed)")
    ap.add_argument("--threads", type=int, default=4, help="threads committing results in one process ...")
    ap.add_argument("--gc-threads", type=int, default=2, help="... while threads of it loop gc")
    ap.add_argument("--thread-seconds", type=float, default=20.0)
    ap.add_argument("--threads-only", action="store_true", help="only the threads phase (a short check)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="yoco-soak-"))
    threads = thread_soak(base / "threads", args.thread_seconds, args.threads, args.gc_threads)
    threads_ok = not (threads["errors"] or threads["lost"] or threads["wrong"] or threads["verify"])
    print(f"threads: {threads['commits']} commits by {args.threads} threads while {args.gc_threads} threads ran "
          f"{threads['gc_passes']} gc passes: {len(threads['lost'])} lost, {len(threads['wrong'])} wrong, "
          f"{len(threads['errors'])} errors, verify {'clean' if not threads['verify'] else threads['verify'][:3]}"
          f" -> {'PASS' if threads_ok else 'FAIL'}")
    if args.threads_only:
        subprocess.run(["chmod", "-R", "u+w", str(base)], check=False)
        import shutil

        shutil.rmtree(base, ignore_errors=True)
        sys.exit(0 if threads_ok else 1)
    cmds = pool(fabricate(base))
    t0 = time.perf_counter()
    quiet = quiet_run(base / "quiet", cmds)
    t_quiet = time.perf_counter() - t0
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), os.times()
    res = soak(base / "soak", cmds, args.minutes, args.concurrency, args.kill, rng)
    t_soak, c1 = time.perf_counter() - t0, os.times()
    load1 = os.getloadavg()[0]
    final_gc = subprocess.run([sys.executable, "-m", "yoco_cli", "--json", "cache", "gc"], env=env_for(base / "soak"),
                              capture_output=True, text=True, check=False)
    verify = subprocess.run([sys.executable, "-m", "yoco_cli", "--json", "cache", "verify"],
                            env=env_for(base / "soak"), capture_output=True, text=True, check=False)
    got = snapshot(base / "soak")
    quiet_runs = _run_outputs(base / "quiet")
    soak_runs = _run_outputs(base / "soak")
    lost = sorted({n for a in res["reported"] for n in refs_of(a, quiet)
                   if n not in got or not got[n]["objects_present"]})
    wrong = sorted(n for n, v in got.items() if n in quiet and (v["key"], v["outputs"]) != (quiet[n]["key"],
                                                                                           quiet[n]["outputs"]))
    unknown = sorted(n for n in got if n not in quiet)
    runs_wrong = sorted(k for k, outs in soak_runs.items() if k in quiet_runs and outs != quiet_runs[k])
    runs_unknown = sorted(k for k in soak_runs if k not in quiet_runs)
    summary = {
        "processes": res["launched"], "concurrency": args.concurrency, "killed": res["killed"],
        "kills": res["kill_kinds"],
        "exits": {str(k): v for k, v in sorted(res["exits"].items())}, "unexpected_exits": res["bad"],
        "gc_passes": res["gc"]["passes"], "gc_failures": res["gc"]["failures"],
        "gc_deleted": {"objects": res["gc"]["objects_deleted"], "staging": res["gc"]["tmp_deleted"],
                       "stale_locks": res["gc"]["locks_deleted"]},
        "final_gc_exit": final_gc.returncode, "verify_exit": verify.returncode,
        "verify": json.loads(verify.stdout) if verify.stdout.strip() else verify.stderr.strip(),
        "names_checked": len(got), "runs_checked": len(soak_runs), "lost": lost, "wrong": wrong + runs_wrong,
        "unknown": unknown + runs_unknown,
        "minutes": round(t_soak / 60, 2), "quiet_run_s": round(t_quiet, 1),
        "children_cpu_s": round((c1.children_user + c1.children_system) - (c0.children_user + c0.children_system), 1),
        "load_average": [round(load0, 2), round(load1, 2)], "cpu_count": os.cpu_count(),
        "threads": {k: v for k, v in threads.items() if k != "verify"} | {"verify_problems": threads["verify"]},
    }
    print(json.dumps(summary, indent=1))
    ok = (not summary["lost"] and not summary["wrong"] and not summary["unexpected_exits"]
          and not summary["gc_failures"] and verify.returncode == 0 and final_gc.returncode == 0 and threads_ok)
    print(f"soak: {summary['processes']} yoco processes ({args.concurrency} at a time) for {summary['minutes']} min, "
          f"{summary['killed']} SIGKILLs, {summary['gc_passes']} gc passes; {summary['names_checked']} names and "
          f"{summary['runs_checked']} runs checked against a quiet run: {len(summary['lost'])} lost, "
          f"{len(summary['wrong'])} wrong; verify exit {verify.returncode} -> {'PASS' if ok else 'FAIL'}")
    if not args.keep:
        import shutil

        for d in (base,):
            subprocess.run(["chmod", "-R", "u+w", str(d)], check=False)
            shutil.rmtree(d, ignore_errors=True)
    else:
        print(f"caches kept: {base / 'quiet'} {base / 'soak'}")
    sys.exit(0 if ok else 1)


def _run_outputs(home: Path) -> dict[str, dict]:
    """stage/key -> output digests, for every committed run (eval runs have no name)."""
    from yoco_cli.store import Store

    return {f"{m.stage}/{m.key}": {k: o["digest"] for k, o in sorted(m.outputs.items())}
            for m in Store(home).all_runs()}


if __name__ == "__main__":
    main()
