"""A flaky HTTP proxy on loopback, in front of the S3 server: a network that fails, seeded.

Every request is read in full, then, with probability ``fail_rate`` (drawn from a seeded
generator), one of three faults happens instead of a clean answer:

- ``error``: a 500 ``InternalError`` that never reaches the server;
- ``drop``: the connection is closed without an answer, the server never saw the request;
- ``lost_answer``: the request IS forwarded (an upload lands, a copy happens), then the answer
  is dropped, so the client cannot tell that it succeeded and must try again.

No request fails more than ``max_consecutive`` times in a row (per method and path): the network
is flaky, not down, and a client that retries enough always gets through. Counters tell the test
how much went wrong.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

FAULTS = ("error", "drop", "lost_answer")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te"}


class FlakyProxy:
    def __init__(
        self,
        upstream: str,
        fail_rate: float = 0.3,
        seed: int = 0,
        max_consecutive: int = 3,
        latency_s: float = 0.0,
    ) -> None:
        u = urlsplit(upstream)
        self.upstream_host, self.upstream_port = u.hostname or "127.0.0.1", u.port or 80
        self.fail_rate, self.max_consecutive = fail_rate, max_consecutive
        # A round trip's worth of delay per request, as a remote endpoint has and loopback lacks.
        self.latency_s = latency_s
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._streak: Counter[tuple[str, str]] = Counter()
        self.requests = 0
        self.faults: Counter[str] = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def failed(self) -> int:
        return sum(self.faults.values())

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _decide(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests += 1
            key = (method, path)
            if self._streak[key] < self.max_consecutive and self._rng.random() < self.fail_rate:
                self._streak[key] += 1
                fault = self._rng.choice(FAULTS)
                self.faults[fault] += 1
                return fault
            self._streak.pop(key, None)
            return None

    def _forward(self, method: str, path: str, headers: Any, body: bytes) -> tuple[Any, bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            fwd = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
            if body or "content-length" in (k.lower() for k in fwd):
                fwd["Content-Length"] = str(len(body))
            conn.request(method, path, body=body or None, headers=fwd)
            resp = conn.getresponse()
            return resp, resp.read()
        finally:
            conn.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _handle(self) -> None:
                body = self._body()
                if proxy.latency_s:
                    time.sleep(proxy.latency_s)
                fault = proxy._decide(self.command, self.path)
                if fault == "error":
                    msg = (
                        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError'
                        b"</Code><Message>flaky proxy</Message></Error>"
                    )
                    self.send_response(500)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(msg)
                    return
                if fault == "drop":
                    self.close_connection = True
                    return
                resp, data = proxy._forward(self.command, self.path, self.headers, body)
                if fault == "lost_answer":
                    self.close_connection = True
                    return
                self.send_response(resp.status, resp.reason)
                head = self.command == "HEAD"  # its Content-Length is the object's size
                for k, v in resp.getheaders():
                    if k.lower() in HOP_BY_HOP or (k.lower() == "content-length" and not head):
                        continue
                    self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
