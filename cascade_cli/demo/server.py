"""A small local feed server for the demo, the tests and the benchmark.

Serves the bundled sample feeds (``cascade_cli/demo/feeds/``) with ``ETag`` and
``Last-Modified`` (answering 304 to a matching conditional GET), and optionally synthetic feeds
``/synthetic/<n>.xml``: realistic 20-item RSS documents, different per ``n``.

Run on its own: ``python -m cascade_cli.demo.server --port 8900 [--synthetic]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

CONTENT_TYPES = {".xml": "application/rss+xml; charset=utf-8",
                 ".atom": "application/atom+xml; charset=utf-8",
                 ".json": "application/feed+json; charset=utf-8"}
LAST_MODIFIED = "Fri, 20 Nov 2026 08:00:00 GMT"
_BASE = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
_WORDS = ["cascade", "parent", "child", "feed", "lease", "epoch", "spool", "heartbeat",
          "claim", "fetch", "article", "bridge", "公众号", "任务", "分发", "节点", "心跳", "文章",
          "订阅", "更新", "数据", "系统"]


def feeds_dir() -> Path:
    return Path(str(resources.files("cascade_cli.demo") / "feeds"))


def manifest() -> list[dict[str, Any]]:
    return json.loads((feeds_dir() / "manifest.json").read_text(encoding="utf-8"))


def synthetic_rss(n: int, items: int = 20) -> bytes:
    """A realistic RSS 2.0 document of ``items`` entries, unique per ``n``."""
    parts = []
    for i in range(items):
        words = " ".join(_WORDS[(n * 7 + i * 3 + k) % len(_WORDS)] for k in range(8))
        when = _BASE - timedelta(hours=i * 5 + n % 7, minutes=(n * 13 + i) % 60)
        body = escape(f"<p>{words}.</p>" * 6)
        parts.append(
            f"<item><title>Feed {n} article {i}: {escape(words[:60])}</title>"
            f"<link>https://bench.cascade.local/{n}/posts/{i}.html</link>"
            f"<guid isPermaLink=\"false\">bench-{n}-{i}</guid>"
            f"<pubDate>{format_datetime(when)}</pubDate>"
            f"<author>author{i % 5}@bench.cascade.local (Author {i % 5})</author>"
            f"<description>{escape(words)}</description>"
            f"<content:encoded>{body}</content:encoded></item>")
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\" "
            "xmlns:content=\"http://purl.org/rss/1.0/modules/content/\"><channel>"
            f"<title>Bench feed {n}</title><link>https://bench.cascade.local/{n}/</link>"
            f"<description>Synthetic feed {n}</description>{''.join(parts)}</channel></rss>\n"
            ).encode()


class FeedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real web server
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle plus the client's
    # delayed ACK adds ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    server_version = "CascadeDemoFeeds/1"
    files: dict[str, tuple[bytes, str]] = {}
    synthetic = False
    delay = 0.0  # seconds per request: the demo imitates a real network
    _cache: dict[int, bytes] = {}

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.delay:
            time.sleep(self.delay)
        path = self.path.split("?", 1)[0]
        if path.startswith("/synthetic/") and self.synthetic:
            stem = path.rsplit("/", 1)[1].split(".", 1)[0]
            if not stem.isdigit():
                return self._send(404, b"not found", "text/plain")
            n = int(stem)
            body = self._cache.get(n)
            if body is None:
                body = synthetic_rss(n)
                if len(self._cache) < 20_000:
                    self._cache[n] = body
            return self._send(200, body, CONTENT_TYPES[".xml"])
        entry = self.files.get(path.lstrip("/"))
        if entry is None:
            return self._send(404, b"not found", "text/plain")
        body, ctype = entry
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag or \
                self.headers.get("If-Modified-Since") == LAST_MODIFIED:
            return self._send(304, b"", ctype, etag=etag)
        return self._send(200, body, ctype, etag=etag)

    def _send(self, status: int, body: bytes, ctype: str, etag: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if etag:
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", LAST_MODIFIED)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 304:
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                # The fetcher stopped reading (size limit, timeout, shutdown): that is its
                # right, not a server error worth a traceback.
                self.close_connection = True


class FeedServer:
    """The server on a daemon thread. ``url_for(file)`` gives a feed's URL."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 synthetic: bool = False, delay: float = 0.0) -> None:
        files = {}
        for p in feeds_dir().iterdir():
            if p.suffix in CONTENT_TYPES:
                files[p.name] = (p.read_bytes(), CONTENT_TYPES[p.suffix])
        handler = type("Handler", (FeedHandler,), {"files": files, "synthetic": synthetic,
                                                   "delay": delay, "_cache": {}})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        bound_host, bound_port = self.httpd.server_address[:2]
        self.host = bound_host.decode() if isinstance(bound_host, bytes | bytearray) \
            else str(bound_host)
        self.port = int(bound_port)
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True,
                                        name="feed-server")

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url_for(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def start(self) -> FeedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--synthetic", action="store_true")
    args = parser.parse_args()
    server = FeedServer(args.host, args.port, synthetic=args.synthetic)
    print(json.dumps({"port": server.port}), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.httpd.serve_forever()


if __name__ == "__main__":
    main()
