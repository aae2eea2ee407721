"""Google Drive: list a shared folder, download one file, and say plainly why Drive refused.

Drive answers a refused download with an HTML page, not an HTTP error: a quota page ("Too
many users have viewed or downloaded this file recently"), a sign-in or "You need access"
page, a virus-scan interstitial for large files, or a not-found page. `classify_html` reads
those pages (and gdown's error text, which quotes them) so that each becomes one line with
a hint. The quota page is never retried: retrying only burns more of the same quota.

The network side is a `DriveClient` (list_folder, download). The default uses gdown; tests
and air-gapped sites inject their own, or set YOCO_GDRIVE_MIRROR=URL so that
`gdrive://FOLDER/PATH` is fetched over plain HTTP from URL/FOLDER/PATH.
"""
from __future__ import annotations

import fnmatch
import html as _html
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import FetchError

Progress = Callable[[int, "int | None"], None]


# -- classification of Drive pages -------------------------------------------------
@dataclass
class DriveProblem:
    kind: str  # quota | permission | virus_scan | not_found | html
    detail: str = ""
    confirm_url: str | None = None  # virus_scan: where "Download anyway" leads


_QUOTA = ("too many users have viewed or downloaded", "quota exceeded", "download quota")
_PERMISSION = ("cannot retrieve the public link", "you need access", "request access",
               "accounts.google.com/servicelogin", "accounts.google.com/v3/signin", "sign in - google accounts",
               "you need permission", "ask for access")
_VIRUS = ("can't scan this file for viruses", "can&#39;t scan this file for viruses", "virus scan warning",
          "too large for google to scan")
_NOT_FOUND = ("the file you have requested does not exist", "page not found", "file does not exist")


def looks_like_html(head: bytes | str) -> bool:
    """True when a body starts like a web page (files we fetch never do)."""
    if isinstance(head, bytes):
        head = head[:2048].decode("latin-1")
    h = head.lstrip("\ufeff \t\r\n").lower()
    return h.startswith(("<!doctype html", "<html")) or (h.startswith("<") and "<html" in h[:2048])


def classify_text(text: str) -> DriveProblem | None:
    """Classify a Drive page or an error message quoting one (gdown's); None when nothing matches."""
    low = text.lower()
    if any(k in low for k in _QUOTA):
        return DriveProblem("quota", _subcaption(text) or "too many users have downloaded this file recently")
    if any(k in low for k in _VIRUS) or 'id="download-form"' in low:
        return DriveProblem("virus_scan", "Drive asks to confirm a download it cannot virus-scan",
                            _confirm_url(text))
    if any(k in low for k in _PERMISSION):
        return DriveProblem("permission", _subcaption(text) or "the file is not shared publicly")
    if any(k in low for k in _NOT_FOUND):
        return DriveProblem("not_found", _subcaption(text) or "the file does not exist")
    return None


def classify_html(body: bytes | str) -> DriveProblem | None:
    """None for a body that is not HTML; else what kind of page it is (`html` when unknown)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if not looks_like_html(text):
        return None
    return classify_text(text) or DriveProblem("html", _title(text))


def _subcaption(text: str) -> str:
    m = re.search(r'class="uc-error-subcaption"[^>]*>(.*?)</p>', text, re.DOTALL | re.IGNORECASE)
    return _clean(m.group(1)) if m else ""


def _title(text: str) -> str:
    m = re.search(r"<title[^>]*>(.*?)</title>", text, re.DOTALL | re.IGNORECASE)
    return _clean(m.group(1)) if m else ""


def _clean(fragment: str) -> str:
    return " ".join(_html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def _confirm_url(text: str) -> str | None:
    """The URL the interstitial's "Download anyway" form submits to (action + hidden inputs)."""
    form = re.search(r'<form[^>]*id="download-form"[^>]*>(.*?)</form>', text, re.DOTALL | re.IGNORECASE)
    if form:
        action = re.search(r'action="([^"]+)"', form.group(0), re.IGNORECASE)
        if action:
            fields = re.findall(r'<input[^>]*type="hidden"[^>]*>', form.group(1), re.IGNORECASE)
            params = []
            for f in fields:
                n, v = re.search(r'name="([^"]*)"', f), re.search(r'value="([^"]*)"', f)
                if n:
                    params.append((_html.unescape(n.group(1)), _html.unescape(v.group(1) if v else "")))
            url = _html.unescape(action.group(1))
            return url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params) if params else url
    m = re.search(r'href="(/uc\?export=download[^"]+)"', text)
    return "https://drive.google.com" + _html.unescape(m.group(1)) if m else None


def problem_error(p: DriveProblem, what: str) -> FetchError:
    """The one-line error (exit 4) for a classified page."""
    if p.kind == "quota":
        return FetchError(f"Google Drive refuses {what} for now: download quota exceeded ({p.detail})",
                          "wait (up to 24 hours) and run again, or download it in a browser and `yoco import` it")
    if p.kind == "permission":
        return FetchError(f"Google Drive will not give a public link to {what} ({p.detail})",
                          "check that the file opens in a browser without signing in; if not, it is no "
                          "longer shared: download it where you can and `yoco import` it")
    if p.kind == "virus_scan":
        return FetchError(f"Google Drive answered {what} with its virus-scan warning page",
                          "run again; if it persists, download it in a browser and `yoco import` it")
    if p.kind == "not_found":
        return FetchError(f"Google Drive says {what} does not exist ({p.detail})",
                          "the file was moved or deleted; point the entry at a mirror with YOCO_REGISTRY")
    title = f" ({p.detail})" if p.detail else ""
    return FetchError(f"got an HTML page{title} where {what} was expected",
                      "a proxy, captive portal or changed download page is in the way; open the URL in a browser")


# -- clients ---------------------------------------------------------------------------
@dataclass
class DriveFile:
    id: str
    path: str  # relative to the listed folder, '/'-separated


class DriveClient(Protocol):
    def list_folder(self, folder_id: str, *, timeout: float) -> list[DriveFile]: ...

    def download(self, file_id: str, dest: Path, *, progress: Progress | None, timeout: float,
                 retries: int) -> None: ...


class GdownClient:
    """Drive through gdown (folder listing via the embedded folder view, then the file)."""

    def __init__(self) -> None:
        self._listings: dict[str, list[DriveFile]] = {}

    def list_folder(self, folder_id: str, *, timeout: float) -> list[DriveFile]:
        if folder_id not in self._listings:
            import gdown

            found = gdown.download_folder(**_supported(gdown.download_folder, id=folder_id, skip_download=True,
                                                       quiet=True, use_cookies=False, timeout=timeout,
                                                       remaining_ok=True))
            # skip_download=True lists entries; a str would be a downloaded path, which it never returns
            entries = [f for f in found if not isinstance(f, str)]
            self._listings[folder_id] = [DriveFile(f.id, f.path.replace("\\", "/")) for f in entries]
        return self._listings[folder_id]

    def download(self, file_id: str, dest: Path, *, progress: Progress | None, timeout: float,
                 retries: int) -> None:
        import gdown

        # gdown keeps its own `<dest>XXXXXXXX.part` next to dest and resumes it (resume=True).
        # Its exceptions are translated by the caller's `drive_errors`.
        gdown.download(**_supported(gdown.download, id=file_id, output=str(dest), quiet=True, use_cookies=False,
                                    resume=True, progress=progress, timeout=timeout, retries=retries))


def _supported(fn, **kw) -> dict:
    """The keyword arguments `fn` accepts: gdown 5 lacks progress/timeout/retries and caps
    folder listings at 50 files unless remaining_ok; newer releases dropped remaining_ok."""
    import inspect

    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kw
    return {k: v for k, v in kw.items() if k in params}


class drive_errors:
    """`with drive_errors("idc/cifar10/ipc10"):` turns gdown's and requests' exceptions into
    one-line FetchErrors that say why (quota, permission, ...)."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, et, e, tb):
        if e is None or isinstance(e, (FetchError, KeyboardInterrupt)):
            return False
        raise translate_exception(e, self.what) from None


def translate_exception(e: BaseException, what: str) -> FetchError | BaseException:
    import gdown
    import requests

    text = str(e)
    if isinstance(e, gdown.exceptions.FileURLRetrievalError):
        p = classify_text(text) or DriveProblem("permission", "cannot retrieve the public link")
        return problem_error(p, what)
    if isinstance(e, requests.exceptions.HTTPError) and e.response is not None:
        code = e.response.status_code
        return FetchError(f"HTTP {code} from Google Drive for {what}",
                          "the file or folder is gone or private; check the link in a browser")
    if isinstance(e, requests.exceptions.Timeout):
        return FetchError(f"Google Drive timed out for {what}", "try again, or raise --timeout")
    if isinstance(e, requests.exceptions.ConnectionError):
        url = getattr(getattr(e, "request", None), "url", None) or ""
        host = urllib.parse.urlsplit(url).hostname or "drive.google.com"
        link = drive_link(url)
        return FetchError(f"cannot reach {host} for {what}: {connection_cause(e)}" + (f" ({link})" if link else ""),
                          network_hint("YOCO_GDRIVE_MIRROR=URL (a copy of the Drive folders)"))
    if isinstance(e, gdown.exceptions.DownloadError):
        problem = classify_text(text)
        if problem:
            return problem_error(problem, what)
        return FetchError(f"download of {what} failed ({_short(text)})", "run again to resume")
    return e


def connection_cause(e: BaseException) -> str:
    """Why a connection failed, in a few words, from the innermost exception that says
    (requests wraps urllib3, which wraps the socket error)."""
    import errno
    import socket

    seen, todo = set(), [e]
    while todo:
        x = todo.pop(0)
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, socket.gaierror) or "NameResolution" in type(x).__name__:
            return "its name does not resolve (no network, or no DNS)"
        if isinstance(x, ConnectionRefusedError):
            return "the connection was refused"
        if isinstance(x, TimeoutError) or "Timeout" in type(x).__name__:
            return "the connection timed out"
        if isinstance(x, OSError) and x.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "the network is unreachable"
        todo += [a for a in getattr(x, "args", ()) if isinstance(a, BaseException)]
        todo += [c for c in (getattr(x, "reason", None), x.__cause__, x.__context__) if isinstance(c, BaseException)]
    return f"{type(e).__name__}"


def network_hint(mirror: str) -> str:
    """What works without a network: a mirror, or the file downloaded by hand and imported."""
    return (f"check the network; without one, download the file by hand and run `yoco import FILE` "
            f"(dynamics: `yoco dynamics SET --from-file FILE`), or set {mirror}")


def drive_link(url: str) -> str | None:
    """The page a person opens for a Drive request's file or folder id (None if the URL has none)."""
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    ident = q.get("id", [""])[0]
    if not ident or "drive.google.com" not in url:
        return None
    kind = "drive/folders" if "folderview" in url or "folders" in url else "file/d"
    return f"https://drive.google.com/{kind}/{ident}"


def _short(text: str) -> str:
    return " ".join(text.split())[:200]


class MirrorClient:
    """gdrive://FOLDER/PATH -> BASE/FOLDER/PATH over plain HTTP (a local copy of the Drive folders)."""

    def __init__(self, base: str):
        self.base = base.rstrip("/")

    def url(self, folder_id: str, path: str) -> str:
        if any(c in path for c in "*?["):
            raise FetchError(f"YOCO_GDRIVE_MIRROR cannot resolve the pattern {path!r}",
                             "give that entry an exact URL with YOCO_REGISTRY")
        return f"{self.base}/{folder_id}/{urllib.parse.quote(path)}"


# -- finding a file in a folder listing ---------------------------------------------------
def find_in_listing(files: list[DriveFile], pattern: str, what: str) -> DriveFile:
    """The one file whose path ends with `pattern` (component-wise, globs allowed)."""
    want = [p for p in pattern.split("/") if p]
    hits = [f for f in files if _suffix_match(f.path.split("/"), want)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise FetchError(f"{what}: no file {pattern} in the Drive folder ({len(files)} files listed)",
                         "the folder layout changed; point the entry at the right URL with YOCO_REGISTRY")
    raise FetchError(f"{what}: {len(hits)} files in the Drive folder match {pattern} "
                     f"({', '.join(h.path for h in hits[:3])})", "make the entry's path exact with YOCO_REGISTRY")


def _suffix_match(parts: list[str], want: list[str]) -> bool:
    if len(parts) < len(want):
        return False
    tail = parts[len(parts) - len(want):]
    return all(fnmatch.fnmatchcase(p, w) for p, w in zip(tail, want))
