"""Reuse before recompute: prune/score/pipeline take the dynamics the store holds for a set, say
which in one line, and train only when nothing fits (announced, with an estimate)."""
from __future__ import annotations

import hashlib
import pickle

import pytest
import torch
from test_dynamics import (
    fabricate_records,  # the reference's record layout, written once
)


def write_td(path, n: int, epochs: int, seed: int = 0) -> bytes:
    with open(path, "wb") as f:
        pickle.dump({"data-name": "cifar10", "training_dynamics": fabricate_records(n, epochs=epochs, b=64, seed=seed)}, f)
    return path.read_bytes()


@pytest.fixture
def cifar_set(cli, tmp_path):
    """A CIFAR-10-shaped IDC set in the store (100 stored 32x32 images, f=2: 400 decoded)."""
    g = torch.Generator().manual_seed(0)
    data = torch.rand(100, 3, 32, 32, generator=g)
    labels = torch.arange(10).repeat_interleave(10)
    path = tmp_path / "data.pt"
    torch.save([data, labels], path)
    r = cli("import", path, "--dataset", "cifar10", "--format", "idc", "--name", "idc/cifar10/ipc10")
    assert r.exit_code == 0, r.stderr
    return "idc/cifar10/ipc10"


@pytest.fixture
def no_training(monkeypatch):
    from yoco_cli.nn import engine

    def refuse(*a, **k):
        raise AssertionError("engine.train was called: something trained")

    monkeypatch.setattr(engine, "train", refuse)


def test_prune_uses_imported_reference_dynamics_without_training(cli, cifar_set, tmp_path, monkeypatch):
    td = tmp_path / "td-ipc10.pickle"
    write_td(td, 400, epochs=20)
    r = cli("dynamics", cifar_set, "--from-file", td)
    assert r.exit_code == 0, r.stderr
    from yoco_cli.nn import engine

    monkeypatch.setattr(engine, "train", lambda *a, **k: pytest.fail("prune trained dynamics"))
    r = cli("prune", "--from", "10", "--to", "1", "--metric", "lbpe", "--balanced")
    assert r.exit_code == 0, r.stderr
    line = next(x for x in r.stderr.splitlines() if x.startswith("dynamics: "))
    assert line.startswith("dynamics: idc/cifar10/ipc10@dynamics (dynamics of 400 decoded images, 1 seed(s) x 20 "
                           "epochs") and line.endswith("stored: nothing to train")
    assert "idc/cifar10/ipc10@lbpe-easy-balanced-ipc1" in r.stdout


def test_prune_after_a_short_dynamics_run_reuses_it_and_the_scores_name_follows(cli, monkeypatch):
    assert cli("condense", "digits", "--ipc", "2", "--method", "random").exit_code == 0
    assert cli("dynamics", "digits/random/ipc2", "--seeds", "1", "--epochs", "2").exit_code == 0
    from yoco_cli.nn import engine

    monkeypatch.setattr(engine, "train", lambda *a, **k: pytest.fail("prune trained dynamics"))
    r = cli("prune", "digits/random/ipc2", "--to", "1", "--metric", "lbpe")
    assert r.exit_code == 0, r.stderr
    line = next(x for x in r.stderr.splitlines() if x.startswith("dynamics: "))
    assert "digits/random/ipc2@dynamics" in line and "1 seed(s) x 2 epochs" in line
    assert line.endswith("(the preset's 3 seeds x 100 epochs: --dynamics-seeds 3 --dynamics-epochs 100)")
    from yoco_cli.store import Store

    store = Store(None)
    refs = store.refs()
    scores = store.load_run(*refs["digits/random/ipc2@scores"])
    dyn = store.load_run(*refs["digits/random/ipc2@dynamics"])
    assert dyn.digest("seed0/stats") in scores.inputs.values()  # SET@scores are the scores of SET@dynamics


def test_explicit_dynamics_options_train_that_run_and_say_so(cli):
    assert cli("condense", "digits", "--ipc", "2", "--method", "random").exit_code == 0
    assert cli("dynamics", "digits/random/ipc2", "--seeds", "1", "--epochs", "2").exit_code == 0
    r = cli("prune", "digits/random/ipc2", "--to", "1", "--metric", "lbpe", "--dynamics-epochs", "3",
            "--dynamics-seeds", "1")
    assert r.exit_code == 0, r.stderr
    assert "training dynamics of digits/random/ipc2: 1 seed(s) x 3 epochs of convnet:depth=2,width=64" in r.stderr
    assert "name digits/random/ipc2@dynamics now points to dynamics" in r.stderr


def test_dynamics_that_lack_what_the_metric_needs_are_passed_over_with_a_reason(cli, cifar_set, tmp_path):
    from yoco_cli.stages import dynamics as dynamics_stage
    from yoco_cli.stages.importing import resolve_set
    from yoco_cli.store import Store

    td = tmp_path / "td-ipc10.pickle"
    write_td(td, 400, epochs=3)
    assert cli("dynamics", cifar_set, "--from-file", td).exit_code == 0
    store = Store(None)
    m, _ = resolve_set(store, cifar_set)
    picked, skipped = dynamics_stage._stored_pick(store, m, min_seeds=1, needs_model=True)
    assert picked is None
    assert skipped == ["not using stored dynamics idc/cifar10/ipc10@dynamics: no final weights (this metric needs them)"]
    picked, skipped = dynamics_stage._stored_pick(store, m, min_seeds=3, needs_model=False)
    assert picked is None and skipped == ["not using stored dynamics idc/cifar10/ipc10@dynamics: 1 seed(s), 3 needed"]


def test_fetched_reference_dynamics_are_read_for_their_set(cli, cifar_set, tmp_path, monkeypatch, no_training):
    from loopback import Loopback

    from yoco_cli.remote import registry
    from yoco_cli.stages import downloads

    bodies = [write_td(tmp_path / f"td{k}.pickle", 400, epochs=3, seed=k) for k in (1, 2)]
    with Loopback() as srv:
        lines = []
        for k, body in zip((1, 2), bodies):
            url = srv.add(f"/r{k}/td-ipc10.pickle", body)
            lines.append(f"reproduce_{k}/idc/cifar10/ipc10/td sha256:{hashlib.sha256(body).hexdigest()} {url} "
                         f"kind=dynamics set=idc/cifar10/ipc10 dataset=cifar10 ipc=10")
        reg = tmp_path / "registry.txt"
        reg.write_text("\n".join(lines) + "\n")
        monkeypatch.setenv("YOCO_REGISTRY", str(reg))
        monkeypatch.delenv("YOCO_OFFLINE", raising=False)
        from yoco_cli.store import Store

        store = Store(None)
        entries = {e.name: e for e in registry.load()}
        for k in (1, 2):  # what `yoco fetch reproduce_1 idc cifar10` leaves in the store (reproduce_3 is not)
            downloads.ensure_download(store, entries[f"reproduce_{k}/idc/cifar10/ipc10/td"], downloads.Options(timeout=5.0))
    monkeypatch.setenv("YOCO_OFFLINE", "1")
    r = cli("prune", cifar_set, "--to", "1", "--metric", "lbpe")
    assert r.exit_code == 0, r.stderr
    line = next(x for x in r.stderr.splitlines() if x.startswith("dynamics: "))
    assert line == ("dynamics: idc/cifar10/ipc10@dynamics, read from the fetched reproduce_1/idc/cifar10/ipc10/td, "
                    "reproduce_2/idc/cifar10/ipc10/td: nothing to train")
