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
from sqlalchemy.engine import make_url

from tests.dbservers import fresh_database
from tests.hardening.blackhole import SwitchProxy
from tests.hardening.helpers import setup_parent
from tests.parent_http.procs import ParentProc, write_config

pytestmark = pytest.mark.slow
P = "/api/v1/cascade"
BOUND = 6.0  # seconds: connect/statement timeouts of 2 s, plus a retry and slack


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("mysql", marks=pytest.mark.mysql)])
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    with fresh_database(request.param) as url:
        yield url


def _timed(c: httpx.Client, method: str, path: str, **kw: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = c.request(method, path, **kw)  # type: ignore[arg-type]
    return r, time.monotonic() - started


def test_black_holed_database_answers_503_fast_then_recovers(tmp_path: Path,
                                                             server_url: str) -> None:
    real = make_url(server_url)
    proxy = SwitchProxy(real.host or "127.0.0.1", real.port or 5432)
    proxied = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    # init through the real address; the parent only through the proxy
    config = write_config(tmp_path, proxied, scheduler={"enabled": False},
                          notify={"enabled": False}, reaper_interval=3600)
    text = config.read_text().replace("  pool_size: 20\n", "  pool_size: 4\n  connect_timeout: 2\n"
                                      "  statement_timeout: 2\n  pool_timeout: 2\n")
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
            if "mysql" in server_url:  # the same code paths; PostgreSQL runs them all
                routes = routes[::2]
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
