"""The node routes through HTTP: claim -> executing -> upload -> complete, and every refusal."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from sqlalchemy import func, select

from cascade_cli.store.models import Allocation, Article, Event
from tests.parent_http.conftest import WX, P, envelope_err, envelope_ok

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("http_fast_path")]


def _snapshot(store):
    with store.session() as s:
        allocs = sorted((a.id, a.status, a.epoch, a.node_id, a.article_count,
                         a.new_article_count, a.lease_expires_at)
                        for a in s.scalars(select(Allocation)))
        arts = int(s.scalar(select(func.count()).select_from(Article)))
    return allocs, arts


async def _online(api, *creds):
    for c in creds:
        envelope_ok(await api.as_node(c, "POST", "/heartbeat", json={"running": []}))


async def _dispatched(api, n_feeds=3, **kw):
    tok = api.token()
    task_id = await api.setup_task(tok, n_feeds=n_feeds, **kw)
    r = await api.admin("POST", "/dispatch-task", tok, params={"task_id": task_id})
    data = envelope_ok(r)
    assert data["allocations_created"] >= 1
    return tok, task_id, data


async def test_full_cycle_on_both_prefixes(api):
    a = api.node("a", capacity=4)
    await _online(api, a)
    tok, task_id, data = await _dispatched(api, n_feeds=2)
    for prefix in (P, WX):
        r = await api.as_node(a, "POST", "/claim-task", prefix=prefix)
        pkg = envelope_ok(r)
        if pkg is None:
            break
        assert pkg["lease"]["expires_at"].endswith("Z") and pkg["epoch"] >= 1
        aid, epoch = pkg["allocation_id"], pkg["epoch"]
        feed = pkg["feeds"][0]["id"]
        d = envelope_ok(await api.as_node(a, "PUT", "/task-status", prefix=prefix, json={
            "allocation_id": aid, "status": "executing", "epoch": epoch}))
        assert d == {"allocation_id": aid, "status": "executing"}
        arts = [{"feed_id": feed, "title": f"t{i}", "url": f"https://e/{feed}/{i}",
                 "publish_time": 1700000000 + i} for i in range(5)]
        body = {"allocation_id": aid, "articles": arts, "epoch": epoch}
        d = envelope_ok(await api.as_node(a, "POST", "/upload-articles", prefix=prefix,
                                          json=body))
        assert d == {"received": 5, "new_count": 5}
        d = envelope_ok(await api.as_node(a, "POST", "/upload-articles", prefix=prefix,
                                          json=body))
        assert d == {"received": 5, "new_count": 0}  # idempotent
        done = {"allocation_id": aid, "task_id": task_id, "article_count": 5, "epoch": epoch,
                "results": [{"feed_id": f["id"], "status": "success", "article_count": 5}
                            for f in pkg["feeds"]]}
        d = envelope_ok(await api.as_node(a, "POST", "/report-completion", prefix=prefix,
                                          json=done))
        assert d == {"allocation_id": aid, "status": "completed"}
        before = _snapshot(api.store)
        d2 = envelope_ok(await api.as_node(a, "POST", "/report-completion", prefix=prefix,
                                           json=done))
        assert d2 == d and _snapshot(api.store) == before
    listing = envelope_ok(await api.admin("GET", "/allocations", tok))
    assert listing["total"] == data["allocations_created"]
    assert listing["page"] == {"limit": 50, "offset": 0}
    assert all(x["status"] == "completed" for x in listing["list"])
    counts = envelope_ok(await api.admin("GET", "/pending-allocations", tok))
    assert counts["pending"] == 0 and counts["online_nodes"] == 1
    r = await api.as_node(a, "POST", "/claim-task")
    assert envelope_ok(r) is None and r.json()["message"] == "暂无待处理任务"


async def test_claim_respects_max_and_capacity(api):
    a = api.node("a", capacity=2)
    await _online(api, a)
    await _dispatched(api, n_feeds=6)
    r = await api.as_node(a, "POST", "/claim-task", params={"max": 5})
    pkgs = envelope_ok(r)
    assert isinstance(pkgs, list) and len(pkgs) == 2
    assert envelope_ok(await api.as_node(a, "POST", "/claim-task")) is None  # full


async def test_refusals_change_nothing(api):
    a, b = api.node("a", capacity=4), api.node("b", capacity=4)
    await _online(api, a, b)
    tok, task_id, _ = await _dispatched(api, n_feeds=2)
    pkg = envelope_ok(await api.as_node(a, "POST", "/claim-task"))
    aid, epoch, feed = pkg["allocation_id"], pkg["epoch"], pkg["feeds"][0]["id"]
    before = _snapshot(api.store)
    art = {"feed_id": feed, "title": "x", "url": "https://e/x"}
    cases = [
        # other node's allocation
        (b, "PUT", "/task-status", {"allocation_id": aid, "status": "executing"}, 403,
         "not_owner"),
        (b, "POST", "/upload-articles", {"allocation_id": aid, "articles": [art]}, 403,
         "not_owner"),
        (b, "POST", "/report-completion", {"allocation_id": aid, "results": []}, 403,
         "not_owner"),
        # unknown allocation
        (a, "PUT", "/task-status", {"allocation_id": "nope", "status": "executing"}, 404,
         None),
        (a, "POST", "/upload-articles", {"allocation_id": "nope", "articles": [art]}, 404,
         None),
        # stale epoch
        (a, "PUT", "/task-status", {"allocation_id": aid, "status": "executing",
                                    "epoch": epoch - 1}, 409, "lease_superseded"),
        # wrong types / values
        (a, "PUT", "/task-status", {"allocation_id": aid, "status": "completed"}, 422,
         "validation_error"),
        (a, "PUT", "/task-status", {"allocation_id": aid, "status": "executing",
                                    "epoch": "x"}, 422, "validation_error"),
        (a, "POST", "/upload-articles", {"allocation_id": aid, "articles": "many"}, 422,
         "validation_error"),
        (a, "POST", "/upload-articles", {"allocation_id": aid, "articles": [
            {"feed_id": feed, "title": "t" * 5000, "url": "u"}]}, 422, "validation_error"),
        (a, "POST", "/report-completion", {"allocation_id": aid, "results": [
            {"feed_id": feed, "status": "weird"}]}, 422, "validation_error"),
        (a, "POST", "/report-completion", [1, 2], 422, "validation_error"),
        (a, "PUT", "/task-status", {}, 422, "validation_error"),
    ]
    for creds, method, path, body, status, code in cases:
        r = await api.as_node(creds, method, path, json=body)
        envelope_err(r, status, code)
        assert _snapshot(api.store) == before, (path, body)
    r = await api.as_node(a, "PUT", "/task-status", json={"allocation_id": aid,
                                                           "status": "bogus"})
    assert "status" in r.json()["message"]
    assert r.json()["detail"][0]["field"] == "status"


async def test_terminal_states_refuse_late_writes(api):
    a = api.node("a")
    await _online(api, a)
    await _dispatched(api, n_feeds=1)
    pkg = envelope_ok(await api.as_node(a, "POST", "/claim-task"))
    aid = pkg["allocation_id"]
    envelope_ok(await api.as_node(a, "PUT", "/task-status", json={
        "allocation_id": aid, "status": "failed", "error_message": "boom"}))
    before = _snapshot(api.store)
    r = await api.as_node(a, "POST", "/report-completion", json={
        "allocation_id": aid, "results": [], "article_count": 3})
    envelope_err(r, 409, "invalid_transition")
    r = await api.as_node(a, "PUT", "/task-status", json={"allocation_id": aid,
                                                           "status": "executing"})
    envelope_err(r, 409, "invalid_transition")
    assert _snapshot(api.store) == before


async def test_malformed_json_and_non_object_bodies(api):
    a = api.node("a")
    before = _snapshot(api.store)
    for raw in (b"{", b"{'a': 1}", b"\xff\xfe", b'{"allocation_id": }'):
        r = await api.client.put(P + "/task-status", content=raw,
                                 headers=api.plain(a) | {"Content-Type": "application/json"})
        envelope_err(r, 400)
        assert r.json()["error"] in ("malformed_json", "bad_request")
    r = await api.client.post(P + "/heartbeat", content=b"not json",
                              headers=api.plain(a) | {"Content-Type": "application/json"})
    envelope_err(r, 400, "malformed_json")
    r = await api.client.post(P + "/heartbeat", content=b"",
                              headers=api.plain(a) | {"Content-Type": "application/json"})
    envelope_ok(r)  # an empty body is a valid heartbeat
    r = await api.client.post(P + "/heartbeat", headers=api.plain(a))
    envelope_ok(r)
    assert _snapshot(api.store) == before


async def test_oversized_bodies_are_413(store, clock, tmp_path):
    import httpx

    from cascade_cli.web.app import create_app
    from tests.parent_http.conftest import ADMIN_SECRET, Api, make_settings

    settings = make_settings(tmp_path, **{"parent.limits.max_body_bytes": 2048,
                                          "parent.limits.max_articles_per_request": 3})
    app = create_app(store, clock, settings, admin_secret=ADMIN_SECRET)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://p") as client:
        api = Api(client, app, store, clock, settings)
        a = api.node("a")
        big = json.dumps({"allocation_id": "x", "articles": [
            {"title": "t", "url": "u" * 3000}]}).encode()
        h = api.plain(a) | {"Content-Type": "application/json"}
        envelope_err(await client.post(P + "/upload-articles", content=big, headers=h), 413,
                     "payload_too_large")

        async def stream():  # no Content-Length: the streamed size is counted
            for _ in range(10):
                yield b" " * 500

        envelope_err(await client.post(P + "/upload-articles", content=stream(), headers=h),
                     413, "payload_too_large")
        many = {"allocation_id": "x", "articles": [{"title": "t", "url": f"u{i}"}
                                                   for i in range(4)]}
        envelope_err(await api.as_node(a, "POST", "/upload-articles", json=many), 413,
                     "payload_too_large")
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(Article)) == 0


async def test_query_validation(api):
    a = api.node("a")
    for params in ({"wait": 61}, {"wait": -1}, {"wait": "abc"}, {"max": 0}, {"max": "x"}):
        r = await api.as_node(a, "POST", "/claim-task", params=params)
        body = envelope_err(r, 422, "validation_error")
        assert body["detail"][0]["field"] in ("wait", "max")


async def test_pending_tasks_legacy(api):
    a, b = api.node("a"), api.node("b")
    await _online(api, a, b)
    r = await api.as_node(a, "GET", "/pending-tasks")
    assert envelope_ok(r) is None and r.json()["message"] == "暂无待处理任务"
    await _dispatched(api, n_feeds=1)
    before = _snapshot(api.store)
    with api.store.session() as s:
        from cascade_cli.store import nodes

        b_id = nodes.get_node(s, "b").id
    envelope_err(await api.as_node(a, "GET", "/pending-tasks", params={"node_id": b_id}), 403)
    assert _snapshot(api.store) == before
    with api.store.session() as s:
        a_id = nodes.get_node(s, "a").id
    pkg = envelope_ok(await api.as_node(a, "GET", "/pending-tasks", params={"node_id": a_id}))
    assert pkg["allocation_id"]


async def test_long_poll_times_out_with_no_work(api):
    a = api.node("a")
    t0 = time.monotonic()
    r = await api.as_node(a, "POST", "/claim-task", params={"wait": 0.6})
    assert envelope_ok(r) is None
    assert 0.5 <= time.monotonic() - t0 < 2.0


async def test_long_poll_woken_at_once_by_api_dispatch(api):
    a = api.node("a")
    await _online(api, a)
    tok = api.token()
    task_id = await api.setup_task(tok, n_feeds=1)

    async def waiter():
        r = await api.as_node(a, "POST", "/claim-task", params={"wait": 30})
        return envelope_ok(r), time.monotonic()

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.3)
    t_dispatch = time.monotonic()
    envelope_ok(await api.admin("POST", "/dispatch-task", tok, params={"task_id": task_id}))
    pkg, t_got = await asyncio.wait_for(task, 5)
    assert pkg is not None and pkg["task_id"] == task_id
    assert t_got - t_dispatch < 0.5


async def test_long_poll_sees_dispatch_written_elsewhere(api):
    from cascade_cli.domain.dispatch import dispatch

    a = api.node("a")
    await _online(api, a)
    tok = api.token()
    task_id = await api.setup_task(tok, n_feeds=1)

    async def waiter():
        r = await api.as_node(a, "POST", "/claim-task", params={"wait": 10})
        return envelope_ok(r), time.monotonic()

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.2)
    with api.store.session() as s:  # like another process: no in-process notify
        dispatch(s, api.clock.now(), api.settings, task_id=task_id)
    t0 = time.monotonic()
    pkg, t_got = await asyncio.wait_for(task, 5)
    assert pkg is not None and t_got - t0 < 1.5


async def test_report_result_legacy_is_an_event(api):
    a = api.node("a")
    d = envelope_ok(await api.as_node(a, "POST", "/report-result", json={
        "task_id": "t", "results": [{"x": 1}], "timestamp": 1700000000}))
    assert d["recorded"] is True
    with api.store.session() as s:
        ev = s.scalar(select(Event).where(Event.operation == "report_result"))
        assert ev is not None and ev.count == 1


async def test_node_listings(api):
    a = api.node("a")
    tok = api.token()
    await api.setup_task(tok, n_feeds=2)
    r = await api.admin("POST", "/message-tasks", tok, json={
        "name": "off", "mps_id": [], "status": 0, "web_hook_url": "https://hook/x",
        "webhook_secret": "s3cret"})
    envelope_ok(r)
    feeds = envelope_ok(await api.as_node(a, "GET", "/feeds", params={"limit": 1}))
    assert len(feeds) == 1
    tasks_ = envelope_ok(await api.as_node(a, "GET", "/message-tasks"))
    assert [t["name"] for t in tasks_] == ["t1"]
    assert "s3cret" not in json.dumps(tasks_)
    all_tasks = envelope_ok(await api.admin("GET", "/message-tasks", tok))
    assert {t["name"] for t in all_tasks} == {"t1", "off"}
