"""ParentClient against real local servers: every failure lands in the ClientError tree."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from cascade_cli import auth
from cascade_cli.child.transport import FeedTransport, parent_transport
from cascade_cli.client import AsyncParentClient, ParentClient
from cascade_cli.errors import (
    BadCredentials,
    LeaseLost,
    NodeDisabled,
    ParentRejected,
    ParentServerError,
    ParentUnreachable,
    WrongEndpoint,
)
from cascade_cli.protocol import HeartbeatAnswer, HeartbeatCheck, PackageFeed, TaskPackage
from tests.child.servers import ScriptedServer, free_port, reply

CREDS = auth.generate_credentials()
P = "/api/v1/cascade"


def ok(data: Any) -> str:
    return json.dumps({"code": 0, "message": "ok", "data": data})


def err(status: int, code: str, message: str = "no") -> str:
    return json.dumps({"code": status, "message": message, "data": None, "error": code})


def client(url: str, sleeps: list[float] | None = None, **kw: Any) -> ParentClient:
    return ParentClient(url, CREDS.api_key, CREDS.api_secret, timeout=2,
                        sleep=(sleeps.append if sleeps is not None else lambda s: None), **kw)


def test_signed_request_is_verifiable_and_secret_never_sent() -> None:
    with ScriptedServer({f"{P}/claim-task": lambda h: reply(h, 200, ok(None)),
                         f"{P}/heartbeat": lambda h: reply(h, 200, ok({"status": "alive"}))}
                        ) as srv, client(srv.url) as c:
        assert c.claim(wait=0, max=3) == []
        assert c.heartbeat(running=["a1"], capacity=2).status == "alive"
        pub = auth.public_key_for(CREDS.api_secret)
        for req in srv.requests:
            header = req["headers"]["Authorization"]
            assert CREDS.api_secret not in header and CREDS.api_secret.encode() not in req["body"]
            parsed = auth.parse_authorization(header)
            assert isinstance(parsed, auth.SignedAuth) and parsed.api_key == CREDS.api_key
            assert auth.verify_signature(pub, req["method"], req["path"], parsed.timestamp,
                                         parsed.nonce, req["body"], parsed.signature)
        assert srv.requests[0]["path"] == f"{P}/claim-task?wait=0&max=3"
        assert json.loads(srv.requests[1]["body"])["running"] == ["a1"]


def test_plain_mode_and_legacy_prefix() -> None:
    with ScriptedServer({"/api/v1/wx/cascade/heartbeat": lambda h: reply(h, 200, ok({}))}
                        ) as srv, client(srv.url, auth_mode="plain",
                                         prefix="/api/v1/wx/cascade") as c:
        c.heartbeat_get()
        assert srv.requests[0]["headers"]["Authorization"] == \
            f"AK-SK {CREDS.api_key}:{CREDS.api_secret}"


def test_repr_hides_secret() -> None:
    assert CREDS.api_secret not in repr(client("http://x"))


def test_refused_is_unreachable_and_retried_boundedly() -> None:
    sleeps: list[float] = []
    with client(f"http://127.0.0.1:{free_port()}", sleeps, retries=3) as c, \
            pytest.raises(ParentUnreachable) as info:
        c.heartbeat_get()
    assert info.value.reason == "refused" and "Connection refused" in str(info.value)
    assert "serve-parent" in (info.value.hint or "")
    assert len(sleeps) == 3 and all(0 < s <= 15 for s in sleeps)


def test_dns_failure_not_retried() -> None:
    sleeps: list[float] = []
    with client("http://no-such-parent.invalid:8001", sleeps) as c, \
            pytest.raises(ParentUnreachable) as info:
        c.heartbeat_get()
    assert info.value.reason == "dns" and sleeps == []


def test_timeout() -> None:
    def slow(h: Any) -> None:
        time.sleep(1.5)
        reply(h, 200, ok({}))

    with ScriptedServer({f"{P}/heartbeat": slow}) as srv, \
            ParentClient(srv.url, CREDS.api_key, CREDS.api_secret, timeout=0.3, retries=0) as c, \
            pytest.raises(ParentUnreachable) as info:
        c.heartbeat_get()
    assert info.value.reason == "timeout"


def test_404_names_the_expected_path() -> None:
    with ScriptedServer({}) as srv, client(srv.url + "/api/v1") as c, \
            pytest.raises(WrongEndpoint) as info:
        c.claim()
    assert "/api/v1/api/v1/cascade/claim-task" in str(info.value)
    assert "404" in str(info.value) and "remove '/api/v1'" in (info.value.hint or "")
    assert len(srv.requests) == 1  # never retried


@pytest.mark.parametrize("status,code,exc,attr", [
    (401, "invalid_credentials", BadCredentials, "invalid_credentials"),
    (401, "clock_skew", BadCredentials, "clock_skew"),
    (403, "node_disabled", NodeDisabled, "node_disabled"),
    (409, "lease_superseded", LeaseLost, "lease_superseded"),
    (409, "invalid_transition", LeaseLost, "invalid_transition"),
])
def test_error_envelopes(status: int, code: str, exc: type, attr: str) -> None:
    with ScriptedServer({"*": lambda h: reply(h, status, err(status, code))}) as srv, \
            client(srv.url) as c, pytest.raises(exc) as info:
        c.set_status("a1", "executing", epoch=2)
    assert info.value.code == attr and len(srv.requests) == 1


def test_other_4xx_rejected_without_retry() -> None:
    with ScriptedServer({"*": lambda h: reply(h, 422, err(422, "invalid_input"))}) as srv, \
            client(srv.url) as c, pytest.raises(ParentRejected) as info:
        c.upload_articles("a1", [{"title": "x"}], epoch=1)
    assert info.value.status == 422 and info.value.code == "invalid_input"
    assert len(srv.requests) == 1


def test_error_code_inside_http_200_is_an_error() -> None:
    with ScriptedServer({"*": lambda h: reply(h, 200, err(401, "invalid_credentials"))}) as srv, \
            client(srv.url) as c, pytest.raises(BadCredentials):
        c.claim()


@pytest.mark.parametrize("body,ctype", [
    ("<html>Welcome to nginx!</html>", "text/html"),
    ('{"status": "ok"}', "application/json"),
    ("", "application/json"),
])
def test_garbage_body_is_server_error(body: str, ctype: str) -> None:
    with ScriptedServer({"*": lambda h: reply(h, 200, body, ctype)}) as srv, \
            client(srv.url) as c, pytest.raises(ParentServerError) as info:
        c.heartbeat_get()
    assert "not the Cascade envelope" in str(info.value)


def test_500_not_retried_but_503_is_then_succeeds() -> None:
    answers = [503, 502, 200]

    def flaky(h: Any) -> None:
        status = answers.pop(0)
        reply(h, status, ok({"received": 1, "new_count": 1}) if status == 200 else
              "<html>bad gateway</html>", "application/json" if status == 200 else "text/html")

    sleeps: list[float] = []
    with ScriptedServer({f"{P}/upload-articles": flaky,
                         f"{P}/heartbeat": lambda h: reply(h, 500, err(500, "boom"))}
                        ) as srv, client(srv.url, sleeps) as c:
        assert c.upload_articles("a1", [{"title": "t", "url": "u"}], epoch=1).new_count == 1
        assert len(sleeps) == 2
        nonces = {auth.parse_authorization(r["headers"]["Authorization"]).nonce
                  for r in srv.requests}
        assert len(nonces) == 3  # every attempt signed afresh: a retry is never a replay
        with pytest.raises(ParentServerError) as info:
            c.heartbeat_get()
        assert info.value.status == 500 and len(sleeps) == 2


def test_429_honours_retry_after() -> None:
    answers = [429, 200]

    def limited(h: Any) -> None:
        if answers.pop(0) == 429:
            reply(h, 429, err(429, "too_many_requests"), headers={"Retry-After": "7"})
        else:
            reply(h, 200, ok({"status": "alive"}))

    sleeps: list[float] = []
    with ScriptedServer({f"{P}/heartbeat": limited}) as srv, client(srv.url, sleeps) as c:
        assert c.heartbeat_get() == HeartbeatCheck(status="alive")
    assert sleeps == [7.0]


def test_retries_are_bounded_then_raise() -> None:
    sleeps: list[float] = []
    with ScriptedServer({"*": lambda h: reply(h, 503, err(503, "unavailable"))}) as srv, \
            client(srv.url, sleeps, retries=2) as c, pytest.raises(ParentServerError):
        c.claim()
    assert len(srv.requests) == 3 and len(sleeps) == 2


def test_claim_shapes_and_long_poll_timeout() -> None:
    pkg = {"allocation_id": "a1", "epoch": 1, "feeds": []}
    shapes = [pkg, [pkg, pkg]]
    with ScriptedServer({f"{P}/claim-task": lambda h: reply(h, 200, ok(shapes.pop(0)))}
                        ) as srv, client(srv.url) as c:
        assert c.claim(wait=30) == [TaskPackage(allocation_id="a1", epoch=1)]
        assert len(c.claim(wait=99, max=2)) == 2
        assert srv.requests[1]["path"].endswith("wait=60&max=2")  # clamped to the protocol's 60


@pytest.mark.parametrize("direct", [False, True], ids=["httpx-transport", "child-transport"])
def test_async_client_same_behaviour(direct: bool) -> None:
    """The same answers through httpx's own transport and through the child's (run-child's
    client of the parent uses ``parent_transport``)."""
    async def go(url: str) -> None:
        sleeps: list[float] = []

        async def fake_sleep(s: float) -> None:
            sleeps.append(s)

        def transport() -> FeedTransport | None:
            return parent_transport() if direct else None

        async with AsyncParentClient(url, CREDS.api_key, CREDS.api_secret, timeout=2,
                                     sleep=fake_sleep, transport=transport()) as c:
            assert await c.claim(wait=0) == []
            with pytest.raises(LeaseLost):
                await c.report_completion("a1", "t1", [], 0, epoch=1)
            with pytest.raises(ParentUnreachable):
                await AsyncParentClient(f"http://127.0.0.1:{free_port()}", "k", "s",
                                        retries=1, sleep=fake_sleep,
                                        transport=transport()).heartbeat()
        assert len(sleeps) == 1

    with ScriptedServer({f"{P}/claim-task": lambda h: reply(h, 200, ok(None)),
                         f"{P}/report-completion":
                         lambda h: reply(h, 409, err(409, "lease_superseded"))}) as srv:
        asyncio.run(go(srv.url))


def test_upload_articles_json_sends_spooled_text_verbatim() -> None:
    with ScriptedServer({f"{P}/upload-articles":
                         lambda h: reply(h, 200, ok({"received": 2, "new_count": 1}))}
                        ) as srv, client(srv.url) as c:
        # spooled fragments are UTF-8 bytes; text is taken too
        raw: list[bytes | str] = [json.dumps({"title": "文章", "url": "u1"},
                                             ensure_ascii=False).encode(),
                                  json.dumps({"title": "b", "url": "u2"})]
        assert c.upload_articles_json("a1", raw, epoch=4).new_count == 1
        req = srv.requests[0]
        body = json.loads(req["body"])
        assert body["allocation_id"] == "a1" and body["epoch"] == 4 and "timestamp" in body
        assert body["articles"] == [{"title": "文章", "url": "u1"}, {"title": "b", "url": "u2"}]
        parsed = auth.parse_authorization(req["headers"]["Authorization"])
        assert auth.verify_signature(auth.public_key_for(CREDS.api_secret), "POST", req["path"],
                                     parsed.timestamp, parsed.nonce, req["body"],
                                     parsed.signature)


def test_auth_throttle_429_says_it_is_the_throttle() -> None:
    msg = "too many failed authentication attempts from this address"
    with ScriptedServer({"*": lambda h: reply(h, 429, err(429, "too_many_requests", msg),
                                              headers={"Retry-After": "7"})}) as srv, \
            client(srv.url, retries=0) as c, pytest.raises(ParentRejected) as info:
        c.heartbeat()
    assert "auth throttle" in str(info.value) and "failed logins" in str(info.value)
    assert "api_secret" in (info.value.hint or "")
    assert info.value.retry_after == 7  # type: ignore[attr-defined]


def test_node_disabled_hint_names_the_node() -> None:
    with ScriptedServer({"*": lambda h: reply(h, 403, err(
            403, "node_disabled", "node 'rack-7' is disabled on the parent"))}) as srv, \
            client(srv.url) as c, pytest.raises(NodeDisabled) as info:
        c.heartbeat()
    assert "cascade nodes enable rack-7" in (info.value.hint or "")


@pytest.mark.parametrize("status,exc", [(501, WrongEndpoint), (502, ParentServerError)])
def test_html_5xx_is_not_a_cascade_parent(status: int, exc: type) -> None:
    page = "<html><body>Error</body></html>"
    with ScriptedServer({"*": lambda h: reply(h, status, page, ctype="text/html")}) as srv, \
            client(srv.url, retries=0) as c, pytest.raises(exc) as info:
        c.heartbeat()
    assert f"HTTP {status}" in str(info.value) and "not a Cascade parent" in str(info.value)
    assert "cascade.parent_api_url" in (info.value.hint or "")


def test_child_transport_sends_signed_bodies_itself_on_one_connection() -> None:
    """run-child's client of the parent: request bodies (uploads, completions, heartbeats) go
    over the child's own keep-alive connections, not httpx's transport, signed as before."""
    calls: list[str] = []

    class Counting(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            calls.append(request.method)
            return httpx.Response(500)

    async def go(url: str) -> None:
        transport = parent_transport()
        transport.fallback = Counting()
        async with AsyncParentClient(url, CREDS.api_key, CREDS.api_secret, timeout=2,
                                     transport=transport) as c:
            raws = [json.dumps({"title": "文章", "url": "u1"}, ensure_ascii=False).encode()]
            for _ in range(3):
                assert (await c.upload_articles_json("a1", raws, epoch=4)).new_count == 1
            await c.set_status("a1", "executing", epoch=4)
            assert sum(len(v) for v in transport._idle.values()) == 1  # one kept connection
        assert calls == []  # nothing went to httpx's transport

    with ScriptedServer({f"{P}/upload-articles":
                         lambda h: reply(h, 200, ok({"received": 1, "new_count": 1})),
                         f"{P}/task-status": lambda h: reply(h, 200, ok(None))}) as srv:
        asyncio.run(go(srv.url))
    assert [r["method"] for r in srv.requests] == ["POST"] * 3 + ["PUT"]
    for req in srv.requests:
        assert int(req["headers"]["Content-Length"]) == len(req["body"])
        parsed = auth.parse_authorization(req["headers"]["Authorization"])
        assert auth.verify_signature(auth.public_key_for(CREDS.api_secret), req["method"],
                                     req["path"], parsed.timestamp, parsed.nonce, req["body"],
                                     parsed.signature)
    assert json.loads(srv.requests[0]["body"])["articles"] == [{"title": "文章", "url": "u1"}]


def test_answers_are_parsed_into_the_protocol_models() -> None:
    """The child reads attributes: each route's ``data`` comes back as its answer model;
    ``data`` that is not an object is None (nothing to read), and an object that breaks the
    protocol's types is the parent's fault, said as such (not a crash in the worker)."""
    pkg = {"allocation_id": "a1", "task_id": "t1", "epoch": 2, "unknown": [1],
           "lease": {"expires_at": "2026-11-27T09:00:00Z", "ttl": 300},
           "feeds": [{"id": "F1", "url": "https://example.com/f.xml", "kind": "atom"},
                     {"mp_id": "MP_WXS_2", "url": "u"}]}
    answers = {f"{P}/claim-task": [ok({"tasks": [pkg]})],
               f"{P}/heartbeat": [ok({"status": "alive", "heartbeat_interval": 5,
                                      "lease_ttl": 30.0, "cancel": ["a9"]}),
                                  ok(None), ok({"cancel": "not-a-list"})]}
    with ScriptedServer({path: (lambda h, path=path: reply(h, 200, answers[path].pop(0)))
                         for path in answers}) as srv, client(srv.url) as c:
        (got,) = c.claim()
        assert isinstance(got, TaskPackage) and got.allocation_id == "a1" and got.epoch == 2
        assert got.lease is not None and got.lease.ttl == 300
        assert got.feeds == [PackageFeed(id="F1", url="https://example.com/f.xml", kind="atom"),
                             PackageFeed(id="MP_WXS_2", url="u")]
        assert c.heartbeat() == HeartbeatAnswer(heartbeat_interval=5.0, lease_ttl=30.0,
                                                cancel=["a9"])
        assert c.heartbeat() is None
        with pytest.raises(ParentServerError, match=r"POST /heartbeat does not follow the "
                                                    r"protocol \(cancel"):
            c.heartbeat()
