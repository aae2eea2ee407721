"""Downloads over plain HTTP against a server on 127.0.0.1: success, resume, refusals, integrity."""
from __future__ import annotations

import hashlib
import io
import random
import socket
import time

import pytest
from loopback import Loopback

from yoco_cli.errors import FetchError, IntegrityError, UsageError
from yoco_cli.remote import http
from yoco_cli.remote.registry import Entry
from yoco_cli.stages import downloads

DATA = random.Random(0).randbytes(600_000)  # three 256 KiB chunks: progress moves several times
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def srv():
    with Loopback() as s:
        yield s


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("YOCO_OFFLINE", raising=False)


def entry(url: str, sha: str | None = SHA, name: str = "test/blob", **attrs) -> Entry:
    return Entry(name, sha, url, {"kind": "file", **attrs})


def opts(**kw) -> downloads.Options:
    return downloads.Options(**{"backoff": 0.01, "timeout": 5.0, **kw})


def nothing_visible(store) -> bool:
    """No object, no run, no name: a failed download leaves the cache as it was."""
    return store.all_objects() == [] and store.all_runs() == [] and store.refs() == {}


def part_file(store, e: Entry):
    return store.root / "partial" / "download" / downloads.download_key(e) / "body.part"


def test_success_verifies_digest_reports_progress_and_caches(store, srv, online):
    url = srv.add("/blob.bin", DATA)
    calls = []
    e = entry(url)
    m, cached = downloads.ensure_download(store, e, opts(bar=lambda name: lambda d, t: calls.append((name, d, t))))
    assert not cached and m.meta["verified"] == ["sha256"] and m.meta["sha256"] == SHA
    assert store.object_path(m.digest("file")).read_bytes() == DATA
    assert calls[0] == ("test/blob", 0, len(DATA)) and calls[-1] == ("test/blob", len(DATA), len(DATA))
    assert [d for _, d, _ in calls] == sorted(d for _, d, _ in calls) and len(calls) >= 4
    assert store.refs()["test/blob"] == ("download", m.key)
    assert not (store.root / "partial" / "download" / m.key).exists()
    # a second fetch is a cache hit that never touches the network
    again, cached = downloads.ensure_download(store, e, opts())
    assert cached and again.key == m.key and len(srv.requests("/blob.bin")) == 1


def test_progress_bar_shows_bytes_speed_and_eta(srv, tmp_path):
    from rich.console import Console

    from yoco_cli.cli.output import Output

    url = srv.add("/blob.bin", DATA)
    buf = io.StringIO()
    sink = Output(err=Console(file=buf, force_terminal=True, width=120, color_system=None))
    with http.progress_bars(sink) as bar:
        http.download(url, tmp_path / "blob", progress=bar("test/blob"))
    text = buf.getvalue()
    assert "test/blob" in text and "600.0/600.0 kB" in text and "/s" in text
    assert (tmp_path / "blob").read_bytes() == DATA and not (tmp_path / "blob.part").exists()


def test_resume_after_a_cut_connection(store, srv, online):
    url = srv.add("/blob.bin", DATA, cut_after=200_000)
    e = entry(url)
    with pytest.raises(FetchError) as err:
        downloads.ensure_download(store, e, opts(retries=0))
    assert err.value.exit_code == 4 and "truncated" in err.value.message and "resume" in err.value.hint
    assert nothing_visible(store) and part_file(store, e).stat().st_size == 200_000
    m, _ = downloads.ensure_download(store, e, opts(retries=0))
    second = srv.requests("/blob.bin")[1]
    assert second["range"] == "bytes=200000-" and second["if-range"] == '"v1"'
    assert m.meta["resumed_from"] == 200_000 and store.object_path(m.digest("file")).read_bytes() == DATA


def test_retry_resumes_within_one_call(store, srv, online):
    url = srv.add("/blob.bin", DATA, cut_after=300_000)
    m, _ = downloads.ensure_download(store, entry(url), opts(retries=2))
    reqs = srv.requests("/blob.bin")
    assert len(reqs) == 2 and reqs[1]["range"] == "bytes=300000-" and m.meta["sha256"] == SHA


def test_server_ignoring_range_restarts_cleanly(store, srv, online):
    url = srv.add("/blob.bin", DATA, cut_after=100_000, ignore_range=True)
    e = entry(url)
    with pytest.raises(FetchError):
        downloads.ensure_download(store, e, opts(retries=0))
    m, _ = downloads.ensure_download(store, e, opts(retries=0))
    assert "range" in srv.requests("/blob.bin")[1]  # asked to resume, got the whole file instead
    assert m.meta["restarted"] is True and store.object_path(m.digest("file")).read_bytes() == DATA


def test_404_is_not_retried_and_leaves_nothing(store, srv, online):
    url = srv.add("/gone.bin", b"not here", status=404, ctype="text/plain")
    with pytest.raises(FetchError) as err:
        downloads.ensure_download(store, entry(url), opts(retries=3))
    assert err.value.exit_code == 4 and "HTTP 404" in err.value.message and "YOCO_REGISTRY" in err.value.hint
    assert len(srv.requests("/gone.bin")) == 1 and nothing_visible(store)


def test_403_names_the_refusal(store, srv, online):
    url = srv.add("/private.bin", b"no", status=403, ctype="text/plain")
    with pytest.raises(FetchError, match="HTTP 403"):
        downloads.ensure_download(store, entry(url), opts())


def test_truncated_body_fails_after_retries(store, srv, online):
    url = srv.add("/short.bin", DATA, truncate_to=1000)
    with pytest.raises(FetchError) as err:
        downloads.ensure_download(store, entry(url), opts(retries=1))
    assert "truncated" in err.value.message and len(srv.requests("/short.bin")) == 2
    assert nothing_visible(store)


def test_wrong_digest_is_an_integrity_error_and_discards_the_bytes(store, srv, online):
    url = srv.add("/blob.bin", DATA)
    e = entry(url, sha=hashlib.sha256(b"something else").hexdigest())
    with pytest.raises(IntegrityError) as err:
        downloads.ensure_download(store, e, opts())
    assert err.value.exit_code == 3 and "sha256 mismatch" in err.value.message
    assert nothing_visible(store) and not part_file(store, e).parent.exists()


def test_md5_is_checked_too(store, srv, online):
    url = srv.add("/blob.bin", DATA)
    with pytest.raises(IntegrityError, match="md5 mismatch"):
        downloads.ensure_download(store, entry(url, sha=None, md5="0" * 32), opts())
    m, _ = downloads.ensure_download(store, entry(url, sha=None, md5=hashlib.md5(DATA).hexdigest()), opts())
    assert m.meta["verified"] == ["md5"]


def test_slow_server_hits_the_timeout(store, srv, online):
    url = srv.add("/slow.bin", DATA, delay=1.5)
    t0 = time.perf_counter()
    with pytest.raises(FetchError) as err:
        downloads.ensure_download(store, entry(url), opts(timeout=0.2, retries=0))
    assert time.perf_counter() - t0 < 1.2
    assert "timeout" in err.value.message and "--timeout" in err.value.hint and nothing_visible(store)


def test_html_page_instead_of_file_is_refused_without_retry(store, srv, online):
    page = b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>" \
           b"<p class=\"uc-error-subcaption\">Too many users have viewed or downloaded this file recently.</p>"
    url = srv.add("/uc", page, ctype="text/html; charset=utf-8")
    with pytest.raises(FetchError) as err:
        downloads.ensure_download(store, entry(url), opts(retries=3))
    assert "quota" in err.value.message and len(srv.requests("/uc")) == 1 and nothing_visible(store)


def test_html_body_with_a_binary_content_type_is_caught_by_sniffing(store, srv, online):
    url = srv.add("/file.pt", b"<!doctype html><html><title>Guest Wi-Fi</title></html>")
    with pytest.raises(FetchError, match="HTML page"):
        downloads.ensure_download(store, entry(url, sha=None), opts())
    assert nothing_visible(store)


def test_connection_refused(store, online):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(FetchError) as err:
        downloads.ensure_download(store, entry(f"http://127.0.0.1:{port}/x"), opts(retries=1))
    assert err.value.exit_code == 4 and "cannot connect" in err.value.message


def test_dns_failure_is_not_retried():
    err = http._url_error(socket.gaierror(-2, "Name or service not known"), 5, "nowhere.invalid", "x")
    assert isinstance(err, FetchError) and "resolve" in err.message


def test_offline_refuses_before_any_request(store, srv):
    url = srv.add("/blob.bin", DATA)  # YOCO_OFFLINE=1 from conftest
    with pytest.raises(FetchError) as err:
        downloads.ensure_download(store, entry(url), opts())
    assert err.value.message.startswith("offline") and "test/blob" in err.value.message
    assert srv.requests("/blob.bin") == []


def test_partial_from_another_mirror_is_not_spliced(store, srv, online):
    a = srv.add("/a.bin", DATA, cut_after=50_000)
    b = srv.add("/b.bin", DATA)
    with pytest.raises(FetchError):
        downloads.ensure_download(store, entry(a), opts(retries=0))
    m, _ = downloads.ensure_download(store, entry(b), opts())  # same entry (name, digest), other URL
    assert "range" not in srv.requests("/b.bin")[0] and m.meta["sha256"] == SHA


# -- through the CLI, with a YOCO_REGISTRY entry -------------------------------------------------
def write_registry(tmp_path, monkeypatch, lines: list[str]):
    p = tmp_path / "registry.txt"
    p.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("YOCO_REGISTRY", str(p))
    return p


def test_cli_fetch_records_first_seen_digest_and_is_cached_offline(cli, srv, tmp_path, monkeypatch, online):
    url = srv.add("/blob.bin", DATA)
    write_registry(tmp_path, monkeypatch, [f"test/blob - {url} kind=file"])
    r = cli("--json", "fetch", "test/blob")
    assert r.exit_code == 0, r.stderr
    doc = r.json()[0]
    assert doc["name"] == "test/blob" and doc["first_seen"] and doc["sha256"] == {"test/blob": SHA}
    assert "recorded the sha256" in r.stderr
    listed = cli("fetch", "--list", "test")
    assert listed.exit_code == 0 and SHA[:12] + " (seen)" in listed.stdout and "yes" in listed.stdout
    monkeypatch.setenv("YOCO_OFFLINE", "1")
    again = cli("--json", "fetch", "test/blob")
    assert again.exit_code == 0 and again.json()[0]["cached"] and len(srv.requests("/blob.bin")) == 1


def test_cli_errors_have_exit_codes(cli, srv, tmp_path, monkeypatch, online):
    url = srv.add("/blob.bin", DATA)
    gone = srv.add("/gone", b"", status=404, ctype="text/plain")
    write_registry(tmp_path, monkeypatch, [f"test/good sha256:{SHA} {url}",
                                           f"test/bad sha256:{'0' * 64} {url}", f"test/gone - {gone}"])
    bad = cli("fetch", "test/bad")
    assert bad.exit_code == 3 and "sha256 mismatch" in bad.stderr and "Traceback" not in bad.stderr
    missing = cli("fetch", "test/gone")
    assert missing.exit_code == 4 and "HTTP 404" in missing.stderr
    unknown = cli("fetch", "test/goood")
    assert unknown.exit_code == 2 and "did you mean test/good" in unknown.stderr
    assert cli("fetch").exit_code == 2


def test_registry_lines_are_validated(cli, tmp_path, monkeypatch):
    write_registry(tmp_path, monkeypatch, ["x/y md5:abc http://127.0.0.1/x"])
    r = cli("fetch", "--list")
    assert r.exit_code == 2 and "registry.txt:1" in r.stderr and "sha256" in r.stderr
    monkeypatch.setenv("YOCO_REGISTRY", str(tmp_path / "absent.txt"))
    assert cli("fetch", "--list").exit_code == 2


def test_bundled_registry_lists_every_published_artifact(cli):
    from yoco_cli.remote import registry

    reg = registry.load()
    sets = {e.group for e in reg if e.kind == "set"}
    assert {"idc/cifar10/ipc1", "idc/cifar10/ipc10", "idc/cifar10/ipc50", "idc/cifar100/ipc10", "idc/cifar100/ipc20",
            "idc/cifar100/ipc50", "idc/imagenet10/ipc10", "idc/imagenet10/ipc20", "mtt/cifar10/ipc10",
            "dsa/cifar10/ipc10", "kip/cifar10/ipc10", "dream/cifar10/ipc10"} <= sets
    assert {e.kind for e in reg} >= {"set", "dataset", "dynamics", "scores", "local"}
    assert reg.get("cifar10/archive").sha256.startswith("6d958be0")
    r = cli("--json", "fetch", "--list", "idc", "cifar10")
    assert r.exit_code == 0 and [d["name"] for d in r.json()] == ["idc/cifar10/ipc1", "idc/cifar10/ipc10",
                                                                  "idc/cifar10/ipc50"]
    with pytest.raises(UsageError) as err:
        reg.select(["idc", "cifar11"])
    assert "did you mean idc/cifar10" in err.value.one_line()
