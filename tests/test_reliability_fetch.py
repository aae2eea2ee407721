"""Reliability: downloads are complete or absent, hostile files cost bounded memory (docs/reliability.md).

Issue 12's failures 4 (a truncated download with no Content-Length was stored as complete, and the
bad archive was reused for ever) and 5 (memory bombs) are tested here, through the CLI, against an
HTTP server on 127.0.0.1.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from loopback import Loopback

MiB = 1 << 20


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("YOCO_OFFLINE", raising=False)


def registry(tmp_path, monkeypatch, *lines):
    p = tmp_path / "registry.txt"
    p.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("YOCO_REGISTRY", str(p))
    return p


def cifar10_tgz(seed: int = 0, link: bool = False) -> bytes:
    """A small CIFAR-10 python tarball in the published layout; `link`: data_batch_1 is a symlink."""
    rng = np.random.default_rng(seed)
    members = {f"data_batch_{i}": {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                                   "labels": [int(v) for v in rng.integers(0, 10, 4)]} for i in range(1, 6)}
    members["test_batch"] = {"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3, 4, 9]}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, obj in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            if link and name == "data_batch_1":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
                continue
            data = pickle.dumps(obj, protocol=2)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def cifar_entry(url: str) -> str:
    return f"cifar10/archive - {url} kind=dataset dataset=cifar10 role=archive"  # no digest is published


def downloads(store):
    return store.all_runs("download")


def test_a_body_cut_short_without_content_length_is_not_stored(cli, store, tmp_path, monkeypatch, online):
    """Failure 4: the server sends no Content-Length and the connection drops halfway. The old yoco
    stored the half as complete, failed to decode it (exit 3) and kept failing on it after the server
    was fixed. Now: exit 4 with nothing stored, and the next fetch downloads the whole file."""
    blob = cifar10_tgz()
    with Loopback() as srv:
        registry(tmp_path, monkeypatch, cifar_entry(srv.add("/c10.tgz", blob, no_length=True,
                                                            truncate_to=len(blob) // 2)))
        r = cli("fetch", "cifar10")
        assert r.exit_code == 4, r.stderr
        assert "ends early" in r.stderr and r.stderr.count("\n") == 1
        assert downloads(store) == [] and store.all_objects() == []
        srv.add("/c10.tgz", blob, no_length=True)  # the connection holds this time
        r = cli("--json", "fetch", "cifar10")
        assert r.exit_code == 0, r.stderr
    m = downloads(store)[0]
    assert m.meta["whole"] == "gzip+tar structure" and m.meta["size"] == len(blob)
    assert r.json()[0]["summary"].startswith("cifar10: 20 train + 6 test images")


def test_an_archive_that_fails_to_decode_is_dropped_so_the_next_fetch_starts_over(cli, store, tmp_path, monkeypatch,
                                                                                   online):
    """Failure 4, second half: a tar whose member is a symlink is refused (never followed), and the
    download is dropped: the hint "fetch it again" now works."""
    with Loopback() as srv:
        registry(tmp_path, monkeypatch, cifar_entry(srv.add("/c10.tgz", cifar10_tgz(link=True))))
        r = cli("fetch", "cifar10")
        assert r.exit_code == 3 and "symbolic link" in r.stderr and "dropped" in r.stderr, r.stderr
        assert "yoco fetch cifar10" in r.stderr and downloads(store) == []
        srv.add("/c10.tgz", cifar10_tgz())
        r = cli("fetch", "cifar10")
        assert r.exit_code == 0, r.stderr
        assert len(srv.requests("/c10.tgz")) == 1  # the fixed file was downloaded (a new route's count)


def test_a_damaged_download_or_dataset_in_the_store_is_quarantined_and_fetched_again(cli, store, tmp_path,
                                                                                     monkeypatch, online):
    from yoco_cli.stages.datasets import load_real

    blob = cifar10_tgz()
    with Loopback() as srv:
        registry(tmp_path, monkeypatch, cifar_entry(srv.add("/c10.tgz", blob)))
        assert cli("fetch", "cifar10").exit_code == 0
        clean = load_real("cifar10", store).train_x.clone()
        data = store.resolve("cifar10")
        for digest in (data.digest("data"), downloads(store)[0].digest("file")):
            p = store.object_path(digest)
            raw = bytearray(p.read_bytes())
            raw[len(raw) // 2] ^= 0x10
            p.chmod(0o644)
            p.write_bytes(bytes(raw))
        r = cli("eval", "cifar10", "--epochs", "1", "--repeats", "1")  # reads the decoded dataset
        assert r.exit_code == 3 and "is damaged" in r.stderr and "quarantine" in r.stderr, r.stderr
        r = cli("fetch", "cifar10")  # the dataset is decoded again, from a download that is damaged too
        assert r.exit_code == 3 and "is damaged" in r.stderr, r.stderr
        r = cli("fetch", "cifar10")  # which was quarantined: this fetch downloads it again
        assert r.exit_code == 0, r.stderr
        assert len(srv.requests("/c10.tgz")) == 2
    assert np.array_equal(load_real("cifar10", store).train_x.numpy(), clean.numpy())


# -- memory bombs -----------------------------------------------------------------------------------
def bomb_tgz(member: str, size: int) -> bytes:
    """A tar.gz whose member `member` holds `size` zero bytes, in about size/1000 bytes: gzip members
    concatenate, so one compressed MiB of zeros is repeated."""
    info = tarfile.TarInfo(member)
    info.size = size
    assert size % MiB == 0
    zeros = gzip.compress(bytes(MiB), compresslevel=9, mtime=0)
    return gzip.compress(info.tobuf(), mtime=0) + zeros * (size // MiB) + gzip.compress(bytes(1024), mtime=0)


# the child reports its own peak (VmHWM of its own address space): a parent's ru_maxrss for a child
# also counts the pytest process the child was forked from, before its exec
_WRAP = ("import atexit, sys\n"
         "def hwm(path=sys.argv[1]):\n"
         "    with open(path, 'w') as f:\n"
         "        f.write(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
         "atexit.register(hwm)\n"
         "sys.argv = ['yoco'] + sys.argv[2:]\n"
         "from yoco_cli.cli.app import main\n"
         "main()\n")


def peak_rss_mib(args, env, tmp_path) -> tuple[int, float, str]:
    """Run `yoco ARGS` in a child and return (exit code, its peak RSS in MiB, stderr)."""
    out = tmp_path / "vmhwm"
    p = subprocess.run([sys.executable, "-c", _WRAP, str(out), *map(str, args)], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, check=False)
    return p.returncode, int(out.read_text()) / 1024, p.stderr


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak from /proc (Linux)")
def test_a_tar_member_that_declares_far_more_than_the_archive_holds_is_refused_before_reading(store, tmp_path,
                                                                                              online):
    """Failure 5: a 4.6 MB tarball with a 1 GiB member reached 1.1 GB RSS before failing. Here a
    0.4 MB tarball declares a 384 MiB data_batch_1: refused from its header, memory stays low."""
    blob = bomb_tgz("cifar-10-batches-py/data_batch_1", 384 * MiB)
    assert len(blob) < MiB
    with Loopback() as srv:
        reg = tmp_path / "registry.txt"
        reg.write_text(cifar_entry(srv.add("/bomb.tgz", blob)) + "\n")
        env = {**os.environ, "YOCO_HOME": str(store.root), "YOCO_REGISTRY": str(reg), "OMP_NUM_THREADS": "1"}
        env.pop("YOCO_OFFLINE", None)
        code, rss, err = peak_rss_mib(["fetch", "cifar10"], env, tmp_path)
    assert rss < 300, f"peak RSS {rss:.0f} MiB"
    assert code == 3 and "declares" in err and "Traceback" not in err, err


def test_declared_sizes_are_checked_before_allocation(tmp_path, monkeypatch):
    """idx headers, compressed MATLAB elements and tar members: each declared size is checked against
    the limit (YOCO_MAX_DECODED_BYTES) and the file's size before anything is allocated."""
    import zlib

    from yoco_cli.data import readers
    from yoco_cli.errors import IntegrityError

    p = tmp_path / "train-images.gz"  # an idx header declaring 10^12 bytes of images
    p.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (10**6, 1000, 1000))))
    with pytest.raises(IntegrityError, match="declares 1000000000000 bytes"):
        readers.read_idx(p)
    monkeypatch.setenv(readers.LIMIT_ENV, str(64 * MiB))
    m = tmp_path / "train_32x32.mat"  # one compressed element inflating to 128 MiB
    comp = zlib.compress(bytes(128 * MiB), 9)
    header = b"MATLAB 5.0 MAT-file".ljust(124, b" ") + b"\x00\x01IM"
    m.write_bytes(header + (15).to_bytes(4, "little") + len(comp).to_bytes(4, "little") + comp)
    with pytest.raises(IntegrityError, match="declares"):
        readers.check_mat_sizes(m)
    t = tmp_path / "c.tgz"
    t.write_bytes(bomb_tgz("cifar-10-batches-py/data_batch_1", 96 * MiB))
    with pytest.raises(IntegrityError, match="over the 67108864-byte limit"):
        readers.read_cifar(t, 10)


def test_a_pickle_opcode_declaring_gigabytes_in_a_cifar_member_is_a_short_read(tmp_path):
    """Inside a member, a BINBYTES8 declaring 1 TiB: the streamed unpickler asks only for what the
    member holds, so it fails as truncated instead of allocating first."""
    from yoco_cli.data import readers
    from yoco_cli.errors import IntegrityError

    evil = b"\x80\x02" + b"\x8e" + (1 << 40).to_bytes(8, "little") + b"abc"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(evil)
        tar.addfile(info, io.BytesIO(evil))
    (tmp_path / "c.tgz").write_bytes(buf.getvalue())
    with pytest.raises(IntegrityError, match="not a readable CIFAR pickle"):
        readers.read_cifar(tmp_path / "c.tgz", 10)


def test_a_score_pickle_declaring_a_terabyte_is_exit_3(cli, tmp_path):
    """Failure 5: a 15 KB score pickle asked for 7.45 GiB (internal error: MemoryError, exit 1)."""
    p = tmp_path / "data-score-ipc10-ep100.pickle"
    p.write_bytes(b"\x80\x04" + b"\x8e" + (1 << 40).to_bytes(8, "little") + bytes(15000) + b".")
    r = cli("score", "--from-file", p)
    assert r.exit_code == 3, r.stderr
    assert "internal error" not in r.stderr and r.stderr.count("\n") == 1


def test_a_td_pickle_naming_epoch_1e9_is_refused_before_allocating(cli, tmp_path):
    """Failure 5: a td pickle with one record at epoch 10^9 made the recorder allocate 10^9 x N."""
    import torch

    assert cli("condense", "digits", "--ipc", "2", "--method", "random", "--factor", "1").exit_code == 0
    p = tmp_path / "td-ipc2.pickle"
    rec = {"epoch": 10**9, "iteration": 0, "idx": torch.arange(4),
           "output": torch.log_softmax(torch.randn(4, 10), 1).half()}
    with open(p, "wb") as f:
        pickle.dump({"data-name": "digits", "training_dynamics": [rec]}, f)
    r = cli("dynamics", "digits/random/ipc2", "--from-file", p)
    assert r.exit_code == 3 and "epoch 1000000000" in r.stderr and "damaged" in r.stderr, r.stderr


# -- the structure check on its own ---------------------------------------------------------------
def test_structure_check_knows_where_each_format_ends(tmp_path):
    import scipy.io
    import torch

    from yoco_cli import tensors
    from yoco_cli.errors import FetchError
    from yoco_cli.remote import structure

    files = {"a.tgz": cifar10_tgz()}
    torch.save([torch.rand(4, 3, 8, 8), torch.arange(4)], tmp_path / "data.pt")
    files["data.pt"] = (tmp_path / "data.pt").read_bytes()
    files["td.pickle"] = pickle.dumps({"x": list(range(50))}, protocol=4)
    scipy.io.savemat(tmp_path / "m.mat", {"X": np.ones((32, 32, 3, 5), np.uint8), "y": np.ones((5, 1))},
                     do_compression=True)
    files["m.mat"] = (tmp_path / "m.mat").read_bytes()
    tensors.save(tmp_path / "s.safetensors", {"a": torch.rand(64)})
    files["s.safetensors"] = (tmp_path / "s.safetensors").read_bytes()
    kinds = {"a.tgz": "gzip+tar", "data.pt": "zip", "td.pickle": "pickle", "m.mat": "mat",
             "s.safetensors": "safetensors"}
    for name, data in files.items():
        whole, cut = tmp_path / f"whole-{name}", tmp_path / f"cut-{name}"
        whole.write_bytes(data)
        cut.write_bytes(data[: len(data) - 7])
        assert structure.check(whole, name) == kinds[name]
        with pytest.raises(FetchError, match="ends early"):
            structure.check(cut, name)
    (tmp_path / "plain").write_bytes(b"just some bytes")
    assert structure.check(tmp_path / "plain", "plain") == ""


def test_an_image_bomb_in_a_folder_dataset_is_one_line_exit_3(cli, tmp_path, monkeypatch):
    """Pillow refuses images past its pixel limit (a decompression bomb); yoco says so in one line."""
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (64, 64), (i * 40, 0, 0)).save(tmp_path / "imgs" / c / f"{i}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 = 4096 pixels is now a "bomb"
    r = cli("fetch", f"folder:{tmp_path / 'imgs'}")
    assert r.exit_code == 3 and "cannot read the image" in r.stderr and r.stderr.count("\n") == 1, r.stderr


# -- issue 23, cases 4 and 5: torch zip members and shared nested lists ---------------------------
def zip_bomb(path, size: int = 1 << 30) -> None:
    """A torch-looking zip (version and byteorder records) whose data.pkl is one deflated member of `size`
    zero bytes, about 1 MB on disk. Written by hand: 1 MiB of zeros is deflated once after a full flush
    (no back references), so the same bytes repeat."""
    import struct
    import zlib

    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = c.compress(bytes(MiB)) + c.flush(zlib.Z_FULL_FLUSH)
    body = chunk * (size // MiB) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = 0
    for _ in range(size // MiB):
        crc = zlib.crc32(bytes(MiB), crc)
    members = [(n.encode(), 0, d, zlib.crc32(d), len(d), len(d))
               for n, d in (("archive/version", b"3\n"), ("archive/byteorder", b"little"))]
    members.append((b"archive/data.pkl", 8, body, crc, len(body), size))
    out, central = bytearray(), bytearray()
    for n, method, data, crc_, csize, usize in members:
        off = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc_, csize, usize, len(n), 0) + n + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc_, csize, usize,
                               len(n), 0, 0, 0, 0, 0, off) + n
    start = len(out)
    out += central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), start, 0)
    path.write_bytes(bytes(out))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak from /proc (Linux)")
def test_a_torch_zip_bomb_is_refused_before_inflating(cli, store, tmp_path):
    """Issue 23, case 4: a 1 MB .pt of one deflated member of 1 GiB of zeros reached 2.3 GB RSS through
    `import` (and `eval FILE`, `fetch`) before being refused. The members' declared sizes are checked
    against the file's size and YOCO_MAX_MEMORY first."""
    bomb = tmp_path / "bomb.pt"
    zip_bomb(bomb)
    assert bomb.stat().st_size < 1.1 * MiB
    env = {**os.environ, "YOCO_HOME": str(store.root), "OMP_NUM_THREADS": "1"}
    code, rss, err = peak_rss_mib(["import", bomb, "--dataset", "cifar10"], env, tmp_path)
    assert rss < 300, f"peak RSS {rss:.0f} MiB"
    assert code == 3 and "compression bomb" in err and "archive/data.pkl" in err and "Traceback" not in err, err
    r = cli("eval", bomb)
    assert r.exit_code == 3 and "compression bomb" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_torch_zip_members_are_bounded_by_the_memory_limit(tmp_path, monkeypatch):
    """A genuine (stored) torch file whose members exceed YOCO_MAX_MEMORY is refused before loading."""
    import torch

    from yoco_cli.data.formats import check_torch_zip, open_torch_file
    from yoco_cli.errors import IntegrityError

    p = tmp_path / "big.pt"
    torch.save(torch.zeros(3 * MiB // 4), p)  # 3 MiB of float32, stored
    monkeypatch.setenv("YOCO_MAX_MEMORY", "2M")
    with pytest.raises(IntegrityError, match="above the memory limit of 2 MiB"):
        open_torch_file(p)
    monkeypatch.setenv("YOCO_MAX_MEMORY", "8M")
    check_torch_zip(p)
    assert open_torch_file(p).numel() == 3 * MiB // 4


def _nested_score_pickle(path, width: int, depth: int) -> None:
    """A score pickle whose lists refer to one list `width` times, `depth` levels deep: tiny on disk,
    width**depth floats once turned into an array."""
    level = [0.5] * width
    for _ in range(depth - 1):
        level = [level] * width
    with open(path, "wb") as f:
        pickle.dump({"targets": list(range(width)), "LBPE_top10": level}, f, protocol=4)


def test_a_score_pickle_of_shared_nested_lists_is_refused_under_the_memory_limit(cli, tmp_path, monkeypatch):
    """Issue 23, case 5: a 26 KB score pickle of shared nested lists asked for 7.45 GiB (internal error:
    MemoryError) even with YOCO_MAX_MEMORY=1G. Lists are now counted as they expand, shared ones as
    often as they are referred to. (Here 16.7 M floats under a 64 MiB limit, so old yoco stays cheap.)"""
    p = tmp_path / "data-score-ipc10-ep100.pickle"
    _nested_score_pickle(p, 16, 6)
    assert p.stat().st_size < 30_000
    monkeypatch.setenv("YOCO_MAX_MEMORY", "64M")
    r = cli("score", "--from-file", p)
    assert r.exit_code == 3 and "expand to more than 64 MiB" in r.stderr and "YOCO_MAX_MEMORY" in r.stderr, r.stderr
    assert "internal error" not in r.stderr and r.stderr.count("\n") == 1


def test_a_pickle_whose_list_contains_itself_is_refused(tmp_path):
    from yoco_cli.data import safe_pickle
    from yoco_cli.errors import IntegrityError

    loop: list = [1.0]
    loop.append(loop)
    p = tmp_path / "loop.pickle"
    p.write_bytes(pickle.dumps({"targets": loop}))
    with pytest.raises(IntegrityError, match="contains itself"):
        safe_pickle.load(p)
    shared = [[1.0, 2.0]] * 3  # shared but finite: read as before
    p.write_bytes(pickle.dumps({"targets": shared}))
    assert safe_pickle.load(p) == {"targets": [[1.0, 2.0]] * 3}


def test_a_cifar_member_of_shared_nested_lists_is_refused_under_the_memory_limit(tmp_path, monkeypatch):
    """The CIFAR reader's unpickler: labels as one list referred to 16**6 times in all (small in the
    member, 128 MiB once made an array) are refused under YOCO_MAX_MEMORY before any conversion."""
    from yoco_cli.data import readers
    from yoco_cli.errors import IntegrityError

    level = [1] * 16
    for _ in range(5):
        level = [level] * 16
    evil = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": level}, protocol=2)
    assert len(evil) < 30_000
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(evil)
        tar.addfile(info, io.BytesIO(evil))
    (tmp_path / "c.tgz").write_bytes(buf.getvalue())
    monkeypatch.setenv("YOCO_MAX_MEMORY", "64M")
    with pytest.raises(IntegrityError, match="expand to more than 64 MiB"):
        readers.read_cifar(tmp_path / "c.tgz", 10)
