"""Errors that name their real cause (issue 16 point 6): a full disk, a read-only SQLite file,
an unmigrated database, an unparsable request head, an admin token whose stored expiry has
passed, node names that differ only by case."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, event, text, update

import cascade_cli
from cascade_cli.clock import FakeClock, SystemClock
from cascade_cli.config import load_settings
from cascade_cli.domain import tokens
from cascade_cli.store import migrate
from cascade_cli.store.engine import Store
from cascade_cli.store.models import AdminToken
from cascade_cli.web.app import create_app
from tests.dbservers import PG_ADMIN_URL
from tests.hardening.helpers import setup_parent
from tests.parent_http.conftest import ADMIN_SECRET, make_settings
from tests.parent_http.procs import ParentProc, env_for, write_config

P = "/api/v1/cascade"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _client(store: Store, settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    clock = FakeClock()
    app = create_app(store, clock, settings, admin_secret=ADMIN_SECRET)
    token = ""
    if migrate.current_revision(store) is not None:
        with store.session() as s:
            token, _row = tokens.issue(s, clock.now(), ADMIN_SECRET, ttl=3600)
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://parent") as client:
        yield client, token


@pytest.mark.anyio
async def test_full_disk_is_named_not_busy(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'full.db'}")
    migrate.upgrade(store)

    def cap(dbapi_conn: Any, _record: Any) -> None:
        # SQLITE_FULL, as a full disk gives it: the file may not grow past its pages.
        cur = dbapi_conn.cursor()
        pages = cur.execute("PRAGMA page_count").fetchone()[0]
        cur.execute(f"PRAGMA max_page_count = {pages}")
        cur.close()

    gen = _client(store, make_settings(tmp_path))
    client, token = await gen.__anext__()
    event.listen(store.engine, "connect", cap)
    store.engine.dispose()
    try:
        r = None
        for i in range(400):
            r = await client.post(P + "/feeds", headers={"Authorization": f"Bearer {token}"},
                                  json={"id": f"F{i}", "mp_name": "x" * 200,
                                        "url": f"https://example.com/{'y' * 500}/{i}.xml"})
            if r.status_code != 200:
                break
        assert r is not None and r.status_code == 503, r.text if r else None
        body = r.json()
        assert body["error"] == "database_full", body
        assert "storage is full" in body["message"]
        assert int(r.headers["Retry-After"]) >= 30
    finally:
        await gen.aclose()
        store.dispose()


@pytest.mark.anyio
async def test_unmigrated_database_is_not_ready(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'empty.db'}")
    gen = _client(store, make_settings(tmp_path))
    client, _token = await gen.__anext__()
    try:
        r = await client.get("/readyz")
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "schema_out_of_date"
        assert "cascade init" in r.json()["message"]
        # A route on the same database says the same, not "busy, retry shortly".
        r = await client.post(P + "/heartbeat", json={},
                              headers={"Authorization": f"AK-SK CN{'c' * 32}:CS{'d' * 43}"})
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "schema_out_of_date", r.text
        migrate.upgrade(store)
        r = await client.get("/readyz")
        assert r.status_code == 200 and r.json()["data"]["schema"] == migrate.head_revision()
    finally:
        await gen.aclose()
        store.dispose()


def _as_other_user() -> list[str]:
    """A command prefix running as an unprivileged user when we are root (root writes any
    file whatever its mode)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("running as root needs setpriv (util-linux) to test file permissions")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


@contextmanager
def _reachable_by_others(*paths: Path) -> Iterator[None]:
    """Let the unprivileged user traverse to our interpreter, venv and source for the test's
    duration: a checkout made by ``mktemp -d`` (as CI's fresh clone can be) is mode 0700, and
    the other user then cannot import cascade_cli at all. Only the search bit is added, only
    where it is missing, and it is taken away again afterwards."""
    changed: list[tuple[Path, int]] = []
    try:
        for path in paths:
            for folder in [*reversed(path.resolve().parents), path.resolve()]:
                if not folder.is_dir() or any(folder == done for done, _ in changed):
                    continue
                mode = stat.S_IMODE(folder.stat().st_mode)
                if not mode & stat.S_IXOTH:
                    folder.chmod(mode | stat.S_IXOTH)
                    changed.append((folder, mode))
        yield
    finally:
        for folder, mode in reversed(changed):
            folder.chmod(mode)


@pytest.mark.slow
def test_read_only_sqlite_names_file_and_permissions(tmp_path: Path) -> None:
    # Outside pytest's private temporary folder: the unprivileged user must reach it.
    folder = Path(tempfile.mkdtemp(prefix="cascade-ro-"))
    folder.chmod(0o755)
    config = write_config(folder)
    setup_parent(config)
    data = folder / "data"
    db = data / "cascade.db"
    data.chmod(0o555)
    db.chmod(0o444)
    code = Path(cascade_cli.__file__).parent
    try:
        with _reachable_by_others(code, Path(sys.prefix), Path(sys.executable)):
            r = subprocess.run([*_as_other_user(), sys.executable, "-m", "cascade_cli", "init",
                                "--child", "n9"], env=env_for(config), capture_output=True,
                               text=True, timeout=60, cwd=folder)
    finally:
        data.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)
    assert r.returncode == 1, (r.returncode, r.stderr)
    err = " ".join(r.stderr.split())
    assert "Traceback" not in err, err
    assert str(db) in err and "mode 0o444" in err and "not writable" in err, err
    assert "server is running" not in err, err


@pytest.mark.slow
def test_serve_parent_content_length_token_expiry_node_case_and_schema(tmp_path: Path) -> None:
    config = write_config(tmp_path, scheduler={"enabled": False}, notify={"enabled": False})
    admin, _heads = setup_parent(config)
    settings = load_settings(config, environ={})
    with ParentProc(config) as parent, httpx.Client(base_url=parent.url, timeout=30) as c:
        # 1. A request head uvicorn cannot parse: still the envelope, as JSON.
        with socket.create_connection(("127.0.0.1", parent.port), timeout=10) as sock:
            sock.sendall(b"POST /api/v1/cascade/heartbeat HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: abc\r\n\r\n{}")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), raw
        assert b"application/json" in head.lower(), raw
        answer = json.loads(body)
        assert answer["code"] == 400 and answer["error"] == "bad_request", answer
        assert "Content-Length" in answer["message"]

        # 2. Node names that differ only by case are one name.
        r = c.post(P + "/nodes", headers=admin, json={"name": "Edge-1"})
        assert r.status_code == 200, r.text
        r = c.post(P + "/nodes", headers=admin, json={"name": "edge-1"})
        assert r.status_code == 409 and r.json()["error"] == "duplicate_name", r.text
        assert "Edge-1" in r.json()["message"]

        # 3. The stored expiry of an admin token counts, whatever the token claims.
        store = Store.from_url(settings.database_url)
        try:
            with store.session() as s:
                s.execute(update(AdminToken).values(
                    expires_at=SystemClock().now() - timedelta(seconds=5)))
            r = c.get(P + "/nodes", headers=admin)
            assert r.status_code == 401 and r.json()["error"] == "token_expired", r.text

            # 4. /readyz checks the schema, not only the connection.
            assert c.get("/readyz").status_code == 200
            with store.session() as s:
                s.execute(text("DELETE FROM alembic_version"))
            r = c.get("/readyz")
            assert r.status_code == 503 and r.json()["error"] == "schema_out_of_date", r.text
        finally:
            store.dispose()


@pytest.mark.postgres
@pytest.mark.anyio
async def test_read_only_postgres_is_named(tmp_path: Path, pg_url: str) -> None:
    """A standby, or a database set read-only: 503 database_read_only, not "busy"."""
    store = Store.from_url(pg_url)
    migrate.upgrade(store)
    gen = _client(store, make_settings(tmp_path))
    client, token = await gen.__anext__()
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = store.engine.url.database
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
        store.engine.dispose()  # new sessions see the setting
        r = await client.post(P + "/feeds", headers={"Authorization": f"Bearer {token}"},
                              json={"id": "F1", "url": "https://example.com/f.xml"})
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "database_read_only", r.text
    finally:
        await gen.aclose()
        store.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" RESET default_transaction_read_only'))
        admin.dispose()
