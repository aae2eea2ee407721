"""Test helpers for the Hugging Face Hub (no test may need the internet).

- `authors_repo(folder, ...)`: a small dataset repo in the layout of the YOCO authors' rethinkdc sets
  (he-yang/2025-rethinkdc-*): parquet written by `datasets` itself (Image feature + a ClassLabel
  column named `class_id`) under data/, and a README.md whose YAML is what push_to_hub writes.
- `hub_cache(cache, repo, files)`: huggingface_hub's cache layout for a dataset repo
  (datasets--OWNER--NAME/{blobs,snapshots/<sha>,refs/main}), as a real download leaves it.
- `FakeHub`: an HTTP server on 127.0.0.1 answering the endpoints huggingface_hub calls to download
  (revision info, tree listing, resolve) and to upload (create repo, preupload, commit); it records
  what arrived and stops when the `with` block ends.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SHA = "0123456789abcdef0123456789abcdef01234567"


def digits_pixels(n_per_class: int, classes: int = 10):
    """uint8 [N, 8, 8] images of the embedded digits, n per class, and their labels (class-sorted)."""
    import numpy as np

    from yoco_cli.data.digits import load_digits

    ds = load_digits()
    x = (ds.train_x.numpy()[:, 0] * 255).round().astype(np.uint8)
    y = ds.train_y.numpy()
    idx = [i for c in range(classes) for i in np.flatnonzero(y == c)[:n_per_class]]
    return x[idx], y[idx]


def authors_repo(folder: Path, n_per_class: int = 3, label: str = "class_id", names=None, card: dict | None = None,
                 labels=None, shuffle_seed: int | None = None) -> Path:
    """Write the repo's files into `folder` (data/train-00000-of-00001.parquet and README.md); rows are
    class-sorted unless `shuffle_seed` mixes them."""
    import datasets
    import numpy as np
    import yaml
    from PIL import Image

    x, y = digits_pixels(n_per_class)
    if shuffle_seed is not None:
        order = np.random.RandomState(shuffle_seed).permutation(len(y))
        x, y = x[order], y[order]
    if labels is not None:
        y = labels
    names = names or [f"digit {c}" for c in range(10)]
    feats = datasets.Features({"image": datasets.Image(), label: datasets.ClassLabel(names=names)})
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in x], label: [int(v) for v in y]},
                                    features=feats)
    shard = folder / "data" / "train-00000-of-00001.parquet"
    shard.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(shard))
    meta = {"dataset_info": {**ds.info._to_yaml_dict(),
                             "splits": [{"name": "train", "num_bytes": ds.data.nbytes, "num_examples": len(ds)}],
                             "download_size": shard.stat().st_size, "dataset_size": ds.data.nbytes},
            "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]}
    meta.update(card or {})
    (folder / "README.md").write_text("---\n" + yaml.safe_dump(meta) + "---\n# tiny digits\n")
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def hub_cache(cache: Path, repo: str, files: dict[str, bytes], sha: str = SHA) -> Path:
    """The cache folder of `repo` at commit `sha`, with refs/main pointing at it; the snapshot's files
    are relative symlinks into blobs/ (named by sha256, as for LFS files)."""
    base = cache / ("datasets--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(sha)
    for path, data in files.items():
        blob = base / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = base / "snapshots" / sha / path
        link.parent.mkdir(parents=True, exist_ok=True)
        depth = len(Path(path).parts) + 1  # up from snapshots/<sha>/<path...> to the repo folder
        link.symlink_to(Path(*[".."] * depth) / "blobs" / blob.name)
    return base / "snapshots" / sha


class FakeHub:
    """with FakeHub({"owner/name": files}) as hub: os.environ["HF_ENDPOINT"] = hub.url; ...; hub.commits"""

    def __init__(self, repos: dict[str, dict[str, bytes]] | None = None, sha: str = SHA):
        self.repos = dict(repos or {})
        self.sha = sha
        self.commits: list[dict] = []  # {"repo", "revision", "header", "files": {path: bytes}}
        self.created: list[dict] = []
        self.validated: list[dict] = []
        self.pulls: list[dict] = []  # README.md metadata the client asked the Hub to check
        self.requests: list[tuple[str, str]] = []

    def __enter__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    # -- answers ---------------------------------------------------------------------------
    def info(self, repo: str) -> dict:
        files = self.repos[repo]
        return {"id": repo, "_id": "0" * 24, "sha": self.sha, "private": False, "disabled": False, "gated": False,
                "tags": [], "downloads": 0, "likes": 0, "lastModified": "2026-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": p, "size": len(d), "blobId": git_blob_id(d),
                              "lfs": {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d), "pointerSize": 134}}
                             for p, d in sorted(files.items())]}

    def tree(self, repo: str) -> list[dict]:
        return [{"type": "file", "path": p, "size": len(d), "oid": git_blob_id(d),
                 "lfs": {"oid": hashlib.sha256(d).hexdigest(), "size": len(d), "pointerSize": 134}}
                for p, d in sorted(self.repos[repo].items())]


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _reply(self, status: int, body: bytes = b"", headers: dict | None = None, ctype="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, doc, status: int = 200):
            self._reply(status, json.dumps(doc).encode())

        def _missing(self, what: str):
            self._reply(404, json.dumps({"error": what}).encode(), {"X-Error-Code": "RepoNotFound"})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            path = self.path.split("?")[0]
            hub.requests.append((self.command, self.path))
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)(?:/revision/(.+))?", path)
            if m:
                return self._json(hub.info(m.group(1))) if m.group(1) in hub.repos else self._missing(m.group(1))
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path)
            if m:
                return self._json(hub.tree(m.group(1))) if m.group(1) in hub.repos else self._missing(m.group(1))
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/discussions/(\d+)", path)
            if m:
                return self._json({"title": hub.pulls[-1]["title"], "num": int(m.group(2)), "author": {"name": "me"},
                                   "createdAt": "2026-01-01T00:00:00.000Z", "status": "draft",
                                   "repo": {"name": m.group(1), "type": "dataset"}, "isPullRequest": True,
                                   "events": [], "changes": {"base": "refs/heads/main"}, "filesWithConflicts": []})
            m = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if m and m.group(1) in hub.repos and m.group(3) in hub.repos[m.group(1)]:
                data = hub.repos[m.group(1)][m.group(3)]
                etag = f'"{hashlib.sha256(data).hexdigest()}"'
                return self._reply(200, data, {"X-Repo-Commit": hub.sha, "ETag": etag, "X-Linked-Etag": etag,
                                               "X-Linked-Size": str(len(data))}, "application/octet-stream")
            self._missing(path)

        def do_POST(self):
            path = self.path.split("?")[0]
            hub.requests.append((self.command, self.path))
            body = self._body()
            if path == "/api/repos/create":
                doc = json.loads(body)
                hub.created.append(doc)
                name = f"{doc.get('organization') or 'me'}/{doc['name']}"
                return self._json({"url": f"{hub.url}/datasets/{name}", "name": name})
            if path == "/api/validate-yaml":
                hub.validated.append(json.loads(body))
                return self._json({"warnings": []})
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/preupload/(.+)", path)
            if m:
                files = json.loads(body).get("files", [])
                return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                             for f in files], "commitOid": hub.sha})
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/commit/(.+)", path)
            if m:
                return self._commit(m.group(1), m.group(2), body)
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/discussions", path)
            if m:  # a pull request opened as a draft; the commit then goes to refs/pr/1
                hub.pulls.append(json.loads(body))
                return self._json({"num": len(hub.pulls), "url": f"{hub.url}/datasets/{m.group(1)}/discussions/1"})
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/branch/(.+)", path)
            if m:
                return self._json({})
            self._missing(path)

        def _commit(self, repo: str, revision: str, body: bytes):
            header, files = {}, {}
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "header":
                    header = item["value"]
                elif item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            revision = urllib.parse.unquote(revision)
            to_pr = revision.startswith("refs/pr/") or "create_pr=1" in self.path
            hub.commits.append({"repo": repo, "revision": revision, "header": header, "files": files,
                                "create_pr": to_pr})
            hub.repos[repo] = {**hub.repos.get(repo, {}), **files}
            pr = f"{hub.url}/datasets/{repo}/discussions/{len(hub.pulls)}" if to_pr else None
            return self._json({"commitUrl": f"{hub.url}/datasets/{repo}/commit/{hub.sha}", "commitOid": hub.sha,
                               "pullRequestUrl": pr})

    return Handler
