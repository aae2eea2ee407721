"""A scriptable HTTP server on 127.0.0.1 for the fetch tests (no test may need the internet).

    with Loopback() as srv:
        srv.add("/a.bin", data, cut_after=1000)      # first response stops after 1000 bytes
        url = srv.url("/a.bin")
        ...
        srv.requests("/a.bin")  -> [headers dict, ...] one per request received

Behaviours per route: Range support (or `ignore_range`), a status code, a content type,
a delay before the headers (slow server), cutting the body short for the first `cut_times`
requests (`cut_after`) or for every request (`truncate_to`), an ETag, and no Content-Length at
all (`no_length`: the body ends when the connection closes, as HTTP/1.0 servers do).
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from typing_extensions import Self  # typing.Self is 3.11+


@dataclass
class Route:
    body: bytes
    status: int = 200
    ctype: str = "application/octet-stream"
    delay: float = 0.0
    cut_after: int | None = None  # send this many bytes then hang up...
    cut_times: int = 1  # ...on this many first requests
    truncate_to: int | None = None  # always announce the full length but send only this much
    ignore_range: bool = False
    no_length: bool = False
    etag: str | None = '"v1"'
    requests: list[dict] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server_version = "loopback/1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        route = self.server.routes.get(self.path.split("?")[0])
        if route is None:
            self._send(404, b"no such file", "text/plain")
            return
        route.requests.append({k.lower(): v for k, v in self.headers.items()} | {"path": self.path})
        n = len(route.requests)
        if route.delay:
            time.sleep(route.delay)
        if route.status != 200:
            self._send(route.status, route.body, route.ctype)
            return
        body, start = route.body, 0
        m = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
        if m and not route.ignore_range:
            start = int(m.group(1))
            if start >= len(body):
                self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(body)}"})
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Type", route.ctype)
        if not route.no_length:
            self.send_header("Content-Length", str(len(payload)))
        if route.etag:
            self.send_header("ETag", route.etag)
        self.end_headers()
        if route.cut_after is not None and n <= route.cut_times:
            payload = payload[: route.cut_after]
        if route.truncate_to is not None:
            payload = payload[: route.truncate_to]
        try:
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


class Loopback:
    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.server.routes = {}
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, path: str, body: bytes, **kw) -> str:
        self.server.routes[path] = Route(body, **kw)
        return self.url(path)

    def url(self, path: str) -> str:
        return self.base + path

    def requests(self, path: str) -> list[dict]:
        return self.server.routes[path].requests
