"""`yoco cache ls | info | rm` as people read them: artifacts (not per-run rows), totals, plans."""
from __future__ import annotations

import pytest


@pytest.fixture
def stored(cli):
    """A set, its 2-seed dynamics, its scores, a pruned group of 2 sets and one evaluation."""
    for args in (["condense", "digits", "--ipc", "10", "--method", "random"],
                 ["dynamics", "digits/random/ipc10", "--seeds", "2", "--epochs", "3"],
                 ["prune", "digits/random/ipc10", "--to", "1", "--metric", "lbpe"],
                 ["eval", "digits/random/ipc10@lbpe-easy-balanced-ipc1-run0", "--repeats", "1", "--epochs", "2"]):
        r = cli(*args)
        assert r.exit_code == 0, (args, r.stderr)


def test_ls_lists_artifacts_with_a_deduplicated_total(cli, stored):
    from yoco_cli.store import Store

    doc = cli("cache", "ls", "--json").json()
    stages = sorted(r["stage"] for r in doc["artifacts"])
    assert stages == ["condense", "dynamics", "eval", "prune-group", "score"]  # no per-seed, per-run rows
    dyn = next(r for r in doc["artifacts"] if r["stage"] == "dynamics")
    assert dyn["parts"] == 2 and dyn["name"] == "digits/random/ipc10@dynamics"
    every = cli("cache", "ls", "--all", "--json").json()["artifacts"]
    assert {"dynamics-run", "eval-run", "prune"} <= {r["stage"] for r in every} and len(every) == 10  # 2 seeds, 2 prune runs, 1 repeat
    runs = Store().all_runs(None)
    objects = {o["digest"]: o["size"] for m in runs for o in m.outputs.values()}
    assert doc["total_bytes"] == sum(objects.values()) < sum(m.size for m in runs)  # groups share objects

    by_size = cli("cache", "ls", "--sort", "size", "--json").json()["artifacts"]
    assert [r["size"] for r in by_size] == sorted((r["size"] for r in by_size), reverse=True)
    ev = next(r for r in doc["artifacts"] if r["stage"] == "eval")
    assert "%" in ev["summary"] and "(n=1)" in ev["summary"] and ev["name"] == ev["key"][:12]


def test_ls_in_a_pipe_keeps_whole_names_and_writes_csv(cli, stored):
    text = cli("cache", "ls").stdout
    assert "digits/random/ipc10@lbpe-easy-balanced-ipc1 " in text and "…" not in text
    assert "5 artifacts;" in text and "each counted once" in text
    lines = cli("cache", "ls", "--format", "csv").stdout.splitlines()
    assert lines[0] == "stage,name,key,size,parts,created,summary" and len(lines) == 6
    bad = cli("cache", "ls", "--sort", "age")
    assert bad.exit_code == 2 and "--sort 'age'" in bad.stderr


def test_rm_shows_the_plan_with_dependents_and_bytes_and_confirms(cli, stored):
    from yoco_cli.store import Store

    before = len(Store().all_runs(None))
    plan = cli("cache", "rm", "digits/random/ipc10@dynamics", "--dry-run", "--json").json()
    assert len(plan["parts"]) == 2  # the per-seed runs
    deps = " ".join(plan["dependents"])
    assert "digits/random/ipc10@scores" in deps and "lbpe-easy-balanced-ipc1-run0" in deps and "eval " in deps
    assert plan["bytes"] > 0 and plan["objects"]
    assert len(Store().all_runs(None)) == before  # a dry run deletes nothing

    refused = cli("cache", "rm", "digits/random/ipc10@dynamics")  # no terminal, no --yes
    assert refused.exit_code == 2 and "pass --yes" in refused.stderr
    assert len(Store().all_runs(None)) == before

    done = cli("cache", "rm", "digits/random/ipc10@dynamics", "--yes", "--json").json()
    assert len(done["deleted"]["runs"]) == 1 + len(plan["parts"]) + len(plan["dependents"])
    left = {m.stage for m in Store().all_runs(None)}
    assert left == {"condense"}  # the set itself does not depend on its dynamics
    assert cli("cache", "verify").exit_code == 0


def test_info_names_inputs_by_what_made_them(cli, stored):
    r = cli("cache", "info", "digits/random/ipc10@scores")
    assert r.exit_code == 0
    assert "input set" in r.stdout and "digits/random/ipc10 (condense" in r.stdout
    assert "param " in r.stdout and "meta info.el2n" in r.stdout  # one row per field, not one JSON blob
    doc = cli("cache", "info", "digits/random/ipc10@scores", "--json").json()
    assert doc["made_from"]["set"].startswith("digits/random/ipc10 (condense ")
