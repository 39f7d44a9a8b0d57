"""A threaded HTTP server on 127.0.0.1 that serves in-memory files with controllable faults.

Usage::

    with LocalServer() as server:
        url = server.add("/ckpt.pt", data, fail_times=2)      # HTTP 500 twice, then the file
        ...
        assert [r.path for r in server.log] == ["/ckpt.pt"] * 3

Faults per route (each counted down per request): ``fail_times`` (answer ``fail_status``), ``delay_times``
(sleep ``delay`` seconds before answering: a client timeout), ``truncate_times`` (announce the full length,
send half of the body and close), ``html`` (serve a Drive-like HTML page as ``text/html``), ``html_as_binary``
(the same page as ``application/octet-stream``), ``status`` (a fixed status such as 404), ``omit_length`` (no
``Content-Length``: the body ends when the connection closes), ``redirect`` (answer 302 with this ``Location``,
a header ``X-Secret`` and a body that both say ``SECRET``), ``trickle`` (send the body one byte every ``trickle``
seconds). ``Range: bytes=N-``
is honoured (206 + ``Content-Range``) unless ``ranges=False``. Routes match the request path including its
query, so a Google Drive template ``http://127.0.0.1:<port>/uc?id={id}`` works, and :meth:`add_hf_file`
serves the Hugging Face ``/<repo>/resolve/<revision>/<file>`` endpoint.
"""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

from evaluator.untrusted.egress import LOOPBACK_ENV

SECRET_BODY = b"SECRET-BODY of a redirect"
DRIVE_LIKE_PAGE = (b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>"
                   b"<body><p>Google Drive can't scan this file for viruses.</p></body></html>")


@dataclass
class Route:
    body: bytes
    content_type: str = "application/octet-stream"
    status: int = 200
    fail_times: int = 0
    fail_status: int = 500
    delay_times: int = 0
    delay: float = 0.0
    truncate_times: int = 0
    html: bool = False
    html_as_binary: bool = False
    ranges: bool = True
    omit_length: bool = False
    redirect: str = ""
    trickle: float = 0.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict = field(default_factory=dict)


class LocalServer:
    """The server; a context manager that starts it on a free port and stops it."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def add(self, path: str, body: bytes, **faults) -> str:
        """Serve *body* at *path* with the given :class:`Route` faults; returns the full URL."""
        self.routes[path] = Route(body, **faults)
        return self.url(path)

    def add_hf_file(self, repo_id: str, filename: str, body: bytes, revision: str = "main", **faults) -> str:
        """Serve *body* where the Hub serves ``hf://<repo_id>/<filename>@<revision>``; returns the hf:// URL."""
        self.add(f"/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}", body, **faults)
        return f"hf://{repo_id}/{filename}" + ("" if revision == "main" else f"@{revision}")

    def requests_to(self, path: str) -> list[Request]:
        return [request for request in self.log if request.path == path]

    def __enter__(self) -> "LocalServer":
        self._loopback = os.environ.get(LOOPBACK_ENV)
        os.environ[LOOPBACK_ENV] = "1"  # the tests' loopback allowance of evaluator.untrusted.egress, while serving
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._loopback is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = self._loopback
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler_for(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def _answer(self, send_body: bool) -> None:
            with server._lock:
                server.log.append(Request(self.command, self.path, dict(self.headers.items())))
                route = server.routes.get(self.path)
                fault = _take_fault(route) if route else None
            if route is None:
                return self._plain(404, b"not found")
            if fault == "fail":
                return self._plain(route.fail_status, b"server error")
            if fault == "delay":
                time.sleep(route.delay)
            if route.status != 200:
                return self._plain(route.status, b"status")
            if route.redirect:
                self.send_response(302)
                self.send_header("Location", route.redirect)
                self.send_header("X-Secret", "SECRET-HEADER")
                self.send_header("Content-Length", str(len(SECRET_BODY)))
                self.end_headers()
                self.wfile.write(SECRET_BODY)
                return None
            if route.html or route.html_as_binary:
                kind = "text/html; charset=utf-8" if route.html else "application/octet-stream"
                return self._send(200, DRIVE_LIKE_PAGE, kind, send_body)
            self._send_file(route, fault == "truncate", send_body)

        def _send_file(self, route: Route, truncate: bool, send_body: bool) -> None:
            body, start = route.body, 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if match and route.ranges:
                start = int(match[1])
                if start >= len(body):
                    return self._plain(416, b"range not satisfiable")
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", route.content_type)
            if not route.omit_length:
                self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Accept-Ranges", "bytes" if route.ranges else "none")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            if not send_body:
                return
            part = body[start:]
            try:
                if route.trickle:
                    for index in range(len(part)):
                        self.wfile.write(part[index:index + 1])
                        self.wfile.flush()
                        time.sleep(route.trickle)
                else:
                    self.wfile.write(part[: len(part) // 2] if truncate else part)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            if truncate:
                self.close_connection = True

        def _send(self, status: int, body: bytes, content_type: str, send_body: bool = True) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        def _plain(self, status: int, body: bytes) -> None:
            self._send(status, body, "text/plain")

    return Handler


def _take_fault(route: Route) -> str | None:
    """The fault this request gets, counting it down (failures first, then delays, then truncations)."""
    for name in ("fail", "delay", "truncate"):
        remaining = getattr(route, f"{name}_times")
        if remaining > 0:
            setattr(route, f"{name}_times", remaining - 1)
            return name
    return None
