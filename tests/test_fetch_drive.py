"""Google Drive: error pages (tests/fixtures/drive, reconstructions), injected clients, import of sets."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from loopback import Loopback

from yoco_cli.errors import FetchError
from yoco_cli.remote import gdrive, registry
from yoco_cli.remote.gdrive import DriveFile
from yoco_cli.remote.registry import Entry
from yoco_cli.stages import downloads, fetching

PAGES = Path(__file__).parent / "fixtures" / "drive"
YOCO_FOLDER = "1_LJ5mhUQckh4BrYpfFKLeHMWk5HN0r0i"
IDC10 = "conv3in_grad_mse_nd2000_cut_niter2000_factor2_lr0.005_mix_ipc{}"


def page(name: str) -> str:
    return (PAGES / f"{name}.html").read_text()


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("YOCO_OFFLINE", raising=False)


@pytest.mark.parametrize("name,kind", [("quota", "quota"), ("virus_scan", "virus_scan"), ("permission", "permission"),
                                       ("need_access", "permission"), ("not_found", "not_found"), ("portal", "html")])
def test_recorded_pages_are_classified(name, kind):
    p = gdrive.classify_html(page(name).encode())
    assert p is not None and p.kind == kind
    err = gdrive.problem_error(p, "idc/cifar10/ipc10")
    assert err.exit_code == 4 and "idc/cifar10/ipc10" in err.message and err.hint
    assert "\n" not in err.one_line()


def test_non_html_bodies_are_not_pages():
    assert gdrive.classify_html(b"PK\x03\x04 a torch zip") is None
    assert gdrive.classify_html(b"\x80\x02}q\x00 a pickle") is None


def test_quota_message_quotes_drive():
    err = gdrive.problem_error(gdrive.classify_html(page("quota")), "x")
    assert "quota exceeded" in err.message and "Too many users" in err.message and "24 hours" in err.hint


def test_virus_scan_confirm_url_is_the_one_gdown_would_follow():
    from gdown.download import get_url_from_gdrive_confirmation

    ours = gdrive.classify_html(page("virus_scan")).confirm_url
    assert ours == get_url_from_gdrive_confirmation(page("virus_scan"))
    assert "confirm=t" in ours and "id=1AbCdEfGhIjKlMnOpQrStUvWxYz012345" in ours


@pytest.mark.parametrize("name,words", [("quota", "quota exceeded"), ("permission", "public link"),
                                        ("need_access", "public link")])
def test_gdown_errors_on_recorded_pages_become_one_line_errors(name, words):
    import gdown
    from gdown.download import get_url_from_gdrive_confirmation

    with pytest.raises(gdown.exceptions.FileURLRetrievalError) as raised:
        get_url_from_gdrive_confirmation(page(name))  # gdown's own parser, on the page
    err = gdrive.translate_exception(raised.value, "idc/cifar10/ipc10")
    assert isinstance(err, FetchError) and words in err.message


def test_listing_match_is_a_path_suffix_with_globs():
    files = [DriveFile("a", "raid/condensed_img/idc/cifar10/" + IDC10.format(10) + "/data.pt"),
             DriveFile("b", "cifar10/conv3in_grad_mse_nd2000_cut_niter2000_factor2_lr0.005_mix_ipc1/data.pt"),
             DriveFile("c", "cifar10/conv3in_other_ipc1/data.pt")]
    assert gdrive.find_in_listing(files, f"idc/cifar10/{IDC10.format(10)}/data.pt", "x").id == "a"
    with pytest.raises(FetchError, match="2 files"):
        gdrive.find_in_listing(files, "cifar10/conv3in_*_ipc1/data.pt", "x")
    with pytest.raises(FetchError, match="no file"):
        gdrive.find_in_listing(files, "idc/cifar10/nothing/data.pt", "x")


# -- fetching through an injected Drive client --------------------------------------------------
def idc_bytes(tmp_path: Path, ipc: int, seed: int = 0, fmt: str = "idc", space: str = "raw01") -> dict[str, bytes]:
    """A condensed CIFAR-10 set written in a published layout; {file name: bytes}."""
    import torch

    from yoco_cli.data.condensed import CondensedSet
    from yoco_cli.data.formats import export

    g = torch.Generator().manual_seed(seed)
    cset = CondensedSet(images=torch.rand(10 * ipc, 3, 32, 32, generator=g), labels=torch.arange(10).repeat_interleave(ipc),
                        dataset="cifar10", num_classes=10, factor=2 if fmt == "idc" else 1, value_space=space)
    out = tmp_path / f"{fmt}-{ipc}-{seed}"
    if fmt == "mtt":
        export(cset, out, "mtt")
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    export(cset, out, fmt)
    return {"data.pt": out.read_bytes()}


class FakeDrive:
    """A Drive folder in memory: paths -> bytes (or an exception to raise on download)."""

    def __init__(self, files: dict[str, object]):
        self.files = files
        self.downloads: list[str] = []

    def list_folder(self, folder_id, *, timeout):
        return [DriveFile(str(i), p) for i, p in enumerate(self.files)]

    def download(self, file_id, dest, *, progress, timeout, retries):
        self.downloads.append(file_id)
        value = list(self.files.values())[int(file_id)]
        if isinstance(value, BaseException):
            raise value
        dest.write_bytes(value)
        if progress:
            progress(len(value), len(value))


def yoco_path(ipc: int) -> str:
    return f"raid/condensed_img/idc/cifar10/{IDC10.format(ipc)}/data.pt"


def test_drive_set_is_fetched_verified_and_imported(store, tmp_path, online):
    from yoco_cli.stages.importing import resolve_set

    data = idc_bytes(tmp_path, 10)["data.pt"]
    drive = FakeDrive({"raid/README.txt": b"hi", yoco_path(10): data})
    out = fetching.fetch(store, [registry.load().get("idc/cifar10/ipc10")], downloads.Options(drive=drive))
    assert [(o.name, o.kind, o.cached, o.first_seen) for o in out] == [("idc/cifar10/ipc10", "set", False, True)]
    assert out[0].sha256 == {"idc/cifar10/ipc10": hashlib.sha256(data).hexdigest()}
    m, cset = resolve_set(store, "idc/cifar10/ipc10")
    assert m.stage == "import" and (cset.ipc, cset.factor, cset.value_space) == (10, 2, "raw01")
    assert drive.downloads == ["1"]
    again = fetching.fetch(store, [registry.load().get("idc/cifar10/ipc10")], downloads.Options(drive=drive))
    assert again[0].cached and drive.downloads == ["1"]


def test_drive_quota_is_not_retried(store, online):
    import gdown

    quota = gdown.exceptions.FileURLRetrievalError(
        "Failed to retrieve file url:\n\n\tToo many users have viewed or downloaded this file recently.")
    drive = FakeDrive({yoco_path(10): quota})
    with pytest.raises(FetchError) as err:
        downloads.ensure_download(store, registry.load().get("idc/cifar10/ipc10"), downloads.Options(drive=drive, retries=3))
    assert "quota" in err.value.message and drive.downloads == ["0"]
    assert store.all_objects() == [] and store.all_runs() == []


def test_drive_html_body_is_refused_and_discarded(store, online):
    e = registry.load().get("idc/cifar10/ipc10")
    drive = FakeDrive({yoco_path(10): page("quota").encode()})
    with pytest.raises(FetchError, match="quota"):
        downloads.ensure_download(store, e, downloads.Options(drive=drive))
    assert not (store.root / "partial" / "download" / downloads.download_key(e)).exists()
    assert store.all_objects() == []


def test_default_client_drives_gdown(store, monkeypatch, online):
    """GdownClient calls gdown's folder listing, then its file download, and translates its errors."""
    import gdown
    from gdown.download import GoogleDriveFileToDownload

    monkeypatch.setattr(downloads, "_DRIVE", None)
    calls = {}

    def fake_folder(**kw):
        calls["folder"] = kw
        return [GoogleDriveFileToDownload(id="F1", path=yoco_path(10), local_path="unused")]

    def fake_download(**kw):
        calls["download"] = kw
        Path(kw["output"]).write_bytes(b"\x80\x02 pretend pickle.")
        kw["progress"](18, 18)

    monkeypatch.setattr(gdown, "download_folder", fake_folder)
    monkeypatch.setattr(gdown, "download", fake_download)
    seen = []
    e = Entry("x/file", None, f"gdrive://{YOCO_FOLDER}/idc/cifar10/{IDC10.format(10)}/data.pt", {"kind": "file"})
    m, _ = downloads.ensure_download(store, e, downloads.Options(bar=lambda n: lambda d, t: seen.append(d), timeout=7))
    assert calls["folder"]["id"] == YOCO_FOLDER and calls["folder"]["skip_download"] is True
    assert calls["download"]["id"] == "F1" and calls["download"]["timeout"] == 7 and seen == [18]
    assert store.object_path(m.digest("file")).read_bytes() == b"\x80\x02 pretend pickle."

    def refuse(**kw):
        from gdown.download import get_url_from_gdrive_confirmation

        get_url_from_gdrive_confirmation(page("permission"))

    monkeypatch.setattr(gdown, "download", refuse)
    other = Entry("x/other", None, e.url, {"kind": "file"})
    with pytest.raises(FetchError, match="public link"):
        downloads.ensure_download(store, other, downloads.Options())


def test_virus_scan_interstitial_is_followed(store, online):
    with Loopback() as srv:
        confirmed = srv.add("/download", b"\x80\x02big pickle.")
        html = page("virus_scan").replace("https://drive.usercontent.google.com/download", confirmed)
        url = srv.add("/uc", html.encode(), ctype="text/html; charset=utf-8")
        m, _ = downloads.ensure_download(store, Entry("x/big", None, url, {"kind": "file"}), downloads.Options())
        assert "confirm=t" in srv.requests("/download")[0]["path"]
    assert store.object_path(m.digest("file")).read_bytes() == b"\x80\x02big pickle."


# -- the CLI: offline, then online, then offline again --------------------------------------------
def test_fetch_idc_cifar10_offline_names_what_it_would_fetch_then_works_offline(cli, store, tmp_path, monkeypatch):
    r = cli("fetch", "idc", "cifar10", "--offline")
    assert r.exit_code == 4
    for n in ("idc/cifar10/ipc1", "idc/cifar10/ipc10", "idc/cifar10/ipc50", "Google Drive"):
        assert n in r.stderr
    assert store.all_runs() == []

    files = {"cifar10/conv3in_grad_mse_nd2000_cut_niter2000_factor2_lr0.005_mix_ipc1/data.pt":
             idc_bytes(tmp_path, 1)["data.pt"]}
    files.update({yoco_path(i): idc_bytes(tmp_path, i)["data.pt"] for i in (10, 50)})
    monkeypatch.delenv("YOCO_OFFLINE")
    fetching.fetch(store, registry.load().select(["idc", "cifar10"]), downloads.Options(drive=FakeDrive(files)))

    monkeypatch.setenv("YOCO_OFFLINE", "1")
    r = cli("--json", "fetch", "idc", "cifar10", "--offline")
    assert r.exit_code == 0, r.stderr
    assert [(d["name"], d["cached"]) for d in r.json()] == [("idc/cifar10/ipc1", True), ("idc/cifar10/ipc10", True),
                                                            ("idc/cifar10/ipc50", True)]
    shown = cli("cache", "ls", "--stage", "import")
    assert "idc/cifar10/ipc50" in shown.stdout


def test_mirror_serves_drive_entries_over_http(cli, store, tmp_path, monkeypatch, online):
    from yoco_cli.stages.importing import resolve_set

    mtt = idc_bytes(tmp_path, 10, fmt="mtt", space="normalized")
    with Loopback() as srv:
        for name, body in mtt.items():
            srv.add(f"/{YOCO_FOLDER}/mtt/ConvNet_baseline/{name}", body)
        monkeypatch.setenv("YOCO_GDRIVE_MIRROR", srv.base + "/")
        r = cli("--json", "fetch", "mtt")
        assert r.exit_code == 0, r.stderr
    assert r.json()[0]["name"] == "mtt/cifar10/ipc10"
    _, cset = resolve_set(store, "mtt/cifar10/ipc10")
    assert (cset.ipc, cset.factor, cset.value_space, len(cset.labels)) == (10, 1, "normalized", 100)
