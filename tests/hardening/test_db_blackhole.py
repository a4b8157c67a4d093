"""A database that accepts TCP and never answers (issue 16 point 3): a real ``serve-parent``
on PostgreSQL or MariaDB through a switchable proxy answers 503 ``database_unavailable``
within seconds on every kind of route (health, admin, heartbeat, long-poll claim), then
serves again once the database answers again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from cascade_cli.errors import StoreError
from cascade_cli.store.engine import Store
from cascade_cli.store.timeouts import DbTimeouts
from tests.dbservers import fresh_database
from tests.hardening.blackhole import SwitchProxy
from tests.hardening.helpers import setup_parent
from tests.parent_http.procs import ParentProc, write_config

pytestmark = pytest.mark.slow
P = "/api/v1/cascade"
BOUND = 6.0  # seconds: connect/statement timeouts of 2 s, plus a retry and slack


@pytest.fixture
def mysql_url() -> Iterator[str]:
    with fresh_database("mysql") as url:
        yield url


def _timed(c: httpx.Client, method: str, path: str, **kw: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = c.request(method, path, **kw)  # type: ignore[arg-type]
    return r, time.monotonic() - started


@pytest.mark.postgres
def test_black_holed_database_answers_503_fast_then_recovers(tmp_path: Path,
                                                             pg_url: str) -> None:
    server_url = pg_url
    real = make_url(server_url)
    proxy = SwitchProxy(real.host or "127.0.0.1", real.port or 5432)
    proxied = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    # init through the real address; the parent only through the proxy
    config = write_config(tmp_path, proxied, scheduler={"enabled": False},
                          notify={"enabled": False}, reaper_interval=3600)
    text = config.read_text().replace("  pool_size: 20\n", "  pool_size: 4\n  connect_timeout: 1\n"
                                      "  statement_timeout: 0.5\n  pool_timeout: 2\n")
    config.write_text(text)
    admin, heads = setup_parent(config, server_url)
    node = heads["c1"]
    try:
        with ParentProc(config) as parent, httpx.Client(base_url=parent.url, timeout=60) as c:
            assert c.get("/readyz").status_code == 200
            assert c.post(P + "/heartbeat", headers=node, json={}).status_code == 200
            assert c.get(P + "/nodes", headers=admin).status_code == 200

            proxy.set_blackhole(True)
            routes = [
                ("GET", "/readyz", {}),
                ("GET", P + "/nodes", {"headers": admin}),
                ("POST", P + "/heartbeat", {"headers": node, "json": {}}),
                ("POST", P + "/claim-task?wait=3", {"headers": node}),
            ]
            for method, path, kw in routes:
                r, took = _timed(c, method, path, **kw)
                assert r.status_code == 503, (path, r.status_code, r.text)
                assert r.json()["error"] == "database_unavailable", r.text
                assert r.headers.get("Retry-After"), r.headers
                assert took < BOUND, (path, took)

            proxy.set_blackhole(False)
            deadline = time.monotonic() + 20
            while c.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "the parent did not recover"
                time.sleep(0.5)
            assert c.post(P + "/heartbeat", headers=node, json={}).status_code == 200
            assert c.get(P + "/nodes", headers=admin).status_code == 200
            r = c.post(P + "/claim-task?wait=0", headers=node)
            assert r.status_code == 200, r.text
    finally:
        proxy.close()


@pytest.mark.mysql
def test_black_holed_mysql_is_unavailable_fast_then_recovers(mysql_url: str) -> None:
    """The same limits on MySQL/MariaDB (PyMySQL's own timeouts), at the store: the parent's
    routes reach the database only through it (the PostgreSQL test runs them all)."""
    real = make_url(mysql_url)
    proxy = SwitchProxy(real.host or "127.0.0.1", real.port or 3306)
    proxied = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    store = Store.from_url(proxied, pool_size=2,
                           limits=DbTimeouts(connect=2, statement=1, pool=2))
    try:
        store.ping()
        with store.session() as s:
            assert s.execute(text("SELECT 1")).scalar() == 1
        def select_one() -> None:
            with store.session() as s:
                s.execute(text("SELECT 1"))

        proxy.set_blackhole(True)
        for attempt in (store.ping, select_one):
            started = time.monotonic()
            with pytest.raises(StoreError, match="unreachable"):
                attempt()
            assert time.monotonic() - started < BOUND
        proxy.set_blackhole(False)
        store.ping()
        with store.session() as s:
            assert s.execute(text("SELECT 1")).scalar() == 1
    finally:
        store.dispose()
        proxy.close()


@pytest.mark.postgres
def test_slow_statement_is_cancelled_by_the_server_and_named(pg_url: str) -> None:
    """A merely slow statement: the server's own statement_timeout cancels it (before the
    client's deadline), the error names the setting, and the pooled connection stays usable."""
    store = Store.from_url(pg_url, pool_size=1, limits=DbTimeouts(statement=1))
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match="database.statement_timeout"), \
                store.session() as s:
            s.execute(text("SELECT pg_sleep(5)"))
        assert time.monotonic() - started < 1.9  # the server's cancel, not the client's
        with store.session() as s:
            assert s.execute(text("SHOW statement_timeout")).scalar() == "1s"
    finally:
        store.dispose()
