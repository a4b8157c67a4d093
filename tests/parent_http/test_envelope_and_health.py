"""Envelope, health, metrics, unknown paths and methods, both prefixes, OpenAPI."""

from __future__ import annotations

import pytest

from tests.parent_http.conftest import WX, P, envelope_err, envelope_ok

pytestmark = pytest.mark.anyio


async def test_healthz_readyz(api):
    data = envelope_ok(await api.client.get("/healthz"))
    assert data["status"] == "ok" and data["protocol"] == 1
    data = envelope_ok(await api.client.get("/readyz"))
    assert data["status"] == "ready"


async def test_readyz_reports_database_down(clock, settings):
    import httpx

    from cascade_cli.store.engine import Store
    from cascade_cli.web.app import create_app

    down = Store.from_url("postgresql://nobody@127.0.0.1:1/none")
    app = create_app(down, clock, settings, admin_secret=b"s" * 48)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://p") as client:
        envelope_err(await client.get("/readyz"), 503, "database_unavailable")
        envelope_ok(await client.get("/healthz"))
        # A store failure on a real route is a 503 envelope too, never a 500.
        r = await client.get(P + "/heartbeat", headers={"Authorization": "Bearer x.y.z"})
        assert r.status_code in (401, 503), r.text
    down.dispose()


async def test_unknown_path_is_404_envelope(api):
    for path in ("/nope", P + "/nope", WX + "/heartbeatx", "/api/v1/cascade"):
        envelope_err(await api.client.get(path), 404, "not_found")


async def test_wrong_method_is_405_envelope(api):
    r = await api.client.delete(P + "/claim-task")
    envelope_err(r, 405, "method_not_allowed")
    r = await api.client.post(WX + "/allocations")
    envelope_err(r, 405, "method_not_allowed")


async def test_both_prefixes_answer_heartbeat(api):
    creds = api.node()
    for prefix in (P, WX):
        r = await api.client.get(prefix + "/heartbeat", headers=api.plain(creds))
        data = envelope_ok(r)
        assert data["status"] == "alive" and data["node_name"] == "child-1"
        assert data["server_time"].endswith("Z") and data["protocol"] == 1


async def test_every_route_is_under_both_prefixes(api):
    spec = (await api.client.get("/openapi.json")).json()
    paths = {(p, m.upper()) for p, ops in spec["paths"].items() for m in ops}
    canon = {(p[len(P):], m) for p, m in paths if p.startswith(P + "/")}
    legacy = {(p[len(WX):], m) for p, m in paths if p.startswith(WX + "/")}
    assert canon == legacy
    expected = {
        ("/heartbeat", "GET"), ("/heartbeat", "POST"), ("/claim-task", "POST"),
        ("/pending-tasks", "GET"), ("/task-status", "PUT"), ("/upload-articles", "POST"),
        ("/report-completion", "POST"), ("/report-result", "POST"), ("/feeds", "GET"),
        ("/message-tasks", "GET"), ("/dispatch-task", "POST"), ("/allocations", "GET"),
        ("/pending-allocations", "GET"), ("/nodes", "GET"), ("/nodes", "POST"),
        ("/nodes/{node_id}", "GET"), ("/nodes/{node_id}", "PUT"),
        ("/nodes/{node_id}", "DELETE"), ("/nodes/{node_id}/credentials", "POST"),
        ("/feeds", "POST"), ("/feeds/{feed_id}", "PUT"), ("/feeds/{feed_id}", "DELETE"),
        ("/message-tasks", "POST"), ("/message-tasks/{task_id}", "PUT"),
        ("/message-tasks/{task_id}", "DELETE"), ("/sync-logs", "GET"), ("/feed-status", "GET"),
    }
    assert expected <= canon, expected - canon


async def test_openapi_is_served(api):
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert P + "/claim-task" in spec["paths"] and WX + "/claim-task" in spec["paths"]
    ids = [op["operationId"] for p in spec["paths"].values() for op in p.values()]
    assert len(ids) == len(set(ids))


async def test_metrics_exposes_required_series(api):
    creds = api.node()
    await api.client.get(P + "/heartbeat", headers=api.plain(creds))
    await api.client.get(P + "/heartbeat", headers={"Authorization": "AK-SK CNx:CSy"})
    r = await api.client.get("/metrics")
    assert r.status_code == 200
    text = r.text
    for name in ("cascade_allocations{", "cascade_claims_total", "cascade_lease_expiries_total",
                 "cascade_auth_failures_total{", "cascade_http_request_duration_seconds_bucket",
                 "cascade_online_nodes"):
        assert name in text, name
    assert 'route="/heartbeat"' in text
    assert 'cascade_auth_failures_total{reason="invalid_credentials"} 1.0' in text


async def test_error_responses_never_contain_secrets(api):
    creds = api.node()
    r = await api.client.get(P + "/heartbeat",
                             headers={"Authorization": f"AK-SK {creds.api_key}:CSwrongwrongwrongwrongwrong"})
    envelope_err(r, 401, "invalid_credentials")
    assert creds.api_secret not in r.text and "CSwrong" not in r.text
