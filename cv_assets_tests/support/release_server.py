"""A static web server on 127.0.0.1 for release channels, with faults on demand (tests only)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


class ReleaseServer:
    """Serves ``root`` like a static web server; ``faults[path]`` replaces one path's answer.

    - ``404`` / ``500``: that status, no body;
    - ``truncated``: ``Content-Length: N``, then N/2 bytes and the connection closed;
    - ``error_mid_body``: the server fails after sending part of the body. Its status line has
      already gone out as 200, so, as a real server does, it aborts the (chunked) stream without
      the final chunk; the client sees a cut connection, never a clean end;
    - ``html``: a 200 with a proxy's error page instead of the file.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.faults: dict[str, str] = {}
        self.requests: list[str] = []
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet test output
                pass

            def _status(self, code: int, length: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(length))
                self.end_headers()

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                server.requests.append(path)
                fault = server.faults.get(path)
                file = (server.root / path.lstrip("/")).resolve()
                if fault in ("404", "500") or not file.is_relative_to(server.root):
                    return self._status(int(fault or 404), 0)
                if fault == "html":
                    body = b"<html><body>502 Bad Gateway</body></html>"
                    self._status(200, len(body))
                    self.wfile.write(body)
                    return None
                if not file.is_file():
                    return self._status(404, 0)
                data = file.read_bytes()
                if fault == "truncated":
                    self._status(200, len(data))
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                elif fault == "error_mid_body":
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    half = data[: len(data) // 2]
                    self.wfile.write(f"{len(half):x}\r\n".encode() + half + b"\r\n")
                    self.close_connection = True
                else:
                    self._status(200, len(data))
                    self.wfile.write(data)
                return None

        return Handler
