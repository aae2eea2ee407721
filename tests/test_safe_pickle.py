"""The restricted reader of reference pickles: what it rebuilds, bit for bit, and the memory bombs it
refuses before allocating (issue 12): declared sizes are checked against the bytes in the file."""
from __future__ import annotations

import collections
import io
import pickle
import struct
import warnings

import numpy as np
import pytest
import torch

from yoco_cli.data import safe_pickle
from yoco_cli.errors import IntegrityError, UsageError


def _doc():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {"f16": torch.randn(5, 3, generator=torch.Generator().manual_seed(0)).half(), "view": base[1:3, 2:5],
            "transposed": base.t(), "bf16": torch.tensor([1.5, -2.0]).bfloat16(), "bool": torch.tensor([True, False]),
            "slice": torch.arange(7)[2:], "expanded": torch.zeros(1).expand(5), "empty": torch.zeros(0, 3),
            "scalar_t": torch.tensor(3.5), "np": np.arange(6, dtype=np.float32).reshape(2, 3),
            "np_obj": np.array([1, "a", None], dtype=object), "np_f64": np.float64(2.5), "np_i64": np.int64(7),
            "ordered": collections.OrderedDict(a=1), "size": torch.Size([2, 3]), "dtype": torch.float16,
            "bytes": b"\x00\xffab", "plain": [1, 2.5, "x", None, (1, 2)], "shared": [base, base[0]]}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_everything_a_plain_pickle_holds_comes_back_equal(tmp_path, protocol):
    doc = _doc()
    path = tmp_path / "doc.pickle"
    path.write_bytes(pickle.dumps(doc, protocol=protocol))
    got = safe_pickle.load(path)
    for k, want in doc.items():
        if isinstance(want, torch.Tensor):
            assert (got[k].dtype, got[k].shape, got[k].stride()) == (want.dtype, want.shape, want.stride()), k
            assert torch.equal(got[k], want), k
        elif isinstance(want, np.ndarray):
            assert got[k].dtype == want.dtype and got[k].tolist() == want.tolist(), k
        elif k == "shared":
            assert torch.equal(got[k][0], want[0]) and torch.equal(got[k][1], want[1])
        else:
            assert got[k] == want and type(got[k]) is type(want), k
    got["f16"].add_(1)  # tensors are private copies: writing to them is allowed
    lazy = safe_pickle.load(path, lazy_tensors=True)
    assert isinstance(lazy["f16"], safe_pickle.StoredTensor) and lazy["f16"].dense and not lazy["view"].dense
    assert torch.equal(lazy["view"].build(), doc["view"])
    assert torch.equal(safe_pickle.join([lazy["f16"], lazy["f16"]]).view(10, 3), torch.cat([doc["f16"]] * 2))


def _storage_bytes(t: torch.Tensor) -> bytes:
    b = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage is deprecated; it is still what pickle writes
        torch.save(t.storage(), b, _use_new_zipfile_serialization=False)
    return b.getvalue()


class Call:
    """Pickles as fn(*args): hand-made pickles of what torch would never write itself."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def lying_storage(numel: int, dtype=torch.float32) -> Call:
    """A storage stream of 4 elements whose header declares `numel` (torch.load would allocate them all)."""
    blob = _storage_bytes(torch.zeros(4, dtype=dtype))
    lie = blob.replace(b"K\x04Ntq", pickle.dumps(numel, protocol=2)[2:-1] + b"Ntq")
    lie = lie[:-8 - 4 * dtype.itemsize] + struct.pack("<q", numel) + lie[-4 * dtype.itemsize:]
    assert lie != blob
    return Call(torch.storage._load_from_bytes, lie)


def tensor_over(storage, size, stride) -> Call:
    return Call(torch._utils._rebuild_tensor_v2, storage, 0, size, stride, False, collections.OrderedDict())


def _refused(path, *words):
    with pytest.raises(IntegrityError) as e:
        safe_pickle.load(path)
    for w in words:
        assert w in e.value.one_line(), e.value.one_line()
    assert "\n" not in e.value.one_line()


def test_declared_sizes_beyond_the_bytes_are_refused(tmp_path):
    p = tmp_path / "x.pickle"
    # a storage declaring 2^31-1 elements (8 GiB) that holds 4
    p.write_bytes(pickle.dumps({"t": tensor_over(lying_storage(2**31 - 1), (4,), (1,))}))
    _refused(p, "declares 2147483647 elements of 4 bytes but holds 16 bytes")
    # a 100000 x 100000 tensor over a storage of 4 elements
    small = Call(torch.storage._load_from_bytes, _storage_bytes(torch.zeros(4)))
    p.write_bytes(pickle.dumps({"t": tensor_over(small, (100000, 100000), (100000, 1))}))
    _refused(p, "shape (100000, 100000)", "storage of 4")
    # a stride-0 view repeating one element 10^9 times (7.45 GiB as int64)
    p.write_bytes(pickle.dumps({"targets": torch.zeros(1, dtype=torch.int64).expand(10**9)}))
    _refused(p, "repeats", "7.45 GiB")
    # ... unless the user allows it (views stay views: nothing is allocated here either)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("YOCO_MAX_MEMORY", "8G")
        assert safe_pickle.load(p)["targets"].shape == (10**9,)


def test_numpy_and_pickle_length_bombs_are_refused(tmp_path):
    p = tmp_path / "x.pickle"
    mod = "numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray"
    proto = pickle.dumps(np.array([1, 2], dtype=object), protocol=2)
    # an object array declaring 10^10 items (numpy would allocate 80 GB of pointers first)
    bomb = proto.replace(b"K\x02\x85", b"\x8a\x05" + (10**10).to_bytes(5, "little") + b"\x85")
    assert bomb != proto and mod.encode() in bomb
    p.write_bytes(bomb)
    _refused(p, "object array", "holds 2 items")
    # numpy's _reconstruct asked for a huge empty array directly
    p.write_bytes(pickle.dumps(Call((np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct, np.ndarray, (10**6, 10**6), b"b")))
    _refused(p, "array")
    # a byte string declaring 1 TiB in a 14-byte file: never read (or allocated) past the file's end
    p.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"abc")
    _refused(p, "ran out of memory", "a file of 14 bytes")


def test_cli_score_bomb_is_an_integrity_error(cli, tmp_path):
    """Issue 12: a 15 KB score pickle asked for 7.45 GiB (internal error: MemoryError, exit 1)."""
    p = tmp_path / "data-score-ipc10-ep100.pickle"
    pad = torch.arange(3500, dtype=torch.float32)  # brings the file to ~15 KB
    p.write_bytes(pickle.dumps({"targets": torch.zeros(1, dtype=torch.int64).expand(10**9), "el2n": pad}))
    assert 12_000 < p.stat().st_size < 16_000
    r = cli("score", "--from-file", p)
    assert r.exit_code == 3, r.stderr
    assert "repeats its stored elements to 7.45 GiB" in r.stderr and "MemoryError" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_memory_limit_parsing(monkeypatch):
    from yoco_cli import limits

    monkeypatch.setenv("YOCO_MAX_MEMORY", "1.5G")
    assert limits.memory_limit() == 3 << 29
    with pytest.raises(UsageError, match="above the limit of 1.5 GiB") as e:
        limits.check_allocation(2 << 30, "the statistics")
    assert "YOCO_MAX_MEMORY=2G" in e.value.one_line()
    monkeypatch.setenv("YOCO_MAX_MEMORY", "lots")
    with pytest.raises(UsageError, match="is not a size"):
        limits.memory_limit()
    monkeypatch.delenv("YOCO_MAX_MEMORY")
    assert limits.memory_limit() == limits.physical_memory() // 2
