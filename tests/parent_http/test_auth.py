"""Node credentials (plain and signed), admin tokens, cross-role refusals and throttling."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from cascade_cli.domain import tokens
from cascade_cli.store import nodes
from cascade_cli.store.models import AuthNonce, Feed, Node
from cascade_cli.web.app import create_app
from tests.parent_http.conftest import ADMIN_SECRET, WX, P, envelope_err, envelope_ok

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("http_fast_path")]


def _count(store, model) -> int:
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)))


async def test_plain_ok_and_unknown_key_same_as_wrong_secret(api):
    creds = api.node()
    envelope_ok(await api.client.get(P + "/heartbeat", headers=api.plain(creds)))
    wrong = {"Authorization": f"AK-SK {creds.api_key}:CS{'a' * 43}"}
    unknown = {"Authorization": f"AK-SK CN{'b' * 32}:{creds.api_secret}"}
    b1 = envelope_err(await api.client.get(P + "/heartbeat", headers=wrong), 401,
                      "invalid_credentials")
    b2 = envelope_err(await api.client.get(P + "/heartbeat", headers=unknown), 401,
                      "invalid_credentials")
    assert b1 == b2


async def test_missing_and_malformed_headers(api):
    envelope_err(await api.client.get(P + "/heartbeat"), 401, "missing_credentials")
    for header in ("AK-SK nocolon", "Basic abc", "Cascade-Ed25519 key=x", "AK-SK :"):
        envelope_err(await api.client.get(P + "/heartbeat", headers={"Authorization": header}),
                     401, "invalid_credentials")


async def test_plain_refused_when_disabled(store, clock, tmp_path):
    import httpx

    from tests.parent_http.conftest import Api, make_settings

    settings = make_settings(tmp_path, **{"parent.auth.allow_plain_secret": False})
    app = create_app(store, clock, settings, admin_secret=ADMIN_SECRET)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://p") as client:
        api = Api(client, app, store, clock, settings)
        creds = api.node()
        envelope_err(await client.get(P + "/heartbeat", headers=api.plain(creds)), 401,
                     "plain_auth_disabled")
        h = api.signed(creds, "GET", P + "/heartbeat")
        envelope_ok(await client.get(P + "/heartbeat", headers=h))


async def test_signed_get_post_and_query(api):
    creds = api.node()
    for prefix in (P, WX):
        path = prefix + "/heartbeat"
        envelope_ok(await api.client.get(path, headers=api.signed(creds, "GET", path)))
        body = json.dumps({"running": [], "version": "1.0"}).encode()
        h = api.signed(creds, "POST", path, body) | {"Content-Type": "application/json"}
        data = envelope_ok(await api.client.post(path, content=body, headers=h))
        assert data["status"] == "alive" and data["cancel"] == []
        pq = prefix + "/claim-task?wait=0&max=1"
        r = await api.client.post(pq, headers=api.signed(creds, "POST", pq))
        assert envelope_ok(r) is None and r.json()["message"] == "暂无待处理任务"


async def test_signed_tampered_body_or_path_is_refused(api):
    creds = api.node()
    path = P + "/heartbeat"
    h = api.signed(creds, "POST", path, b'{"version":"1"}') | {"Content-Type": "application/json"}
    envelope_err(await api.client.post(path, content=b'{"version":"2"}', headers=h), 401,
                 "invalid_credentials")
    h = api.signed(creds, "POST", P + "/claim-task?wait=0")
    envelope_err(await api.client.post(P + "/claim-task?wait=1", headers=h), 401,
                 "invalid_credentials")
    h = api.signed(creds, "GET", P + "/heartbeat")
    envelope_err(await api.client.get(WX + "/heartbeat", headers=h), 401, "invalid_credentials")


async def test_signed_skew_and_replay(api):
    creds = api.node()
    path = P + "/heartbeat"
    now = int(api.clock.now().timestamp())
    for ts in (now - 301, now + 301):
        envelope_err(await api.client.get(path, headers=api.signed(creds, "GET", path, ts=ts)),
                     401, "clock_skew")
    envelope_ok(await api.client.get(path, headers=api.signed(creds, "GET", path, ts=now - 299)))
    h = api.signed(creds, "POST", path, b"", nonce="abc123")
    envelope_ok(await api.client.post(path, headers=h))
    with api.store.session() as s:
        seen_before = s.get(Node, nodes.find_by_key(s, creds.api_key).id).last_heartbeat_at
    before = _count(api.store, AuthNonce)
    api.clock.advance(5)
    envelope_err(await api.client.post(path, headers=h), 401, "replayed")
    assert _count(api.store, AuthNonce) == before
    with api.store.session() as s:
        node = nodes.find_by_key(s, creds.api_key)
        assert node.last_heartbeat_at == seen_before  # the replay changed nothing


async def test_replay_is_shared_between_apps_on_one_database(api, store, clock, settings):
    import httpx

    creds = api.node()
    path = P + "/heartbeat"
    h = api.signed(creds, "GET", path, nonce="shared1")
    envelope_ok(await api.client.get(path, headers=h))
    other = create_app(store, clock, settings, admin_secret=ADMIN_SECRET)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other),
                                 base_url="http://p") as client:
        envelope_err(await client.get(path, headers=h), 401, "replayed")


async def test_disabled_node_is_403_and_changes_nothing(api):
    creds = api.node()
    with api.store.session() as s:
        nodes.set_enabled(s, api.clock.now(), "child-1", False)
    for h in (api.plain(creds), api.signed(creds, "POST", P + "/heartbeat")):
        envelope_err(await api.client.post(P + "/heartbeat", headers=h), 403, "node_disabled")
    with api.store.session() as s:
        assert nodes.find_by_key(s, creds.api_key).last_heartbeat_at is None
    # A wrong secret for a disabled node still says nothing about the node.
    wrong = {"Authorization": f"AK-SK {creds.api_key}:CS{'z' * 43}"}
    envelope_err(await api.client.get(P + "/heartbeat", headers=wrong), 401,
                 "invalid_credentials")


async def test_rotation_overlap_and_revocation(api):
    creds = api.node()
    with api.store.session() as s:
        _n, new = nodes.rotate_credentials(s, api.clock.now(), "child-1", 60)
    envelope_ok(await api.client.get(P + "/heartbeat", headers=api.plain(creds)))
    envelope_ok(await api.client.get(P + "/heartbeat", headers=api.plain(new)))
    envelope_ok(await api.client.get(P + "/heartbeat",
                                     headers=api.signed(creds, "GET", P + "/heartbeat")))
    api.clock.advance(61)
    envelope_err(await api.client.get(P + "/heartbeat", headers=api.plain(creds)), 401)
    with api.store.session() as s:
        nodes.revoke_credentials(s, api.clock.now(), "child-1")
    envelope_err(await api.client.get(P + "/heartbeat", headers=api.plain(new)), 401,
                 "invalid_credentials")


async def test_admin_tokens_valid_expired_revoked_forged(api):
    tok = api.token(ttl=60)
    envelope_ok(await api.admin("GET", "/allocations", tok))
    h = {"Authorization": "Bearer " + tok}
    envelope_ok(await api.client.get(WX + "/allocations", headers=h))
    import jwt

    bad = jwt.encode({"jti": "x", "role": "admin", "iss": "cascade-parent", "iat": 0,
                      "exp": 4102444800}, b"another-secret-" * 4, algorithm="HS256")
    envelope_err(await api.admin("GET", "/allocations", bad), 401, "invalid_token")
    envelope_err(await api.admin("GET", "/allocations", "not.a.jwt"), 401, "invalid_token")
    api.clock.advance(61)
    envelope_err(await api.admin("GET", "/allocations", tok), 401, "token_expired")
    tok2 = api.token()
    claims = tokens.decode(ADMIN_SECRET, tok2, api.clock.now())
    with api.store.session() as s:
        tokens.revoke(s, api.clock.now(), claims["jti"])
    envelope_err(await api.admin("GET", "/allocations", tok2), 401, "token_revoked")


async def test_cross_role_refusals_change_nothing(api):
    creds = api.node()
    tok = api.token()
    before = _count(api.store, Feed)
    r = await api.as_node(creds, "POST", "/feeds", json={"id": "X1", "url": "https://e/x"})
    envelope_err(r, 403, "admin_required")
    for method, path in (("POST", "/dispatch-task"), ("GET", "/allocations"),
                         ("GET", "/nodes"), ("POST", "/nodes/child-1/credentials"),
                         ("GET", "/sync-logs"), ("GET", "/pending-allocations")):
        envelope_err(await api.as_node(creds, method, path), 403, "admin_required")
    assert _count(api.store, Feed) == before
    for method, path in (("POST", "/heartbeat"), ("POST", "/claim-task"),
                         ("GET", "/pending-tasks"), ("PUT", "/task-status"),
                         ("POST", "/upload-articles"), ("POST", "/report-completion")):
        envelope_err(await api.admin(method, path, tok, json={}), 403, "node_required")
    # GET /heartbeat answers either role; GET /feeds and /message-tasks are open to nodes.
    data = envelope_ok(await api.admin("GET", "/heartbeat", tok))
    assert data["role"] == "admin" and data["node_id"] is None
    envelope_ok(await api.as_node(creds, "GET", "/feeds"))
    envelope_ok(await api.as_node(creds, "GET", "/message-tasks"))


async def test_failed_auth_is_throttled_per_address(store, clock, tmp_path):
    import httpx

    from tests.parent_http.conftest import make_settings

    settings = make_settings(tmp_path, **{"parent.auth.failed_attempts_limit": 3,
                                          "parent.auth.failed_attempts_window": 30})
    app = create_app(store, clock, settings, admin_secret=ADMIN_SECRET)
    bad = {"Authorization": f"AK-SK CN{'c' * 32}:CS{'d' * 43}"}
    a = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.7", 1)),
                          base_url="http://p")
    b = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.8", 1)),
                          base_url="http://p")
    async with a, b:
        for _ in range(3):
            envelope_err(await a.get(P + "/heartbeat", headers=bad), 401)
        r = await a.get(P + "/heartbeat", headers=bad)
        envelope_err(r, 429, "too_many_requests")
        assert 1 <= int(r.headers["Retry-After"]) <= 30
        envelope_err(await b.get(P + "/heartbeat", headers=bad), 401)  # other address
