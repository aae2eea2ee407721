"""Importing the reference's td pickles in bulk: bit for bit the statistics of feeding every record to
the Recorder one by one, whatever form the records take; and epoch numbers checked before allocating."""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from test_dynamics import digits_subset
from test_safe_pickle import lying_storage, tensor_over

from yoco_cli.data.dynamics import Recorder, _is_argmax, batch_means
from yoco_cli.errors import IntegrityError
from yoco_cli.stages import dynamics as D

FIELDS = ("targets", "err", "correct", "margin_sum", "correct_num", "loss_epoch")


def _records(n: int, classes: int, epochs: int, b: int, seed: int = 0, odd: bool = False) -> list[dict]:
    """The reference's layout (docs/method.md §2.3); `odd` mixes in every other form a record can take."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for e in range(epochs):
        perm = torch.randperm(n, generator=g)
        for it, s in enumerate(range(0, n, b)):
            idx = perm[s:s + b].clone()
            lp = F.log_softmax(3 * torch.randn(len(idx), classes, generator=g), 1)
            lp[0, :2] = lp[0, 2]  # argmax ties: the first index wins
            r = {"epoch": e, "iteration": it, "idx": idx, "output": lp.half()}
            if odd:
                kind = it % 12  # 1-5 odd, 6-12 a run of plain records
                if kind == 1:
                    r["idx"] = idx.tolist()
                elif kind == 2:
                    r["output"] = lp  # float32
                elif kind == 3:
                    r["idx"] = idx.int()
                elif kind == 4:
                    r["idx"] = perm[s:s + b]  # a view of the whole permutation
                elif kind == 5:
                    r["output"] = lp.half().t().contiguous().t()  # column-major
                if it == 1:
                    r["output"] = r["output"].clone()
                    r["output"][1, 3] = float("nan")
            out.append(r)
    if odd:  # a sample twice in epoch 0, and an empty batch
        out.insert(3, {"epoch": 0, "iteration": 99, "idx": out[0]["idx"][:2].clone(),
                       "output": out[0]["output"][:2].clone()})
        out.insert(5, {"epoch": 0, "iteration": 98, "idx": torch.zeros(0, dtype=torch.long),
                       "output": torch.zeros(0, classes).half()})
    return out


def _one_by_one(records, targets, classes, epochs):
    rec = Recorder(targets, epochs, classes)
    for r in records:
        rec.update(r["epoch"], torch.as_tensor(r["idx"]).long().flatten(), torch.as_tensor(r["output"]))
    return rec.result({})


def _same(a, b) -> bool:
    """Bit for bit, NaN where NaN."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.isnan(), b.isnan()) and torch.equal(
        torch.nan_to_num(a.double(), 0.5), torch.nan_to_num(b.double(), 0.5)) if a.is_floating_point() \
        else torch.equal(a, b)


@pytest.mark.parametrize("n,classes,epochs,b,odd", [(20, 10, 3, 7, False), (400, 100, 3, 64, False),
                                                    (97, 10, 4, 8, True)])
def test_bulk_import_equals_records_one_by_one(tmp_path, monkeypatch, n, classes, epochs, b, odd):
    records = _records(n, classes, epochs, b, seed=n, odd=odd)
    targets = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(1))
    path = tmp_path / "td.pickle"
    path.write_bytes(pickle.dumps({"data-name": "x", "training_dynamics": records}))
    calls = []
    real = Recorder.update
    monkeypatch.setattr(Recorder, "update", lambda self, *a, **k: calls.append(k) or real(self, *a, **k))
    got, count = D.read_reference_pickle(path, targets, classes)
    monkeypatch.setattr(Recorder, "update", real)
    want = _one_by_one(records, targets, classes, epochs)
    assert count == len(records)
    for name in FIELDS:
        assert _same(getattr(got, name), getattr(want, name)), name
    if not odd:  # a genuine file: one bulk update per epoch
        assert len(calls) == epochs and all(len(k["batch_sizes"]) == -(-n // b) for k in calls)
    else:  # odd records go one by one, the rest in bulk
        assert len(records) > len(calls) > epochs


def test_batch_means_and_argmax_shortcut_match_torch():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(7 * 64 + 5 + 3 * 9, generator=g) * 7
    sizes = [64] * 7 + [5] + [9] * 3
    want = torch.stack([part.mean() for part in values.split(sizes)])
    assert torch.equal(batch_means(values, sizes), want)
    p = torch.rand(300, 10, generator=g).half().float()
    p[:20, 4] = p[:20, 7]  # ties
    p[20:25, 2] = float("nan")
    p[25:30] = 0.0
    y = torch.randint(0, 10, (300,), generator=g)
    y[:20] = torch.where(torch.arange(20) % 2 == 0, 4, 7)
    p_y = p.gather(1, y[:, None]).squeeze(1)
    other = p.scatter(1, y[:, None], float("-inf")).amax(1)
    assert torch.equal(_is_argmax(p, y, p_y, other), p.argmax(1) == y)


def _write(path, records):
    with open(path, "wb") as f:
        pickle.dump({"data-name": "digits", "training_dynamics": records}, f)


def test_epoch_bomb_and_memory_limit(cli, store, tmp_path, monkeypatch):
    """Issue 12: a record declaring epoch 1e9 asked for ~800 GB of statistics (exit 1)."""
    digits_subset(store, 2)
    records = _records(20, 10, 2, 7)
    records[-1]["epoch"] = 10**9
    _write(tmp_path / "bomb.pickle", records)
    r = cli("dynamics", "t/ipc2", "--from-file", tmp_path / "bomb.pickle")
    assert r.exit_code == 3, r.stderr
    assert "declares epoch 1000000000, but the file holds only 6 records" in r.stderr
    assert [line[:6] for line in r.stderr.splitlines() if "record" in line] == ["error:"]  # one line

    records[-1]["epoch"] = -1
    _write(tmp_path / "neg.pickle", records)
    r = cli("dynamics", "t/ipc2", "--from-file", tmp_path / "neg.pickle")
    assert r.exit_code == 3 and "negative epoch" in r.stderr

    _write(tmp_path / "ok.pickle", _records(20, 10, 2, 7))
    monkeypatch.setenv("YOCO_MAX_MEMORY", "100")  # 2 epochs x 20 samples x 8 bytes = 320 bytes
    r = cli("dynamics", "t/ipc2", "--from-file", tmp_path / "ok.pickle")
    assert r.exit_code == 2, r.stderr
    assert "statistics of 2 epochs x 20 samples would need 320 bytes" in r.stderr and "YOCO_MAX_MEMORY" in r.stderr
    monkeypatch.setenv("YOCO_MAX_MEMORY", "1M")
    assert cli("dynamics", "t/ipc2", "--from-file", tmp_path / "ok.pickle").exit_code == 0


def test_huge_tensor_in_a_td_pickle_is_refused(cli, store, tmp_path):
    """Issue 12: a td pickle declaring a 100000 x 100000 tensor asked for 40 GB (exit 1)."""
    digits_subset(store, 2)
    records = _records(20, 10, 1, 7)
    records[0]["output"] = tensor_over(lying_storage(10**10), (100000, 100000), (100000, 1))
    _write(tmp_path / "td.pickle", records)
    r = cli("dynamics", "t/ipc2", "--from-file", tmp_path / "td.pickle")
    assert r.exit_code == 3, r.stderr
    assert "declares 10000000000 elements of 4 bytes but holds 16 bytes" in r.stderr
    records[0]["output"] = torch.zeros(1).half().expand(100000, 100000)  # a view repeating one element
    _write(tmp_path / "td.pickle", records)
    r = cli("dynamics", "t/ipc2", "--from-file", tmp_path / "td.pickle")
    assert r.exit_code == 3 and "shape (100000, 100000) repeats its stored elements to 18.6 GiB" in r.stderr


def test_records_out_of_range_name_the_record(tmp_path):
    records = _records(20, 10, 2, 7)
    records[4]["idx"] = records[4]["idx"] + 100
    _write(tmp_path / "td.pickle", records)
    with pytest.raises(IntegrityError, match="record 4 indexes sample 1"):
        D.read_reference_pickle(tmp_path / "td.pickle", torch.zeros(20, dtype=torch.long), 10)
