"""Reliability: damaged bytes in the store never become a clean-looking result (docs/reliability.md).

Every object is checked against its digest when a stage reads it; a mismatch is one line, exit 3,
naming the artifact and the command that made it, and the object is quarantined so the next run
recomputes it. Issue 12's failures 1 (a flipped byte is used without a word) and 2 (following
verify's advice made a bad result permanent) are tested here against the CLI.
"""
from __future__ import annotations

import json
import shutil

import pytest

SET = "digits/random/ipc2"
FAST = ["--dynamics-epochs", "3", "--dynamics-seeds", "1"]


def flip_middle_byte(store, digest: str) -> None:
    p = store.object_path(digest)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.chmod(0o644)
    p.write_bytes(bytes(data))


def ok(r):
    assert r.exit_code == 0, r.stderr
    return r


def one_line_integrity_error(r, *words):
    assert r.exit_code == 3, (r.exit_code, r.stderr)
    lines = r.stderr.splitlines()
    assert [x for x in lines if x.startswith("error:")] == lines[-1:], r.stderr  # one line, the last
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[-1], (w, r.stderr)


def pruned_digest(cli, store, *extra) -> str:
    r = ok(cli("--json", "prune", SET, "--to", "1", *FAST, *extra))
    return store.resolve(r.json()["results"][0]["ref"]).digest("set")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Made once per module: a condensed set with its (tiny) dynamics and scores, and the digest of its
    clean IPC-1 pruned set. Each test works on its own copy of this home."""
    import os

    from conftest import invoke_cli

    from yoco_cli.cli import common
    from yoco_cli.store import Store

    home = tmp_path_factory.mktemp("reliability") / "home"
    old = os.environ.get("YOCO_HOME")
    os.environ["YOCO_HOME"] = str(home)
    common.state.home, common.state.store = None, None
    try:
        ok(invoke_cli("condense", "digits", "--ipc", "2", "--method", "random"))
        ok(invoke_cli("score", SET, *FAST))
        r = ok(invoke_cli("--json", "prune", SET, "--to", "1", *FAST))
        digest = Store(home).resolve(r.json()["results"][0]["ref"]).digest("set")
    finally:
        os.environ["YOCO_HOME"] = old or ""
        common.state.home, common.state.store = None, None
    return home, digest


@pytest.fixture
def scored(template, yoco_home):
    shutil.copytree(template[0], yoco_home, dirs_exist_ok=True)
    return template[1]


@pytest.mark.parametrize("kind", ["set", "scores"])
def test_a_flipped_byte_in_an_input_of_prune_is_refused_then_recomputed(cli, store, scored, kind):
    """Failure 1: prune on a damaged set (or scores) exited 0 with a different pruned set."""
    m = store.resolve(SET) if kind == "set" else store.resolve(f"{SET}@scores")
    digest = m.digest(kind)
    flip_middle_byte(store, digest)
    r = cli("prune", SET, "--to", "1", *FAST)
    producer = "yoco condense" if kind == "set" else "yoco score"
    one_line_integrity_error(r, "is damaged", digest[:12], producer)
    assert not store.has_object(digest) and [p.name for p in store.quarantined()] == [digest]
    if kind == "set":  # a user-made set: the error named the command that makes it again
        r = cli("prune", SET, "--to", "1", *FAST)
        one_line_integrity_error(r, "quarantine", "yoco condense digits --ipc 2 --method random")
        ok(cli("condense", "digits", "--ipc", "2", "--method", "random"))
    else:  # scores are made on the way: the same prune recomputes them
        ok(cli("score", SET, *FAST))
    assert store.has_object(digest)  # the same bytes again, under the same digest
    assert pruned_digest(cli, store) == scored


@pytest.mark.parametrize("output", ["seed0/stats", "seed0/model"])
def test_damaged_dynamics_are_refused_then_recomputed(cli, store, scored, output):
    """Scores computed from dynamics whose stats or final weights were damaged on disk."""
    r = ok(cli("--json", "score", SET, *FAST, "--k", "2", "--stop-epoch", "2"))
    clean = store.resolve(r.json()["key"]).digest("scores")
    ok(cli("cache", "rm", r.json()["key"], "--yes"))
    digest = store.resolve(f"{SET}@dynamics").digest(output)
    flip_middle_byte(store, digest)
    r = cli("score", SET, *FAST, "--k", "2", "--stop-epoch", "2")
    one_line_integrity_error(r, "is damaged", digest[:12], "quarantine")
    r = ok(cli("--json", "score", SET, *FAST, "--k", "2", "--stop-epoch", "2"))  # dynamics recomputed
    assert store.resolve(r.json()["key"]).digest("scores") == clean
    assert cli("cache", "verify").exit_code == 0


def test_following_verify_advice_never_serves_a_result_of_damaged_bytes(cli, store, scored):
    """Failure 2: rm + recompute of a damaged set, then prune answered `cached: true` with the pruned
    set computed from the damaged bytes, because its key holds the input's recorded digest."""
    ok(cli("cache", "rm", f"{SET}@lbpe-easy-balanced-ipc1", "--yes"))
    digest = store.resolve(SET).digest("set")
    flip_middle_byte(store, digest)
    cli("prune", SET, "--to", "1", *FAST)  # old yoco computed and stored a wrong set here
    assert cli("cache", "verify").exit_code == 3  # reports the damage (quarantined by now)
    ok(cli("cache", "rm", SET, "--yes"))  # what verify used to advise (its dependents go too), then recompute
    ok(cli("condense", "digits", "--ipc", "2", "--method", "random"))
    r = ok(cli("--json", "prune", SET, "--to", "1", *FAST))
    assert store.resolve(r.json()["results"][0]["ref"]).digest("set") == scored
    assert cli("cache", "verify").exit_code == 0


def test_every_reader_checks_what_it_reads(cli, store, scored, tmp_path):
    """The pruned set's kept indices (written by --indices) and the group manifest's copies."""
    ref = f"{SET}@lbpe-easy-balanced-ipc1"
    m = store.resolve(ref)
    flip_middle_byte(store, m.digest("indices"))
    r = cli("prune", SET, "--to", "1", *FAST, "--indices", tmp_path / "kept.json")
    one_line_integrity_error(r, "'indices'", "is damaged")
    assert not (tmp_path / "kept.json").exists()
    from yoco_cli.errors import IntegrityError
    from yoco_cli.stages.sets import load_set

    flip_middle_byte(store, m.digest("set"))
    with pytest.raises(IntegrityError, match="does not match its digest"):
        load_set(store, m)


def test_tensors_read_from_the_store_are_the_bytes_hashed(store, tmp_path):
    """A verified blob is parsed in place: its tensors are views of the very buffer that was hashed."""
    import torch

    from yoco_cli import tensors
    from yoco_cli.errors import IntegrityError

    ts = {"a": torch.arange(5, dtype=torch.float16), "b": torch.ones(3, 2, dtype=torch.int64),
          "c": torch.tensor([True, False]), "e": torch.zeros(0, 4)}
    path = tensors.save(tmp_path / "x.safetensors", ts, {"k": 1})
    digest, _ = store.put_file(path)
    blob = store.read_object(digest)
    got, meta = tensors.load(blob)
    assert meta == {"k": 1} and all(torch.equal(got[k], ts[k]) for k in ts)
    base = torch.frombuffer(blob.data, dtype=torch.uint8).data_ptr()
    assert base <= got["b"].data_ptr() < base + len(blob)
    bad = bytearray(blob.data)
    bad[0] = 0xFF  # a header length past the end of the file
    from yoco_cli.store.store import Blob

    with pytest.raises(IntegrityError, match="not a readable safetensors"):
        tensors.load(Blob(bad, "a bad blob", digest))


def test_a_damaged_checkpoint_is_not_resumed_from(tmp_path):
    """Checkpoints carry no digest in their name: they are sealed, and a broken seal starts over."""
    import torch

    from yoco_cli.nn.engine import Checkpoint

    ck = Checkpoint(tmp_path, 0)
    ck.save({"w": torch.arange(64, dtype=torch.float32)}, {"epoch": 3})
    assert ck.load()[1] == {"epoch": 3}
    data = bytearray(ck.path.read_bytes())
    data[-10] ^= 0x40
    ck.path.write_bytes(bytes(data))
    assert ck.load() is None


def test_a_file_that_changes_while_it_is_imported_is_refused(store, tmp_path, monkeypatch):
    """The import key holds the digest of the bytes read: a file rewritten mid-read is refused."""
    import torch

    from yoco_cli.data import formats
    from yoco_cli.errors import IntegrityError
    from yoco_cli.stages.importing import import_file

    p = tmp_path / "data.pt"
    torch.save([torch.rand(20, 3, 32, 32), torch.arange(10).repeat_interleave(2)], p)
    real_load = formats.load

    def load_then_rewrite(*a, **kw):
        out = real_load(*a, **kw)
        torch.save([torch.zeros(20, 3, 32, 32), torch.arange(10).repeat_interleave(2)], p)  # a writer
        return out

    monkeypatch.setattr("yoco_cli.stages.importing.load", load_then_rewrite)
    with pytest.raises(IntegrityError, match="changed while yoco was reading it"):
        import_file(store, p, dataset="cifar10")
    assert store.all_runs() == []


def test_verify_reports_quarantine_and_the_command_to_recompute(cli, store, scored):
    digest = store.resolve(SET).digest("set")
    flip_middle_byte(store, digest)
    r = cli("--json", "cache", "verify")
    assert r.exit_code == 3
    problems = r.json()["problems"]
    assert any("corrupted" in p and "quarantine" in p for p in problems), problems
    r = cli("--json", "cache", "verify")
    assert any("damaged copy is in quarantine" in p and "yoco condense digits" in p for p in r.json()["problems"])
    r = ok(cli("--json", "cache", "gc"))
    assert r.json()["quarantine"] == [digest] and store.quarantined() == []
    assert json.loads(cli("--json", "cache", "info", SET).stdout)["outputs"]["set"]["digest"] == digest


def test_a_damaged_condense_checkpoint_is_dropped_and_the_run_starts_over(tmp_path):
    import torch

    from yoco_cli.condensation.common import Checkpointer

    ck = Checkpointer(tmp_path, "k" * 64, 5)
    ck.save({"images": torch.rand(4, 1, 8, 8)}, {"iteration": 5})
    assert ck.load()[1]["iteration"] == 5
    data = bytearray(ck.path.read_bytes())
    data[-3] ^= 0x08
    ck.path.write_bytes(bytes(data))
    assert ck.load() is None and not ck.path.exists()


def _store_with_a_run(store):
    from yoco_cli.store import StageResult, run_cached

    def compute(tmp, key):
        (tmp / "out.bin").write_bytes(b"a result")
        return StageResult({"out": tmp / "out.bin"})

    return run_cached(store, "linked", 1, {}, {}, compute, ref="mine/run")[0]


def _outside_folder(tmp_path):
    out = tmp_path / "outside"
    out.mkdir()
    for name in ("notes.txt", "a" * 64, "b" * 64 + ".1"):  # digest-named too: quarantine's own names
        (out / name).write_text("not yoco's")
    return out


@pytest.mark.parametrize("folder", ["quarantine", "tmp", "locks", "objects/sha256/ab", "refs/mine"])
def test_gc_refuses_a_store_folder_that_is_a_link_and_the_outside_files_survive(cli, store, tmp_path, folder):
    """Issue 23's case 3: with quarantine/ replaced by a link to a folder outside the home, `yoco cache
    gc` deleted every file in that folder. Now gc, verify and rm refuse (one line, exit 3) and touch
    nothing."""
    key = _store_with_a_run(store).key
    outside = _outside_folder(tmp_path)
    link = store.root / folder
    if link.exists():
        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside, target_is_directory=True)
    for args in (["cache", "gc"], ["cache", "verify"], ["cache", "rm", key], ["cache", "gc", "--dry-run"]):
        one_line_integrity_error(cli(*args), f"{folder} in the store", "symbolic link")
    assert sorted(p.name for p in outside.iterdir()) == sorted(["notes.txt", "a" * 64, "b" * 64 + ".1"])
    link.unlink()
    ok(cli("cache", "gc"))  # yoco makes the folder again


def test_gc_deletes_only_the_files_it_made(cli, store):
    """Files yoco never names (not digest-named, links) in objects/, quarantine/ and tmp/ are left alone."""
    _store_with_a_run(store)
    store.quarantine_dir.mkdir(exist_ok=True)
    strays = [store.quarantine_dir / "notes.txt", store.objects / "ab" / "README", store.tmp / "keep-me"]
    for p in strays:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("mine")
    (store.tmp / "keep-me").touch()
    import os
    import time

    old = time.time() - 7200
    os.utime(store.tmp / "keep-me", (old, old))
    ok(cli("cache", "gc"))
    assert all(p.read_text() == "mine" for p in strays)


def test_a_digest_that_is_not_a_digest_never_names_a_path(store):
    from yoco_cli.errors import IntegrityError

    with pytest.raises(IntegrityError, match="not a sha256 digest"):
        store.object_path("../../../../etc/passwd")


# -- issue 23, case 2: manifests are sealed (content-addressed) -----------------------------------
EVAL = ["eval", SET, "--epochs", "2", "--repeats", "2"]


@pytest.fixture(scope="module")
def evaluated_template(template, tmp_path_factory):
    """The module's template, evaluated too (eval and eval-run manifests to edit)."""
    import os

    from conftest import invoke_cli

    from yoco_cli.cli import common

    home = tmp_path_factory.mktemp("sealed") / "home"
    shutil.copytree(template[0], home)
    old = os.environ.get("YOCO_HOME")
    os.environ["YOCO_HOME"] = str(home)
    common.state.home, common.state.store = None, None
    try:
        best = ok(invoke_cli("--json", *EVAL)).json()
    finally:
        os.environ["YOCO_HOME"] = old or ""
        common.state.home, common.state.store = None, None
    return home, best


@pytest.fixture
def evaluated(evaluated_template, yoco_home):
    shutil.copytree(evaluated_template[0], yoco_home, dirs_exist_ok=True)
    return evaluated_template[1]


def _measured(rows: list) -> list:
    return [{k: v for k, v in r.items() if k != "cached"} for r in rows]


def _record(store, stage: str, index: int = 0):
    (p, *_) = sorted((store.runs / stage).glob("*.json"))[index:]
    return p, json.loads(p.read_text())


def edit_manifest(store, stage: str, path: list, value, index: int = 0) -> str:
    """Edit one field of a run's manifest as a person with a text editor would (valid JSON); its key."""
    p, record = _record(store, stage, index)
    obj = store.object_path(record["manifest"]) if "manifest" in record else p  # (old yoco: the record itself)
    doc = json.loads(obj.read_text())
    here = doc
    for part in path[:-1]:
        here = here[part]
    assert here[path[-1]] != value
    here[path[-1]] = value
    obj.chmod(0o644)
    obj.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return record["key"]


EDITS = {  # the six edits of issue 23 that `cache verify` passed
    "eval best_mean": ("eval", ["meta", "best_mean"], 0.9891),
    "eval-run accuracy": ("eval-run", ["meta", "best"], 0.99),
    "prune kept": ("prune", ["meta", "kept"], 39),
    "dynamics final_acc": ("dynamics-run", ["meta", "final_acc"], 0.99),
    "score lbpe k": ("score", ["meta", "info", "lbpe", 0, "k"], 2),
    "prune params": ("prune", ["params", "to"], 2),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_every_edit_of_a_manifest_is_found(cli, store, evaluated, edit):
    """Issue 23, case 2: 0 of 6 manifest edits were detected. A manifest is now an object named by its
    digest; the run's commit record names that digest, so an edit is a damaged object: exit 3 naming
    the run and the command that makes it again, and `cache verify` reports it."""
    stage, path, value = EDITS[edit]
    key = edit_manifest(store, stage, path, value)
    one_line_integrity_error(cli("cache", "info", key), f"the manifest of the {stage} run", key[:12],
                             "edited or damaged", "does not match its digest", "run `yoco ")
    r = cli("cache", "verify")
    assert r.exit_code == 3 and f"the manifest of the {stage} run" in r.stderr and key[:12] in r.stderr, r.stderr


def test_an_edited_eval_is_never_served(cli, store, evaluated):
    """`yoco eval` printed the edited 0.9891; now its stage finds the edit and measures again."""
    edit_manifest(store, "eval", ["meta", "best_mean"], 0.9891)
    again = ok(cli("--json", *EVAL)).json()
    assert _measured(again) == _measured(evaluated) and "0.9891" not in json.dumps(again)
    assert ok(cli("cache", "gc")) and ok(cli("cache", "verify"))


def test_a_record_naming_an_object_of_the_wrong_type_is_found(cli, store, evaluated):
    """A commit record pointed at another object (here the condensed set's): not a manifest, exit 3."""
    p, record = _record(store, "prune")
    record["manifest"] = store.resolve(SET).digest("set")
    p.write_text(json.dumps(record))
    one_line_integrity_error(cli("cache", "info", record["key"]), "is not a manifest")
    assert cli("cache", "verify").exit_code == 3


def _make_legacy(store) -> None:
    """Turn a store into the layout of yoco before sealing: manifests in the commit records."""
    for p in store.runs.glob("*/*.json"):
        record = json.loads(p.read_text())
        p.write_text(store.object_path(record["manifest"]).read_text())
    (store.root / "format").unlink()


def test_a_legacy_store_is_upgraded_in_place_and_an_edited_legacy_manifest_is_found(cli, store, evaluated):
    """Old stores stay readable: the first writable use seals their manifests in place. A legacy
    manifest whose parameters were edited no longer matches its key: it is not sealed, and reads as
    damaged (the stage recomputes it)."""
    from yoco_cli.store import Store

    _make_legacy(store)
    p, _ = _record(store, "prune")
    doc = json.loads(p.read_text())
    doc["params"]["to"] = 2
    p.write_text(json.dumps(doc))
    fresh = Store(store.root)
    assert fresh.upgrade() == len(list(store.runs.glob("*/*.json"))) - 1
    assert fresh.is_sealed() and "manifest" in json.loads(_record(store, "eval")[0].read_text())
    r = cli("cache", "verify")
    assert r.exit_code == 3 and "prune run" in r.stderr and "not covered by a digest" in r.stderr, r.stderr
    assert _measured(ok(cli("--json", *EVAL)).json()) == _measured(evaluated)  # served from the upgraded store, nothing trained
