"""Schemathesis against /openapi.json: whatever a client sends, never a 5xx, always the envelope.

Each operation of the canonical prefix (the other prefix is the same router) is called with a
node credential and with an admin token, so the generated bodies and parameters get past
authentication and reach validation and the store. On SQLite and on PostgreSQL (which cannot
store U+0000: a NUL reaching it was a 500, issue 16); in about half of the examples every
string of the body, the query and the path gets a control character (NUL, ESC, DEL...)
inserted. Sized to run in well under a minute (``CASCADE_FUZZ_EXAMPLES`` per operation on
SQLite, ``CASCADE_FUZZ_EXAMPLES_PG`` on PostgreSQL).
"""

from __future__ import annotations

import json
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cascade_cli.clock import SystemClock
from cascade_cli.domain import tokens
from cascade_cli.store import migrate, nodes
from cascade_cli.store.engine import Store
from cascade_cli.web.app import create_app
from tests.dbservers import fresh_database

CONTROL = ["\x00", "\x01", "\x07", "\x1b", "\x1f", "\x7f", "a\x00", "\t\x00\n"]
EXAMPLES = {"sqlite": int(os.environ.get("CASCADE_FUZZ_EXAMPLES", "25")),
            "postgres": int(os.environ.get("CASCADE_FUZZ_EXAMPLES_PG", "12"))}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fuzz_db(request, tmp_path):
    if request.param == "sqlite":
        yield request.param, f"sqlite:///{tmp_path / 'fuzz.db'}"
        return
    with fresh_database("postgres") as url:
        yield request.param, url


def _poisoned(value, draw):
    """``value`` with a control character put into each of its strings (at a drawn place)."""
    if isinstance(value, str):
        at = draw(st.integers(0, len(value)))
        return value[:at] + draw(st.sampled_from(CONTROL)) + value[at:]
    if isinstance(value, list):
        return [_poisoned(v, draw) for v in value]
    if isinstance(value, dict):
        return {k: _poisoned(v, draw) for k, v in value.items()}
    return value


@pytest.fixture
def fuzz_env(fuzz_db, settings):
    kind, url = fuzz_db
    store = Store.from_url(url)
    migrate.upgrade(store)
    clock = SystemClock()
    secret = b"fuzz-admin-secret-" + b"y" * 40
    with store.session() as s:
        _n, creds = nodes.create_node(s, clock.now(), "fuzz-node", max_capacity=4)
        token, _row = tokens.issue(s, clock.now(), secret, ttl=3600)
    app = create_app(store, clock, settings, admin_secret=secret)
    app.state.cascade.waiters.shutdown()  # long polls answer at once: no 60 s waits here
    yield {"app": app, "kind": kind, "headers": [
        {"Authorization": f"AK-SK {creds.api_key}:{creds.api_secret}"},
        {"Authorization": f"Bearer {token}"}]}
    store.dispose()


@pytest.mark.timeout(120)
def test_no_server_errors(fuzz_env):
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_env["app"]).include(
        path_regex=r"^(/api/v1/cascade/|/healthz|/readyz)")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25

    for operation in operations:
        @given(case=operation.as_strategy(), data=st.data())
        @settings(max_examples=EXAMPLES[fuzz_env["kind"]], deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case, data):
            if data.draw(st.booleans(), label="control characters"):
                if isinstance(case.body, dict | list | str):
                    case.body = _poisoned(case.body, data.draw)
                if case.query:
                    case.query = _poisoned(dict(case.query), data.draw)
                if case.path_parameters:
                    case.path_parameters = _poisoned(dict(case.path_parameters), data.draw)
            for headers in fuzz_env["headers"]:
                response = case.call(headers=headers)
                where = (case.method, case.formatted_path, response.text[:500])
                assert response.status_code < 500, where
                body = json.loads(response.content)
                assert set(body) >= {"code", "message", "data"}, where
                if response.status_code >= 400:
                    assert body["code"] == response.status_code and body["error"], where

        check()
