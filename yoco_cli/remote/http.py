"""Plain HTTP(S) downloads that survive bad networks and never pass off a partial file.

    download(url, dest, timeout=60, retries=3, progress=cb) -> Transfer

Bytes go to `<dest>.part`; only a complete body is renamed to `dest`. "Complete" is what the
transfer can tell: the declared length (Content-Length, Content-Range) or the end of a chunked
body. A server that declares neither ends the body by closing the connection, which a cut
connection looks just like: `Transfer.length_known` is False then, and the caller checks the
file's own structure (remote/structure.py) before trusting it. A second call
resumes the part with a Range request (If-Range on the ETag, so a changed remote file
restarts instead of being spliced); a server that ignores Range gets a clean restart.
Transient failures (connection cut, timeout, HTTP 5xx/429) are retried with exponential
backoff, resuming where they stopped; 404/403, DNS failures and HTML pages are not. The
standard library's urllib is enough here, so this adds no dependency.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .._version import __version__
from ..errors import FetchError
from ..progress import SILENT, Reporter
from .gdrive import DriveProblem, classify_html, network_hint, problem_error

CHUNK = 256 * 1024
USER_AGENT = f"yoco/{__version__}"
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
Progress = Callable[[int, "int | None"], None]


@dataclass
class Transfer:
    url: str  # the URL the bytes finally came from
    size: int
    resumed_from: int  # bytes already on disk when this call started (0: fresh)
    attempts: int
    restarted: bool  # a partial was thrown away (server ignored Range, or the file changed)
    length_known: bool = True  # the server declared the size (or chunked framing) and it was met


class _Retry(Exception):
    def __init__(self, error: FetchError):
        self.error = error


class _Restart(Exception):
    """The partial cannot be continued; start from byte 0 (not counted as a retry)."""


class _Follow(Exception):
    def __init__(self, url: str):
        self.url = url


RETRY_WINDOW_S = 120.0  # the most time one download spends retrying transient errors
MAX_BACKOFF_S = 30.0     # the longest wait between two tries


def download(url: str, dest: Path, *, timeout: float = 60.0, retries: int = 3, backoff: float = 1.0,
             progress: Progress | None = None, what: str | None = None,
             sleep: Callable[[float], None] = time.sleep) -> Transfer:
    """Fetch `url` into `dest` (complete or not at all). Raises FetchError (exit 4)."""
    dest = Path(dest)
    part, meta = dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".source.json")
    what = what or url
    _forget_other_source(part, meta, url)
    resumed_from = part.stat().st_size if part.exists() else 0
    attempts, restarts, follows, restarted = 0, 0, 0, False
    started, waited = time.monotonic(), 0.0
    while True:
        attempts += 1
        try:
            discarded, length_known = _attempt(url, part, meta, timeout, progress, what)
            restarted = restarted or discarded
            break
        except _Retry as r:
            # bounded in count and in time: --retries 1000000000 against a refused port gives up
            # after RETRY_WINDOW_S, not after days of doubling waits
            delay = min(backoff * 2 ** min(attempts - 1, 30), MAX_BACKOFF_S)
            spent = max(time.monotonic() - started, waited)
            if attempts > retries or spent + delay > RETRY_WINDOW_S:
                raise r.error from None
            sleep(delay)
            waited += delay
        except _Restart:
            restarts += 1
            restarted = True
            part.unlink(missing_ok=True)
            if restarts > 2:
                raise FetchError(f"cannot download {what}: the server keeps changing the file",
                                 "run again later") from None
            attempts -= 1
        except _Follow as f:
            follows += 1
            if follows > 2:
                raise problem_error(DriveProblem("virus_scan"), what) from None
            url = f.url
            attempts -= 1
    size = part.stat().st_size
    os.replace(part, dest)
    meta.unlink(missing_ok=True)
    return Transfer(url, size, resumed_from, attempts, restarted, length_known)


def _forget_other_source(part: Path, meta: Path, url: str) -> None:
    """A partial from another URL (a different mirror) cannot be trusted to continue."""
    src = _read_meta(meta)
    if part.exists() and src.get("url") not in (None, url):
        part.unlink()
        meta.unlink(missing_ok=True)


def _read_meta(meta: Path) -> dict:
    try:
        return json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _request(url: str, have: int, meta: Path) -> urllib.request.Request:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        src = _read_meta(meta)
        validator = src.get("etag") if src.get("etag") and not src["etag"].startswith("W/") else src.get("last_modified")
        if validator:
            headers["If-Range"] = validator  # changed remote file -> full 200 body, not a splice
    return urllib.request.Request(url, headers=headers)


def _attempt(url: str, part: Path, meta: Path, timeout: float, progress: Progress | None,
             what: str) -> tuple[bool, bool]:
    """One request -> (bytes already on disk were discarded (the server ignored Range),
    the body's end was declared by the server: a length or chunked framing)."""
    have = part.stat().st_size if part.exists() else 0
    host = urllib.parse.urlsplit(url).netloc or url
    with _opened(_request(url, have, meta), timeout, host, what, url, have) as resp:
        if "text/html" in (resp.headers.get("Content-Type") or "").lower():
            _refuse_html(resp.read(2 << 20), url, what)
        total, mode = _plan(resp, have)
        discarded = mode == "wb" and have > 0
        if mode == "wb":
            have = 0
        meta.write_text(json.dumps({"url": url, "etag": resp.headers.get("ETag"),
                                    "last_modified": resp.headers.get("Last-Modified")}), encoding="utf-8")
        framed = total is not None or (resp.headers.get("Transfer-Encoding") or "").lower() == "chunked"
        done = _stream(resp, part, mode, have, total, progress, timeout, host, what)
    if total is not None and done < total:
        raise _Retry(FetchError(f"truncated download of {what}: got {done} of {total} bytes from {host}",
                                "the connection was cut; run the command again to resume"))
    if total is not None and done > total:
        raise _Restart()
    return discarded, framed


@contextmanager
def _opened(req, timeout: float, host: str, what: str, url: str, have: int) -> Iterator[http.client.HTTPResponse]:
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise _http_error(e, host, what, url, have) from None
    except TimeoutError:
        raise _Retry(_timeout_error(timeout, host, what)) from None
    except urllib.error.URLError as e:
        raise _url_error(e.reason, timeout, host, what) from None
    except (ConnectionError, http.client.HTTPException, OSError) as e:
        raise _Retry(FetchError(f"cannot download {what}: connection to {host} failed ({e})",
                                "check the network connection and run again")) from None
    with resp:
        yield resp


def _http_error(e: urllib.error.HTTPError, host: str, what: str, url: str, have: int) -> Exception:
    if e.code == 416 and have:
        return _Restart()  # our partial is at or past the end: start over
    try:
        body = e.read(1 << 20)
    except OSError:
        body = b""
    problem = classify_html(body)
    if problem is not None and problem.kind in ("quota", "permission", "not_found"):
        return problem_error(problem, what)
    err = FetchError(f"cannot download {what}: HTTP {e.code} {e.reason} from {url}", _status_hint(e.code))
    return _Retry(err) if e.code in TRANSIENT_STATUS else err


def _status_hint(code: int) -> str:
    if code == 404 or code == 410:
        return "the file has moved or been removed; point the entry at a mirror with YOCO_REGISTRY"
    if code in (401, 403):
        return "the server refuses access; check the URL in a browser or use a mirror via YOCO_REGISTRY"
    if code in TRANSIENT_STATUS:
        return "the server is overloaded or failing; run the command again later"
    return "check the URL in a browser"


def _timeout_error(timeout: float, host: str, what: str) -> FetchError:
    return FetchError(f"cannot download {what}: {host} sent nothing for {timeout:g} s (timeout)",
                      "the server is slow or unreachable; run again, or raise --timeout")


def _url_error(reason, timeout: float, host: str, what: str) -> Exception:
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return _Retry(_timeout_error(timeout, host, what))
    if isinstance(reason, socket.gaierror):
        return FetchError(f"cannot download {what}: the host name {host.split(':')[0]} does not resolve "
                          "(no network, or no DNS)", network_hint("YOCO_REGISTRY to a registry of mirror URLs"))
    if isinstance(reason, ssl.SSLError):
        return FetchError(f"cannot download {what}: TLS error with {host} ({reason})",
                          "a proxy may be intercepting HTTPS; check the system's certificates")
    detail = getattr(reason, "strerror", None) or str(reason)
    return _Retry(FetchError(f"cannot download {what}: cannot connect to {host} ({detail})",
                             network_hint("YOCO_REGISTRY to a registry of mirror URLs")))


def _refuse_html(body: bytes, url: str, what: str) -> None:
    problem = classify_html(body) or DriveProblem("html", "")
    if problem.kind == "virus_scan" and problem.confirm_url:
        raise _Follow(urllib.parse.urljoin(url, problem.confirm_url))
    raise problem_error(problem, what)


def _plan(resp, have: int) -> tuple[int | None, str]:
    """(expected total size, file mode) from the status and headers."""
    length = resp.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if resp.status == 206:
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range") or "")
        if not m or int(m.group(1)) != have:
            raise _Restart()
        total = int(m.group(3)) if m.group(3) != "*" else (have + length if length is not None else None)
        return total, "ab"
    return length, "wb"  # 200: the whole body (a server that ignores Range lands here too)


def _stream(resp, part: Path, mode: str, done: int, total: int | None, progress: Progress | None,
            timeout: float, host: str, what: str) -> int:
    with open(part, mode) as f:
        if progress:
            progress(done, total)
        while True:
            try:
                chunk = resp.read(CHUNK)
            except TimeoutError:
                raise _Retry(_timeout_error(timeout, host, what)) from None
            except http.client.IncompleteRead as e:
                f.write(e.partial)
                raise _Retry(FetchError(f"truncated download of {what} from {host}",
                                        "the connection was cut; run the command again to resume")) from None
            except (ConnectionError, http.client.HTTPException, OSError) as e:
                raise _Retry(FetchError(f"truncated download of {what}: connection to {host} lost ({e})",
                                        "the connection was cut; run the command again to resume")) from None
            if not chunk:
                return done
            f.write(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)


# -- progress bars ------------------------------------------------------------------
@contextmanager
def progress_bars(reporter: Reporter = SILENT) -> Iterator[Callable[[str], Progress]]:
    """`with progress_bars(reporter) as bar: cb = bar("cifar10")` -> cb(done, total) drives a
    download bar (bytes, speed, ETA) on whatever display the caller's reporter gives."""
    with reporter.progress(unit="bytes") as prog:
        def bar(description: str) -> Progress:
            task = prog.add_task(description, total=None)

            def update(done: int, total: int | None) -> None:
                prog.update(task, completed=done, total=total)

            return update

        yield bar
