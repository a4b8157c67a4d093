"""`run-child --burst` fails loudly (exit 1) when it gives up, and names a wrong port: what cron
jobs and scripts rely on (issue 19)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from cascade_cli.auth import generate_credentials
from cascade_cli.child.spool import Spool
from cascade_cli.child.worker import ChildWorker
from cascade_cli.client import AsyncParentClient
from tests.child.harness import child_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *a: Any) -> None:
        return


@pytest.fixture
def foreign_server(tmp_path: Path) -> Iterator[str]:
    """Python's own static file server: answers POST with 501 Not Implemented (HTML)."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Quiet(*a, directory=str(tmp_path)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def child_yaml(tmp_path: Path, url: str) -> Path:
    creds = generate_credentials()
    cfg = tmp_path / "child.yaml"
    cfg.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"),
        "cascade": {"enabled": True, "node_type": "child", "parent_api_url": url,
                    "api_key": creds.api_key, "api_secret": creds.api_secret}}))
    cfg.chmod(0o600)
    return cfg


@pytest.mark.slow
def test_burst_against_a_wrong_port_says_so_and_exits_1(tmp_path: Path,
                                                         foreign_server: str) -> None:
    cfg = child_yaml(tmp_path, foreign_server)
    proc = subprocess.run([sys.executable, "-m", "cascade_cli", "--config", str(cfg),
                           "run-child", "--burst"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    err = " ".join(proc.stderr.split())  # the console wraps long lines
    assert "HTTP 501" in err and "not a Cascade parent" in err
    assert "another web server listens on that port" in err
    assert "cascade.parent_api_url" in err and "Traceback" not in err


class Html503(BaseHTTPRequestHandler):
    def log_message(self, *a: Any) -> None:
        return

    def do_POST(self) -> None:  # noqa: N802
        body = b"<html><body>503 Service Temporarily Unavailable</body></html>"
        self.send_response(503)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def run_burst(tmp_path: Path, url: str) -> tuple[int, ChildWorker]:
    settings = child_settings(tmp_path, url, generate_credentials())
    c = settings.cascade

    async def go() -> tuple[int, ChildWorker]:
        async with AsyncParentClient(c.parent_api_url or "", c.api_key or "",
                                     c.api_secret or "", retries=0) as client:
            spool = Spool(settings.spool_path)
            try:
                worker = ChildWorker(settings, client, spool, burst=True, install_signals=False)
                code = await asyncio.wait_for(worker.run(), 30)
            finally:
                spool.close()
            return code, worker

    return asyncio.run(go())


def test_burst_gives_up_on_an_unreachable_parent_with_exit_1(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    code, worker = run_burst(tmp_path, f"http://127.0.0.1:{free_port()}")
    assert code == 1
    assert worker.gave_up is not None and "Connection refused" in worker.gave_up
    assert "giving up" in caplog.text and "exit 1" in caplog.text


def test_burst_against_a_proxy_5xx_page_names_it_and_exits_1(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Html503)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        code, worker = run_burst(tmp_path, f"http://127.0.0.1:{srv.server_address[1]}")
    finally:
        srv.shutdown()
        srv.server_close()
    assert code == 1
    assert worker.gave_up is not None
    assert "HTTP 503" in worker.gave_up and "not a Cascade parent" in worker.gave_up
    assert "check the host and port in cascade.parent_api_url" in caplog.text


class Throttled(BaseHTTPRequestHandler):
    def log_message(self, *a: Any) -> None:
        return

    def do_POST(self) -> None:  # noqa: N802
        body = (b'{"code": 429, "error": "too_many_requests", "data": null, "message": '
                b'"too many failed authentication attempts from this address"}')
        self.send_response(429)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_burst_throttled_by_the_auth_throttle_says_so_and_exits_1(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Throttled)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        code, worker = run_burst(tmp_path, f"http://127.0.0.1:{srv.server_address[1]}")
    finally:
        srv.shutdown()
        srv.server_close()
    assert code == 1
    assert "parent refuses requests" in caplog.text and "parent unavailable" not in caplog.text
    assert "auth throttle blocks this address" in caplog.text
    assert "cascade.api_key/api_secret" in caplog.text
