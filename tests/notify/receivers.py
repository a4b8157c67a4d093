"""Real HTTP receivers on 127.0.0.1 for notification tests.

``Receiver`` is a threaded ``http.server``; a ``behaviour(request) -> (status, headers, body)``
callable decides each answer (or sleeps, for a hanging receiver). It also works as an HTTP
proxy target: requests for http://qyapi.weixin.qq.com/... sent through it arrive with the
absolute URL as path and the original Host header, so channel detection can be tested against
the real host names without leaving the machine.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Request:
    method: str
    path: str
    host: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Receiver:
    behaviour: Callable[[Request], Answer] = field(
        default=lambda r: (200, {"Content-Type": "application/json"}, b'{"ok":true}'))
    requests: list[Request] = field(default_factory=list)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                parts = urlsplit(self.path)
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                req = Request("POST", path, (self.headers.get("Host") or "").split(":")[0],
                              {k.lower(): v for k, v in self.headers.items()}, body)
                receiver.requests.append(req)
                status, headers, out = receiver.behaviour(req)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GarbageServer:
    """Accepts a connection, answers bytes that are not HTTP, closes."""

    def __init__(self, payload: bytes = b"SSH-2.0-OpenSSH_9.0\r\n\x00\xff garbage") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.payload = payload
        self.hits = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.hits += 1
            try:
                conn.recv(65536)
                conn.sendall(self.payload)
            except OSError:
                pass
            finally:
                conn.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def stop(self) -> None:
        self.sock.close()
