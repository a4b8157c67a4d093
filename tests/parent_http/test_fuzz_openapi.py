"""Schemathesis against /openapi.json: whatever a client sends, never a 5xx, always the envelope.

Each operation of the canonical prefix (the other prefix is the same router) is called with a
node credential and with an admin token, so the generated bodies and parameters get past
authentication and reach validation and the store. Sized to run in well under a minute.
"""

from __future__ import annotations

import json
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from cascade_cli.clock import SystemClock
from cascade_cli.parent import tokens
from cascade_cli.parent.app import create_app
from cascade_cli.store import migrate, nodes
from cascade_cli.store.engine import Store


@pytest.fixture
def fuzz_env(tmp_path, settings):
    store = Store.from_url(f"sqlite:///{tmp_path / 'fuzz.db'}")
    migrate.upgrade(store)
    clock = SystemClock()
    secret = b"fuzz-admin-secret-" + b"y" * 40
    with store.session() as s:
        _n, creds = nodes.create_node(s, clock.now(), "fuzz-node", max_capacity=4)
        token, _row = tokens.issue(s, clock.now(), secret, ttl=3600)
    app = create_app(store, clock, settings, admin_secret=secret)
    app.state.cascade.waiters.shutdown()  # long polls answer at once: no 60 s waits here
    yield {"app": app, "headers": [
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
        @given(case=operation.as_strategy())
        @settings(max_examples=int(os.environ.get("CASCADE_FUZZ_EXAMPLES", "25")), deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            for headers in fuzz_env["headers"]:
                response = case.call(headers=headers)
                where = (case.method, case.formatted_path, response.text[:500])
                assert response.status_code < 500, where
                body = json.loads(response.content)
                assert set(body) >= {"code", "message", "data"}, where
                if response.status_code >= 400:
                    assert body["code"] == response.status_code and body["error"], where

        check()
