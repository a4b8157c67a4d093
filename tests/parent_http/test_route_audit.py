"""Route-by-route gaps of the HTTP audit: what earlier tests only touched, proven here.

Admin read routes return what PROTOCOL.md promises (not just the envelope), nodes never see
webhook secrets unless the parent shares them, dispatch without online nodes says so, the
reaper's expiries are visible through the API, and a refused signed request cannot be replayed.
"""

from __future__ import annotations

import json

import httpx
import pytest

from cascade_cli.domain.reaper import reap_expired
from cascade_cli.web.app import create_app
from tests.parent_http.conftest import (
    ADMIN_SECRET,
    WX,
    Api,
    P,
    envelope_err,
    envelope_ok,
    make_settings,
)

pytestmark = pytest.mark.anyio

HOOK = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=SECRET-KEY-123"


async def _cycle(api: Api, creds, tok: str) -> dict:
    envelope_ok(await api.as_node(creds, "POST", "/heartbeat", json={}))
    task_id = await api.setup_task(tok, n_feeds=1)
    envelope_ok(await api.admin("POST", "/dispatch-task", tok, params={"task_id": task_id}))
    pkg = envelope_ok(await api.as_node(creds, "POST", "/claim-task"))
    feed = pkg["feeds"][0]["id"]
    envelope_ok(await api.as_node(creds, "POST", "/upload-articles", json={
        "allocation_id": pkg["allocation_id"], "epoch": pkg["epoch"], "articles": [
            {"feed_id": feed, "title": "a", "url": "https://e/a", "publish_time": 1700000000}]}))
    envelope_ok(await api.as_node(creds, "POST", "/report-completion", json={
        "allocation_id": pkg["allocation_id"], "task_id": task_id, "article_count": 1,
        "results": [{"feed_id": feed, "status": "success", "article_count": 1}]}))
    return pkg


async def test_admin_read_routes_return_what_the_protocol_promises(api):
    creds = api.node("reader")
    tok = api.token()
    pkg = await _cycle(api, creds, tok)
    feed = pkg["feeds"][0]["id"]
    for prefix in (P, WX):
        h = api.bearer(tok)
        logs = envelope_ok(await api.client.get(prefix + "/sync-logs", headers=h,
                                                params={"node_id": "reader"}))
        done = [e for e in logs["list"] if e["operation"] == "report_completion"]
        assert done and done[0]["node_name"] == "reader" and done[0]["direction"] == "inbound"
        assert done[0]["status"] == "ok" and done[0]["count"] == 1
        assert done[0]["created_at"].endswith("Z") and "error" in done[0]
        status = envelope_ok(await api.client.get(prefix + "/feed-status", headers=h))
        row = next(x for x in status if x["feed_id"] == feed)
        assert row["article_count"] == 1 and row["latest_article_time"].endswith("Z")
        assert row["freshness_seconds"] is not None and row["last_status"] == "success"
        assert row["last_allocation_id"] == pkg["allocation_id"]
        counts = envelope_ok(await api.client.get(prefix + "/pending-allocations", headers=h))
        assert counts["pending"] == 0 and counts["in_progress"] == 0
        assert counts["completed_today"] == 1 and counts["failed_today"] == 0
        assert counts["online_nodes"] == 1
        node = envelope_ok(await api.client.get(prefix + "/nodes/reader", headers=h))
        assert node["name"] == "reader" and "secret_hash" not in node
        assert "hmac-sha256" not in json.dumps(node)


async def test_node_crud_and_credentials_never_show_a_hash(api):
    tok = api.token()
    created = envelope_ok(await api.admin("POST", "/nodes", tok, json={"name": "crud"}))
    rotated = envelope_ok(await api.admin("POST", "/nodes/crud/credentials", tok))
    updated = envelope_ok(await api.admin("PUT", f"/nodes/{created['id']}", tok,
                                          json={"max_capacity": 7, "description": "d"}))
    assert updated["max_capacity"] == 7
    revoked = envelope_ok(await api.admin("DELETE", "/nodes/crud/credentials", tok))
    listing = envelope_ok(await api.admin("GET", "/nodes", tok))
    for payload in (created, rotated, updated, revoked, listing):
        text = json.dumps(payload)
        assert "hmac-sha256" not in text and "secret_hash" not in text
    # the old secret stops at once after revocation, the rotated one too
    creds = {"Authorization": f"AK-SK {rotated['api_key']}:{rotated['api_secret']}"}
    envelope_err(await api.client.get(P + "/heartbeat", headers=creds), 401)
    for bad in ({"max_capacity": 0}, {"max_capacity": "x"}, {"enabled": "maybe"}):
        envelope_err(await api.admin("PUT", "/nodes/crud", tok, json=bad), 422)
    envelope_err(await api.admin("PUT", "/nodes/nope", tok, json={"description": "x"}), 404)
    envelope_err(await api.admin("POST", "/nodes/nope/credentials", tok), 404)
    envelope_err(await api.admin("DELETE", "/nodes/nope", tok), 404)


async def _tasks_seen_by_node(api: Api) -> list[dict]:
    creds = api.node("lister")
    tok = api.token()
    envelope_ok(await api.admin("POST", "/message-tasks", tok, json={
        "name": "hooked", "mps_id": [], "web_hook_url": HOOK,
        "headers": {"X-Token": "hdr-secret"}, "cookies": "sid=cookie-secret"}))
    return envelope_ok(await api.as_node(creds, "GET", "/message-tasks"))


async def test_nodes_get_tasks_without_webhook_secrets(api):
    seen = await _tasks_seen_by_node(api)
    assert [t["name"] for t in seen] == ["hooked"]
    text = json.dumps(seen)
    for secret in ("SECRET-KEY-123", "hdr-secret", "cookie-secret"):
        assert secret not in text
    assert "web_hook_url" not in seen[0]


async def test_parent_may_share_webhook_secrets_with_nodes(store, clock, tmp_path):
    settings = make_settings(tmp_path, parent={"share_webhook_secrets": True})
    app = create_app(store, clock, settings, admin_secret=ADMIN_SECRET)
    transport = httpx.ASGITransport(app=app, client=("10.0.0.2", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://parent") as client:
        seen = await _tasks_seen_by_node(Api(client, app, store, clock, settings))
    assert seen[0]["web_hook_url"] == HOOK and seen[0]["cookies"] == "sid=cookie-secret"


async def test_dispatch_without_online_nodes_says_the_work_waits(api):
    tok = api.token()
    api.node("sleeper")  # exists, never sent a heartbeat
    task_id = await api.setup_task(tok, n_feeds=2)
    r = await api.admin("POST", "/dispatch-task", tok, params={"task_id": task_id})
    data = envelope_ok(r)
    assert data["online_nodes"] == 0 and data["allocations_created"] >= 1
    assert "no child node is online" in r.json()["message"]
    listed = envelope_ok(await api.admin("GET", "/allocations", tok,
                                         params={"status": "pending"}))
    assert listed["total"] == data["allocations_created"]


async def test_expired_lease_is_requeued_and_logged_visibly(api):
    creds = api.node("dies")
    tok = api.token()
    envelope_ok(await api.as_node(creds, "POST", "/heartbeat", json={}))
    task_id = await api.setup_task(tok, n_feeds=1)
    envelope_ok(await api.admin("POST", "/dispatch-task", tok, params={"task_id": task_id}))
    pkg = envelope_ok(await api.as_node(creds, "POST", "/claim-task"))
    api.clock.advance(api.settings.parent.lease_ttl + 1)
    with api.store.session() as s:
        assert reap_expired(s, api.clock.now(), api.settings)["requeued"] == 1
    alloc = envelope_ok(await api.admin("GET", "/allocations", tok))["list"][0]
    assert alloc["id"] == pkg["allocation_id"] and alloc["status"] == "pending"
    logs = envelope_ok(await api.admin("GET", "/sync-logs", tok,
                                       params={"operation": "lease_expired"}))["list"]
    assert logs and logs[0]["allocation_id"] == pkg["allocation_id"]
    assert logs[0]["detail"]["outcome"] == "requeued"
    # the superseded holder's late write is fenced off
    r = await api.as_node(creds, "PUT", "/task-status", json={
        "allocation_id": pkg["allocation_id"], "status": "executing", "epoch": pkg["epoch"]})
    envelope_err(r, 409, "lease_superseded")


async def test_refused_signed_request_cannot_be_replayed(api):
    creds = api.node("signer")
    body = json.dumps({"allocation_id": "nope", "status": "executing"}).encode()
    headers = {**api.signed(creds, "PUT", P + "/task-status", body),
               "Content-Type": "application/json"}
    r = await api.client.put(P + "/task-status", content=body, headers=headers)
    envelope_err(r, 404, "allocation_not_found")
    r = await api.client.put(P + "/task-status", content=body, headers=headers)
    envelope_err(r, 401, "replayed")
