"""`yoco prune` and `yoco score` end to end on a real digits condensed set (IPC 10, factor 2)."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

TINY = ("--dynamics-epochs", "3", "--dynamics-seeds", "1")  # keeps the recorded training to ~1 s


def make_set(store, name="digits/test/ipc10", ipc=10, per_class_offset=0):
    """A class-sorted digits set of real images, stored like an imported IDC set (f = 2)."""
    import torch

    from yoco_cli.data.condensed import CondensedSet
    from yoco_cli.data.digits import load_digits
    from yoco_cli.stages.sets import set_result
    from yoco_cli.store import run_cached

    ds = load_digits()
    idx = torch.cat([torch.nonzero(ds.train_y == c).flatten()[per_class_offset:per_class_offset + ipc]
                     for c in range(10)])
    cset = CondensedSet(ds.train_x[idx].clone(), ds.train_y[idx].clone(), "digits", 10, factor=2,
                        value_space="raw01", ipc=ipc, meta={"format": "idc"})
    m, _ = run_cached(store, "import", 1, {"test": name}, {},
                     lambda tmp, key: set_result(tmp, cset, f"test set {name}"), ref=name)
    return m, cset


def run_counts(store) -> int:
    return len(store.all_runs())


def test_prune_end_to_end_then_instant(cli, store, monkeypatch, tmp_path):
    from yoco_cli.stages.score import load_scores
    from yoco_cli.stages.sets import load_set

    make_set(store)
    r = cli("prune", "--from", "10", "--to", "1", "--metric", "lbpe", "--balanced", *TINY, "--json")
    assert r.exit_code == 0, r.stderr
    res = r.json()["results"][0]
    assert res["ref"] == "digits/test/ipc10@lbpe-easy-balanced-ipc1" and not res["cached"]
    assert res["per_class"] == [4] * 10 and res["kept"] == 40 and res["total"] == 400

    pruned_m = store.resolve(res["ref"])
    pruned = load_set(store, pruned_m)
    assert pruned.factor == 1 and pruned.ipc == 1 and tuple(pruned.images.shape) == (40, 1, 8, 8)
    info = pruned.meta["pruned"]
    assert (info["source_factor"], info["metric"], info["direction"], info["balance"]) == (2, "lbpe", "easy", "balanced")
    # YOCO: per class, the 4 decoded images of lowest LBPE (mean over runs)
    scores = load_scores(store, store.all_runs("score")[0])
    lbpe = scores.values("lbpe")
    origin = pruned.origin.numpy()
    for c in range(10):
        members = np.arange(40 * c, 40 * (c + 1))
        assert set(origin[pruned.labels.numpy() == c]) == set(members[np.lexsort((members, -lbpe[members]))][-4:])

    # second time: every stage is a cache hit and nothing trains
    from yoco_cli.nn import engine

    monkeypatch.setattr(engine, "train", lambda *a, **k: pytest.fail("trained on a rerun"))
    before = run_counts(store)
    again = cli("prune", "--from", "10", "--to", "1", "--metric", "lbpe", "--balanced", *TINY, "--json")
    assert again.exit_code == 0, again.stderr
    assert again.json()["results"][0]["cached"] is True and run_counts(store) == before

    # `yoco score` on the same set finds the same cached artifact; its summary has every metric
    s = cli("score", "digits/test/ipc10", *TINY, "--json")
    assert s.exit_code == 0, s.stderr
    doc = s.json()
    assert doc["cached"] is True and doc["runs"] == 1
    assert {"lbpe", "el2n", "forgetting", "aum", "entropy", "loss", "random"} <= set(doc["metrics"])
    assert doc["metrics"]["lbpe"]["spearman_lbpe"] == pytest.approx(1.0)

    # ssp from the final model's features, any IPC, exact distinct counts per class
    ssp = cli("prune", "digits/test/ipc10", "--to", "3", "--metric", "ssp", "--balanced", *TINY, "--json")
    assert ssp.exit_code == 0, ssp.stderr
    assert ssp.json()["results"][0]["per_class"] == [12] * 10
    kept = load_set(store, store.resolve("digits/test/ipc10@ssp-hard-balanced-ipc3")).origin.tolist()
    assert len(set(kept)) == 120


def test_several_targets_export_and_indices(cli, store, tmp_path):
    import torch

    make_set(store)
    r = cli("prune", "digits/test/ipc10", "--to", "1", "2", "--metric", "random", "--imbalanced",
            "--export", tmp_path / "data.pt", "--indices", tmp_path / "idx.json", "--json")
    assert r.exit_code == 0, r.stderr
    results = r.json()["results"]
    assert [x["to"] for x in results] == [1, 2] and [x["kept"] for x in results] == [40, 80]
    assert not store.all_runs("dynamics")  # random needs neither dynamics nor scores
    data, targets = torch.load(tmp_path / "data-ipc2.pt", weights_only=True)
    assert tuple(data.shape) == (80, 1, 8, 8) and targets.shape == (80,)
    doc = json.loads((tmp_path / "idx-ipc1.json").read_text())
    assert len(doc["indices"]) == 40 and len(doc["stored"]) == 40
    # stored origin of decoded index d in class-sorted IDC order: c*IPC + d mod IPC (docs/method.md §1.3)
    assert all(s == (d // 40) * 10 + d % 10 for d, s in zip(doc["indices"], doc["stored"]))
    from yoco_cli.methods.select import random_select

    labels = np.repeat(np.arange(10), 40)
    assert doc["indices"] == random_select(labels, 4, 40, False, 0).tolist()  # seeded, same selection


def test_set_resolution(cli, store):
    r = cli("prune", "--from", "10", "--to", "1", "--metric", "random")
    assert r.exit_code == 2 and "yoco fetch" in r.stderr and "yoco condense" in r.stderr
    make_set(store, "digits/a/ipc10")
    make_set(store, "digits/b/ipc10", per_class_offset=10)
    r = cli("prune", "--from", "10", "--to", "1", "--metric", "random")
    assert r.exit_code == 2 and "digits/a/ipc10" in r.stderr and "digits/b/ipc10" in r.stderr
    # at a terminal the user picks one from the numbered list
    import yoco_cli.cli.cmd_prune as cmd

    monkey = pytest.MonkeyPatch()
    monkey.setattr(cmd, "interactive", lambda: True)
    try:
        r = cli("prune", "--from", "10", "--to", "1", "--metric", "random", "--json", input="2\n")
    finally:
        monkey.undo()
    assert r.exit_code == 0, r.stderr
    second = next(line.split()[1] for line in r.stderr.splitlines() if line.strip().startswith("2."))
    doc = json.loads(r.stdout[r.stdout.index("{"):])  # CliRunner echoes the typed input to stdout
    assert doc["results"][0]["rule"]["parent"] == second
    r = cli("prune", "--from", "10", "--to", "1", "--metric", "random", "--dataset", "cifar10")
    assert r.exit_code == 2 and "no stored condensed set" in r.stderr
    r = cli("prune", "digits/a/ipc10", "--from", "5", "--to", "1")
    assert r.exit_code == 2 and "has IPC 10" in r.stderr
    r = cli("prune", "digits/a/ipc10", "--to", "10")
    assert r.exit_code == 2 and "not smaller" in r.stderr
    r = cli("prune", "digits/a/ipc10", "--to", "1", "--key", "yoco", "--metric", "lbpe")
    assert r.exit_code == 2 and "--key" in r.stderr
    r = cli("prune", "digits/a/ipc10", "--to", "1", "--key", "loss_LBPE_top10")
    assert r.exit_code == 2 and "unknown pruning key" in r.stderr


def write_reference_scores(path, n=400, seed=0):
    """A data-score-ipc10-ep100.pickle with the reference's keys (docs/method.md §3.10), written as it does."""
    import torch

    rng = np.random.default_rng(seed)
    targets = torch.arange(10).repeat_interleave(n // 10).int()
    doc = {"targets": targets, "forgetting": torch.from_numpy(rng.integers(0, 4, n)).int(),
           "accumulated_margin": torch.from_numpy(rng.normal(size=n)).float(),
           "el2n": torch.from_numpy(rng.random(n)).float(), "LBPE_top10": torch.from_numpy(rng.random(n)).float(),
           "correct_num": torch.zeros(100).int(), "kmeans_1": [int(c * 40 + i) for c in range(10) for i in (0, 0, 5, 9)],
           "imbalance_kmeans_1": list(range(0, 400, 10))}
    with open(path, "wb") as f:
        pickle.dump(doc, f)
    return doc


def test_reference_score_file_and_keys(cli, store, tmp_path):
    make_set(store)
    doc = write_reference_scores(tmp_path / "data-score-ipc10-ep100.pickle")
    r = cli("score", "--from-file", tmp_path / "data-score-ipc10-ep100.pickle", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["ref"] == "reference/data-score-ipc10-ep100"
    assert sorted(r.json()["ssp_lists"]) == ["imbalance_kmeans_1", "kmeans_1"]
    ref = ("--scores", "reference/data-score-ipc10-ep100")

    aum = doc["accumulated_margin"].numpy()
    r = cli("prune", "digits/test/ipc10", "--to", "1", "--key", "accumulated_margin", *ref, "--json")
    assert r.exit_code == 0, r.stderr
    kept = r.json()["results"][0]
    assert kept["ref"].endswith("@aum-hard-imbalanced-ipc1")  # AUM inverted: hard = lowest margins
    assert kept["score_range"]["kept"][1] <= kept["score_range"]["dropped"][0]
    assert kept["score_range"]["kept"][0] == pytest.approx(float(aum.min()))

    r = cli("prune", "digits/test/ipc10", "--to", "1", "--key", "forgetting_easy_balance", *ref, "--json")
    assert r.exit_code == 0 and r.json()["results"][0]["per_class"] == [4] * 10

    r = cli("prune", "digits/test/ipc10", "--to", "1", "--key", "ccs", "--ccs-beta", "0.3", *ref, "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["results"][0]["kept"] == 40 and r.json()["results"][0]["rule"]["ccs_beta"] == 0.3
    # digits is not in the reference's table: it borrows CIFAR-10's ratio (as `yoco pipeline` does), aloud
    r = cli("prune", "digits/test/ipc10", "--to", "1", "--key", "ccs", *ref, "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["results"][0]["rule"]["ccs_beta"] == 0.3 and r.json()["results"][0]["cached"]
    assert "no CCS cut ratio for digits 10->1 in the reference; using CIFAR-10's (0.3)" in r.stderr
    r = cli("prune", "digits/test/ipc10", "--to", "3", "--key", "ccs", *ref)
    assert r.exit_code == 2 and "--ccs-beta" in r.stderr  # nor is 10->3 in CIFAR-10's: say which ratio

    # ssp with the paper's own list: used as is, duplicates included (the reference's behaviour)
    r = cli("prune", "digits/test/ipc10", "--to", "1", "--key", "ssp_balance", *ref, "--indices",
            tmp_path / "ssp.json", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "ssp.json").read_text())["indices"] == sorted(doc["kmeans_1"])
    r = cli("prune", "digits/test/ipc10", "--to", "3", "--key", "ssp", *ref)
    assert r.exit_code == 2 and "--dynamics" in r.stderr

    # scores of another set (labels in another order) are refused
    import torch

    other = dict(doc, targets=torch.arange(10).repeat(40).int())
    with open(tmp_path / "other.pickle", "wb") as f:
        pickle.dump(other, f)
    assert cli("score", "--from-file", tmp_path / "other.pickle").exit_code == 0
    r = cli("prune", "digits/test/ipc10", "--to", "1", "--key", "el2n", "--scores", "reference/other")
    assert r.exit_code == 2 and "another set" in r.stderr


def test_score_file_with_code_is_refused(cli, tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    p = tmp_path / "data-score-ipc10-ep100.pickle"
    p.write_bytes(pickle.dumps({"targets": [0], "el2n": Evil()}))
    r = cli("score", "--from-file", p)
    assert r.exit_code == 3 and "refuses" in r.stderr


def test_to_list_expansion():
    from yoco_cli.cli.common import expand_targets, parse_targets

    assert expand_targets(["--to", "1", "2", "5", "--metric", "x"]) == ["--to", "1", "--to", "2", "--to", "5",
                                                                        "--metric", "x"]
    assert expand_targets(["--to=1", "2", "S"]) == ["--to=1", "--to", "2", "S"]
    assert parse_targets(["5", "1,2", "2"]) == [1, 2, 5]


@pytest.mark.gpu
def test_model_scores_on_cuda_match_cpu():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from yoco_cli.nn.engine import eval_pass
    from yoco_cli.nn.models import build_model
    from yoco_cli.stages.score import model_outputs

    torch.manual_seed(0)
    model = build_model("convnet", num_classes=10, channels=1, image_size=8, width=16)
    x, y = torch.rand(50, 1, 8, 8), torch.randint(0, 10, (50,))
    cpu = model_outputs(model, x, y, torch.device("cpu"), want_features=True)
    gpu = model_outputs(model.cuda(), x, y, torch.device("cuda"), want_features=True)
    for k in ("entropy", "loss", "features"):
        assert torch.allclose(cpu[k], gpu[k], atol=1e-4), k
    assert torch.allclose(eval_pass(model, x, torch.device("cuda"), features=True)[1], cpu["features"], atol=1e-4)
