"""The `download` stage: one registry entry -> one verified blob in the store.

Key = (entry name, expected sha256, expected md5): the URL is not part of it, so a mirror
given through YOCO_REGISTRY is the same artifact and a second fetch is a cache hit with no
network. Bytes land in the store's partial area (`partial/download/<key>/`) so an
interrupted download resumes; they become an object only after every known digest
matched. Where the registry knows no sha256, the digest seen on this first download is
recorded in the manifest (`meta.sha256`, `meta.first_seen`) and shown by `yoco fetch`.

Datasets (stages/datasets.py) and `yoco fetch` (stages/fetching.py) both download through here;
this module imports neither.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FetchError, IntegrityError, UsageError
from ..progress import SILENT, Reporter
from ..remote import gdrive, http, structure
from ..remote.registry import Entry
from ..store import Manifest, StageResult, Store, run_cached, run_key

log = logging.getLogger(__name__)

STAGE = "download"
VERSION = 1
_OFF = ("", "0", "false", "no", "off")


@dataclass
class Options:
    offline: bool = False
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0
    drive: gdrive.DriveClient | None = None  # injected Drive client (tests, special sites)
    bar: Callable[[str], http.Progress] | None = None  # progress-bar factory: bar(name) -> cb(done, total)
    source: Path | None = None  # local data for kind=local entries (ImageNet)
    extra: dict = field(default_factory=dict)


def offline_requested(flag: bool = False) -> bool:
    return flag or os.environ.get("YOCO_OFFLINE", "").strip().lower() not in _OFF


def download_params(entry: Entry) -> dict:
    return {"name": entry.name, "sha256": entry.sha256, "md5": entry.md5}


def download_key(entry: Entry) -> str:
    return run_key(STAGE, VERSION, download_params(entry), {})


def cached(store: Store, entry: Entry) -> Manifest | None:
    return store.load_run(STAGE, download_key(entry))


def download_ref(entry: Entry) -> str:
    """Dynamics and score files are used as they are: their name is theirs. Other raw files
    are inputs of an import or a dataset, named download/<name>."""
    return entry.name if entry.kind in ("dynamics", "scores", "file") else f"download/{entry.name}"


def human_size(n: int | None, approx: bool = False) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            text = f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
            return ("~" if approx else "") + text
        size /= 1000
    return str(n)


def by_hand(entry: Entry) -> str:
    """How to get an entry without yoco's network: download it yourself, then hand it over the way its
    kind goes in (a set is imported; a dataset archive is fetched from the copy through a registry line)."""
    file = entry.url.rsplit("/", 1)[-1] or "FILE"
    if entry.kind == "set":
        return f"download {file} by hand and run `yoco import FILE --name {entry.group}`"
    if entry.kind == "dynamics":
        return f"download {file} by hand and run `yoco dynamics SET --from-file FILE`"
    if entry.kind == "scores":
        return f"download {file} by hand and run `yoco score --from-file FILE`"
    attrs = " ".join(f"{k}={v}" for k, v in entry.attrs.items() if k not in ("approx_size",))
    digest = f"sha256:{entry.sha256}" if entry.sha256 else "-"
    return (f"download {file} by hand, put the line `{entry.name} {digest} file:///PATH/TO/{file} {attrs}` in a "
            f"file, and run `YOCO_REGISTRY=that-file yoco fetch {entry.group}` (docs/fetch.md)")


def needs_network(entries: list[Entry]) -> list[Entry]:
    """The entries whose download goes over a network (a file:// copy or a local folder does not)."""
    return [e for e in entries if e.scheme not in ("file", "local")]


def offline_error(missing: list[Entry]) -> FetchError:
    total = sum((e.size or e.approx_size or 0) for e in missing)
    names = ", ".join(e.name for e in missing[:12]) + (f" and {len(missing) - 12} more" if len(missing) > 12 else "")
    where = sorted({_host(e) for e in missing})
    size = f", {human_size(total, approx=any(e.size is None for e in missing))}" if total else ""
    return FetchError(f"offline: {len(missing)} file(s) not in the store would be fetched: {names} "
                      f"(from {', '.join(where)}{size})",
                      "run without --offline (and with YOCO_OFFLINE unset) to download them"
                      + (f"; or {by_hand(missing[0])}" if len(missing) == 1 else ""))


def _host(e: Entry) -> str:
    if e.scheme == "gdrive":
        return "Google Drive"
    if e.scheme == "local":
        return "a local folder"
    return urllib.parse.urlsplit(e.url).netloc


# -- one download ------------------------------------------------------------------
def ensure_download(store: Store, entry: Entry, opts: Options) -> tuple[Manifest, bool]:
    """(manifest, was_cached); downloads unless the store has it. Raises FetchError/IntegrityError."""
    hit = cached(store, entry)
    if hit is not None:
        store.set_ref(download_ref(entry), STAGE, hit.key)
        log.info("%s is in the store (download %s)", entry.name, hit.short)
        return hit, True
    if entry.scheme == "local":
        raise UsageError(f"{entry.name} cannot be downloaded", f"give its files with `yoco fetch {entry.group} --source PATH`")
    if offline_requested(opts.offline) and needs_network([entry]):
        raise offline_error([entry])

    def compute(tmp: Path, key: str) -> StageResult:
        body = store.partial_dir(STAGE, key) / "body"
        transfer = None
        if not body.exists():  # else: a complete body from an interrupted run, verify it
            log.info("downloading %s from %s", entry.name, _host(entry))
            try:
                transfer = _download_into(entry, body, opts)
            except FetchError as e:  # the remote's hint is generic; say the route for this kind of file
                if not (e.hint or "").startswith("check the network"):
                    raise
                raise FetchError(e.message, f"check the network; without one, {by_hand(entry)}") from None
        try:
            digests = _verify(body, entry)
            whole = _check_whole(body, entry, transfer)
        except (IntegrityError, FetchError):
            store.clear_partial(STAGE, key)  # wrong or short bytes are not worth resuming: start over
            raise
        out = tmp / "file"
        os.replace(body, out)
        return StageResult({"file": out}, {**_meta(entry, digests, out.stat().st_size, transfer), "whole": whole})

    return run_cached(store, STAGE, VERSION, download_params(entry), {}, compute, ref=download_ref(entry))


def _download_into(entry: Entry, body: Path, opts: Options):
    cb = opts.bar(entry.name) if opts.bar else None

    def over_http(url: str) -> http.Transfer:
        return http.download(url, body, timeout=opts.timeout, retries=opts.retries, backoff=opts.backoff,
                             progress=cb, what=entry.name)

    if entry.scheme != "gdrive":
        return over_http(entry.url)
    folder, path = entry.gdrive_parts()
    mirror = os.environ.get("YOCO_GDRIVE_MIRROR", "").strip()
    if opts.drive is None and mirror:
        return over_http(gdrive.MirrorClient(mirror).url(folder, path))
    client = opts.drive or _default_drive()
    with gdrive.drive_errors(f"the Drive folder of {entry.name}"):
        listing = client.list_folder(folder, timeout=opts.timeout)
    found = gdrive.find_in_listing(listing, path, entry.name)
    with gdrive.drive_errors(entry.name):
        client.download(found.id, body, progress=cb, timeout=opts.timeout, retries=opts.retries)
    if not body.is_file():
        raise FetchError(f"Google Drive returned nothing for {entry.name}", "run the command again")
    return None


_DRIVE: gdrive.GdownClient | None = None


def _default_drive() -> gdrive.GdownClient:
    global _DRIVE  # one client per process: folder listings are reused
    if _DRIVE is None:
        _DRIVE = gdrive.GdownClient()
    return _DRIVE


def _verify(body: Path, entry: Entry) -> dict:
    """Reject HTML bodies and digests that differ from the registry's."""
    with open(body, "rb") as f:
        head = f.read(4096)
    if gdrive.looks_like_html(head):
        with open(body, "rb") as f:
            problem = gdrive.classify_html(f.read(2 << 20))
        raise gdrive.problem_error(problem or gdrive.DriveProblem("html"), entry.name)
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(body, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            md5.update(chunk)
    got = {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}
    for algo in ("sha256", "md5"):
        want = getattr(entry, algo)
        if want and want.lower() != got[algo]:
            raise IntegrityError(f"{entry.name}: {algo} mismatch, expected {want[:16]}..., got {got[algo][:16]}... "
                                 f"(the file was discarded)",
                                 "the remote file changed or is corrupt; if you trust the new file, override the "
                                 "entry's digest with YOCO_REGISTRY")
    return got


def _check_whole(body: Path, entry: Entry, transfer) -> str:
    """How we know the body is complete. A published digest proves it; else the published size, the
    length the server declared, and the file's own structure (the one proof that works for a body
    that ended with a closed connection: see fetch/structure.py)."""
    size = body.stat().st_size
    if entry.size is not None and size != entry.size:
        raise FetchError(f"the download of {entry.name} has {size} bytes, the registry says {entry.size}",
                         "run the command again: the partial file was dropped and the next fetch starts over")
    if entry.sha256 or entry.md5:
        return "digest"
    kind = structure.check(body, entry.name)
    length = "size" if entry.size is not None else "length" if transfer is not None and transfer.length_known else ""
    return "+".join(x for x in (length, kind and f"{kind} structure") if x) or "unverified"


def _meta(entry: Entry, digests: dict, size: int, transfer) -> dict:
    checked = [a for a in ("sha256", "md5") if getattr(entry, a)]
    return {
        "summary": f"{entry.name} ({human_size(size)}, "
                   + (f"{'+'.join(checked)} verified" if checked else "sha256 recorded on first download") + ")",
        "entry": entry.name, "kind": entry.kind, "url": transfer.url if transfer else entry.url,
        "sha256": digests["sha256"], "md5": digests["md5"], "size": size,
        "verified": checked, "first_seen": not entry.sha256,
        "resumed_from": transfer.resumed_from if transfer else None,
        "restarted": transfer.restarted if transfer else None,
    }


def missing(store: Store, entries: list[Entry]) -> list[Entry]:
    return [e for e in entries if e.scheme != "local" and cached(store, e) is None]


def download_all(store: Store, entries: list[Entry], opts: Options, bars: bool = True,
                 reporter: Reporter = SILENT) -> list[Entry]:
    """Download every missing file (with progress bars on the reporter); returns those fetched.
    Offline: all or nothing, and the error names every missing file."""
    todo = missing(store, entries)
    if not todo:
        return []
    if offline_requested(opts.offline) and needs_network(todo):
        raise offline_error(needs_network(todo))
    if not bars or opts.bar is not None:
        for e in todo:
            ensure_download(store, e, opts)
        return todo
    # the bars close before any import/decode starts: Rich allows one live display at a time
    with http.progress_bars(reporter) as bar:
        with_bar = Options(**{**opts.__dict__, "bar": bar})
        for e in todo:
            ensure_download(store, e, with_bar)
    return todo


@contextlib.contextmanager
def dropped_if_undecodable(store: Store, group: str, downloads: list[Manifest]) -> Iterator[None]:
    """A download that fails to decode is dropped from the store, so the next fetch starts over
    instead of failing on the same bytes for ever. Only downloads no published digest vouches for
    are dropped: a file that matches its publisher's digest would come back byte for byte."""
    try:
        yield
    except IntegrityError as e:
        doubtful = [m for m in downloads if not m.meta.get("verified") and store.load_run(m.stage, m.key)]
        if not doubtful:
            raise
        store.rm(doubtful)
        names = ", ".join(str(m.meta.get("entry", m.short)) for m in doubtful)
        raise IntegrityError(f"{e.message}; dropped the download of {names} from the store",
                             f"run `yoco fetch {group}` again to download it afresh (if the source keeps "
                             f"sending a bad file, point the entry at a mirror with YOCO_REGISTRY)") from None


