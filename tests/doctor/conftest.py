"""Real broken situations for doctor: closed ports, foreign HTTP servers, a silent TCP server,
a fake parent with a skewed clock, and the real parent app served by uvicorn on a free port."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from cascade_cli.auth import NodeCredentials
from cascade_cli.clock import Clock, SystemClock
from cascade_cli.config import Settings, load_settings
from cascade_cli.doctor import DoctorContext, run_doctor
from cascade_cli.doctor.result import CheckResult
from cascade_cli.store import migrate
from cascade_cli.store import nodes as node_repo
from cascade_cli.store.engine import Store

ADMIN_SECRET = b"doctor-test-admin-secret-" + b"y" * 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, data: dict[str, Any], mode: int = 0o600) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    os.chmod(path, mode)
    return path


def child_config(tmp_path: Path, url: str, api_key: str = "CN" + "a" * 32,
                 api_secret: str = "CS" + "b" * 43, **cascade: Any) -> Path:
    block = {"enabled": True, "node_type": "child", "parent_api_url": url, "api_key": api_key,
             "api_secret": api_secret, **cascade}
    return write_config(tmp_path / "child.yaml",
                        {"cascade": block, "data_dir": str(tmp_path / "child-data")})


def diagnose(tmp_path: Path, config: Path | None, names: list[str] | None = None,
             clock: Clock | None = None, environ: dict[str, str] | None = None,
             timeout: float = 2.0, role: str | None = None
             ) -> tuple[dict[str, CheckResult], Any]:
    ctx = DoctorContext(config_path=str(config) if config else None,
                        environ=environ if environ is not None else {},
                        cwd=tmp_path, clock=clock or SystemClock(), timeout=timeout,
                        role_override=role)
    report = run_doctor(ctx, names)
    return {r.name: r for r in report.results}, report


# --- scripted HTTP servers -----------------------------------------------------------------

Handler = Callable[[BaseHTTPRequestHandler], tuple[int, Any, dict[str, str]]]


class Scripted:
    """A threaded HTTP server; ``answer(handler) -> (status, json-able body, headers)``."""

    def __init__(self, answer: Handler) -> None:
        outer = self
        self.requests: list[tuple[str, str, dict[str, str]]] = []

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                return

            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append((self.command, self.path, dict(self.headers)))
                status, body, headers = answer(self)
                data = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[[Handler], Scripted]]:
    made: list[Scripted] = []

    def make(answer: Handler) -> Scripted:
        s = Scripted(answer)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts TCP connections and never answers: the network-timeout situation."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def loop() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                accepted.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    t.join(2)
    for c in accepted:
        c.close()
    sock.close()


# --- the real parent app under uvicorn -----------------------------------------------------


@dataclass
class LiveParent:
    url: str
    store: Store
    settings: Settings
    config: Path
    clock: Clock = field(default_factory=SystemClock)

    def node(self, name: str, capacity: int = 2, online: bool = True) -> NodeCredentials:
        with self.store.session() as s:
            node, creds = node_repo.create_node(s, self.clock.now(), name, max_capacity=capacity)
            if online:
                node.last_heartbeat_at = self.clock.now()
        return creds


def parent_config(tmp_path: Path, **parent: Any) -> Path:
    data_dir = tmp_path / "parent-data"
    data_dir.mkdir(exist_ok=True)
    return write_config(tmp_path / "parent.yaml", {
        "data_dir": str(data_dir),
        "database": {"url": f"sqlite:///{data_dir / 'cascade.db'}"},
        "cascade": {"node_type": "parent"},
        "parent": {"host": "127.0.0.1", **parent}})


@pytest.fixture
def live_parent(tmp_path: Path) -> Iterator[LiveParent]:
    import uvicorn

    from cascade_cli.protocol import CANONICAL_PREFIX, LEGACY_PREFIX
    from cascade_cli.web.app import create_app

    cfg = parent_config(tmp_path)
    settings = load_settings(cfg, environ={})
    store = Store.from_url(settings.database_url)
    migrate.upgrade(store)
    app = create_app(store, SystemClock(), settings, admin_secret=ADMIN_SECRET)
    # create_app mounts parent/routes_doctor.py's GET /claimable under both prefixes
    paths = app.openapi()["paths"]
    assert f"{CANONICAL_PREFIX}/claimable" in paths and f"{LEGACY_PREFIX}/claimable" in paths
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield LiveParent(f"http://127.0.0.1:{port}", store, settings, cfg)
    finally:
        server.should_exit = True
        thread.join(5)
        store.dispose()


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)  # type: ignore[misc]
