"""The registry: one artifact a line, pooch-style, bundled and extendable.

    name  sha256:<hex>|-  url  [key=value ...]

`-` means the publisher gave no sha256: the digest seen on the first download is
recorded in the store and shown by `yoco fetch --list`. URLs are `https://...`,
`http://...`, `gdrive://<folder id>/<path inside the folder>` (a path component may be a
glob such as `conv3in_*_ipc1`) or `local:<what>` for data that cannot be downloaded
(ImageNet). Attributes used by `yoco fetch`:

    kind      set | dataset | dynamics | scores | file | local
    size      exact size in bytes (published); approx_size: an estimate (derived)
    md5       a published MD5, checked in addition to the sha256
    set, format, dataset, ipc, factor, experiment, file   how a condensed set is imported
    role      which file of a real dataset this is (archive, train-images, ...)

`YOCO_REGISTRY=path[:path...]` adds entries or overrides bundled ones by name (mirrors).
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

BUNDLED = Path(__file__).with_name("registry.txt")
KINDS = ("set", "dataset", "dynamics", "scores", "file", "local")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=,-]*(/[A-Za-z0-9][A-Za-z0-9._@+=,-]*)*$")
_SHA_RE = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
_SCHEMES = ("https://", "http://", "gdrive://", "file://", "local:")  # file://: a copy downloaded by hand


@dataclass
class Entry:
    name: str
    sha256: str | None
    url: str
    attrs: dict[str, str] = field(default_factory=dict)
    origin: str = "bundled"

    @property
    def kind(self) -> str:
        return self.attrs.get("kind", "file")

    @property
    def scheme(self) -> str:
        return self.url.split(":", 1)[0] if not self.url.startswith("https") else "http"

    @property
    def size(self) -> int | None:
        return int(self.attrs["size"]) if "size" in self.attrs else None

    @property
    def approx_size(self) -> int | None:
        return int(self.attrs["approx_size"]) if "approx_size" in self.attrs else None

    @property
    def md5(self) -> str | None:
        return self.attrs.get("md5")

    @property
    def group(self) -> str:
        """What the file belongs to: a condensed set, a real dataset, or itself."""
        if self.kind == "set":
            return self.attrs.get("set", self.name)
        if self.kind in ("dataset", "local"):
            return self.attrs.get("dataset", self.name)
        return self.name

    def gdrive_parts(self) -> tuple[str, str]:
        """(folder id, path inside the folder) of a gdrive:// URL."""
        rest = self.url[len("gdrive://"):]
        folder, _, path = rest.partition("/")
        return folder, path


def _parse_line(line: str, where: str) -> Entry | None:
    text = line.split(" #", 1)[0].split("\t#", 1)[0].strip()
    if not text or text.startswith("#"):
        return None
    parts = text.split()
    if len(parts) < 3:
        raise UsageError(f"{where}: expected `name sha256:<hex>|- url [key=value...]`, got {text!r}",
                         "fix the registry line")
    name, digest, url, *rest = parts
    if not _NAME_RE.match(name) or ".." in name.split("/"):
        raise UsageError(f"{where}: invalid name {name!r}", "use letters, digits, . _ - separated by '/'")
    sha = None
    if digest != "-":
        m = _SHA_RE.match(digest)
        if not m:
            raise UsageError(f"{where}: digest must be `sha256:<64 hex digits>` or `-`, got {digest!r}",
                             "never guess a hash: write `-` and yoco records the one it sees")
        sha = m.group(1).lower()
    if not url.startswith(_SCHEMES):
        raise UsageError(f"{where}: unsupported URL {url!r}",
                         "use https://, http://, gdrive://FOLDER/PATH, file:///PATH (a copy on this machine) or local:")
    attrs = {}
    for kv in rest:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise UsageError(f"{where}: expected key=value, got {kv!r}", "attributes look like kind=set")
        attrs[k] = v
    if attrs.get("kind", "file") not in KINDS:
        raise UsageError(f"{where}: unknown kind {attrs['kind']!r}", f"use one of {', '.join(KINDS)}")
    for k in ("size", "approx_size", "ipc", "factor", "experiment"):
        if k in attrs and not attrs[k].lstrip("-").isdigit():
            raise UsageError(f"{where}: {k} must be an integer, got {attrs[k]!r}", "fix the registry line")
    for k, least in _LEAST.items():  # a size of -5 bytes or an IPC of 0 describes no real file
        if k in attrs and int(attrs[k]) < least:
            raise UsageError(f"{where}: {k} must be at least {least}, got {attrs[k]}", "fix the registry line")
    return Entry(name, sha, url, attrs, origin=where.rsplit(":", 1)[0])


_LEAST = {"size": 0, "approx_size": 0, "ipc": 1, "factor": 1}


def parse(text: str, origin: str) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for i, line in enumerate(text.splitlines(), 1):
        e = _parse_line(line, f"{origin}:{i}")
        if e is not None:
            out[e.name] = e
    return out


class Registry:
    def __init__(self, entries: dict[str, Entry]):
        self.entries = entries

    def __iter__(self):
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            raise self._unknown(name) from None

    def matching(self, query: str) -> list[Entry]:
        """Entries named `query` or under it (`idc/cifar10` -> idc/cifar10/ipc1, ipc10, ...)."""
        q = query.strip("/")
        return [e for e in self if e.name == q or e.name.startswith(q + "/") or e.group == q]

    def select(self, tokens: list[str]) -> list[Entry]:
        """`idc cifar10` reads as the path idc/cifar10; failing that, each token is a name of its own."""
        tokens = [t for t in tokens if t.strip("/")]
        if not tokens:
            raise UsageError("name what to fetch", "see `yoco fetch --list`")
        hits = self.matching("/".join(t.strip("/") for t in tokens))
        if hits:
            return hits
        out: list[Entry] = []
        for t in tokens:
            h = self.matching(t)
            if not h:
                # `idc cifar11` is a typo in a path, `cifar10 mnsit` one in a name: report the closer
                joined = "/".join(tokens)
                raise self._unknown(max([t, joined], key=self._closeness) if len(tokens) > 1 else t)
            out.extend(e for e in h if e not in out)
        return out

    def _closeness(self, query: str) -> float:
        names = self.names_and_groups()
        return max((difflib.SequenceMatcher(None, query, n).ratio() for n in names), default=0.0)

    def names_and_groups(self) -> list[str]:
        seen: set[str] = set()
        for e in self:
            parts = e.name.split("/")
            seen.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
            seen.add(e.group)
        return sorted(seen)

    def _unknown(self, name: str) -> UsageError:
        close = difflib.get_close_matches(name, self.names_and_groups(), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `yoco fetch --list`"
        return UsageError(f"nothing named {name!r} in the registry", hint)


def user_registry_paths() -> list[Path]:
    env = os.environ.get("YOCO_REGISTRY", "")
    return [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]


def load() -> Registry:
    """The bundled registry with every YOCO_REGISTRY file applied on top, in order."""
    entries = parse(BUNDLED.read_text(encoding="utf-8"), "registry.txt")
    for p in user_registry_paths():
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot read YOCO_REGISTRY file {p} ({e.strerror or e})",
                             "point YOCO_REGISTRY at a readable registry file") from None
        entries.update(parse(text, str(p)))
    return Registry(entries)
