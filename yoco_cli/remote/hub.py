"""The Hugging Face Hub client: dataset repos down (into huggingface_hub's own cache) and up.

Every transfer goes through `huggingface_hub` (its cache under HF_HUB_CACHE, resumable downloads,
HF_ENDPOINT, HF_TOKEN / `hf auth login`, HF_HUB_OFFLINE); this module only chooses what to ask for
and turns its exceptions into yoco's one-line errors. The environment is read at each call (the
library reads it once at import), so a test or a script may set it late.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import FetchError, ResourceError, UsageError

PREFIX = "hf:"
EXTRA = 'pip install "yoco-cli[hub]"'
# The files a set needs: the card, parquet shards, yoco's own files, image-folder trees.
PATTERNS = ["README.md", "*.parquet", "**/*.parquet", "yoco/*", "*/*.png", "*/*.jpg", "*/*.jpeg", "*/*/*.png",
            "*/*/*.jpg", "*/*/*.jpeg"]
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_TRUE = ("1", "true", "yes", "on")


def require(what: str) -> None:
    """One line, exit 2, naming the extra, when the hub extra is not installed."""
    missing = []
    for mod in ("huggingface_hub", "pyarrow", "yaml"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise ResourceError(f"{what} needs yoco's [hub] extra ({', '.join(missing)} not installed)", f"run `{EXTRA}`")


def parse(spec: str) -> tuple[str, str | None]:
    """`hf:OWNER/NAME[@REVISION]` -> (repo id, revision or None)."""
    body = spec.removeprefix(PREFIX)
    repo, _, revision = body.partition("@")
    if not _REPO.match(repo) or ".." in repo or (body.count("@") and not revision):
        raise UsageError(f"{spec!r} is not a Hub dataset name", "write hf:OWNER/NAME or hf:OWNER/NAME@REVISION")
    return repo, revision or None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None


def _cache() -> str | None:
    return os.environ.get("HF_HUB_CACHE") or None


def _api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=_endpoint())


@dataclass
class Remote:
    """A revision resolved on the Hub: its commit and the size of each file yoco would download."""
    repo: str
    sha: str
    sizes: dict[str, int]

    def wanted_bytes(self) -> int:
        from fnmatch import fnmatch

        return sum(s for p, s in self.sizes.items() if any(fnmatch(p, pat) for pat in PATTERNS))


def resolve(repo: str, revision: str | None) -> Remote:
    """Ask the Hub which commit `revision` is and how large the files are (one API call)."""
    with errors(repo, revision):
        info = _api().dataset_info(repo, revision=revision, files_metadata=True)
    sizes = {s.rfilename: int(s.size or 0) for s in (info.siblings or [])}
    return Remote(repo, str(info.sha), sizes)


def download(repo: str, revision: str | None, offline: bool) -> Path:
    """The snapshot folder (in the Hugging Face cache) of `revision`, downloading what is missing.
    Offline, only the cache is read (refs/<branch> -> snapshots/<sha>)."""
    from huggingface_hub import snapshot_download

    with errors(repo, revision, offline):
        path = snapshot_download(repo, repo_type="dataset", revision=revision, cache_dir=_cache(),
                                 endpoint=_endpoint(), local_files_only=offline, allow_patterns=PATTERNS)
    return Path(path)


def upload(folder: Path, repo: str, *, private: bool, revision: str | None, create_pr: bool,
           message: str) -> str:
    """Create the dataset repo (if needed) and commit the folder; the commit's URL (or the PR's)."""
    api = _api()
    with errors(repo, revision):
        api.create_repo(repo, repo_type="dataset", private=private or None, exist_ok=True)  # None: the owner's default
        if revision and not create_pr:
            api.create_branch(repo, repo_type="dataset", branch=revision, exist_ok=True)
        info = api.upload_folder(repo_id=repo, folder_path=str(folder), repo_type="dataset", revision=revision,
                                 create_pr=create_pr, commit_message=message)
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", "") or "")


@contextlib.contextmanager
def errors(repo: str, revision: str | None, offline: bool = False) -> Iterator[None]:
    """huggingface_hub's exceptions as yoco's one-line errors (exit 4: the Hub or the network)."""
    from huggingface_hub import errors as hfe

    rev = f" at revision {revision}" if revision else ""
    try:
        yield
    except hfe.GatedRepoError:
        raise FetchError(f"{repo} is gated on the Hub", "accept its conditions on its Hub page, then set HF_TOKEN "
                                                        "(or run `hf auth login`)") from None
    except hfe.RepositoryNotFoundError:
        raise FetchError(f"the Hub has no dataset repo {repo} (or it is private)",
                         "check the name; for a private repo set HF_TOKEN (or run `hf auth login`)") from None
    except hfe.RevisionNotFoundError:
        raise FetchError(f"{repo} has no revision {revision!r}", "name a branch, a tag or a commit sha") from None
    except (hfe.LocalEntryNotFoundError, hfe.OfflineModeIsEnabled):
        where = "offline (--offline, YOCO_OFFLINE or HF_HUB_OFFLINE)" if offline or hub_offline() else "unreachable"
        raise FetchError(f"{repo}{rev} is not in the Hugging Face cache and the Hub is {where}",
                         "fetch it once with the network on (HF_HUB_CACHE says where the cache is)") from None
    except hfe.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise FetchError(f"the Hub answered {status} for {repo}{rev}: {_first_line(e)}",
                         "check HF_TOKEN's rights and HF_ENDPOINT; run again if the Hub was busy") from None
    except _transport_errors() as e:
        raise FetchError(f"cannot reach the Hub for {repo} ({_first_line(e)})",
                         "check the network (or HF_ENDPOINT); fetched files stay cached") from None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The network failures of whichever HTTP client this huggingface_hub uses (httpx2, httpx, requests)."""
    import importlib

    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def snapshot_sha(path: Path) -> str:
    """The commit of a snapshot folder: huggingface_hub names them by it."""
    return path.name
