"""Outbox: queueing per (run, feed), real local receivers, retries, restarts, bad receivers."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

import httpx
import pytest
from sqlalchemy import select

from cascade_cli.domain.notify import UNRENDERED, Notifier, queue_run_notifications, retry_dead
from cascade_cli.store.models import Delivery, MessageTask
from tests.notify.conftest import add_run
from tests.notify.receivers import GarbageServer, Receiver
from tests.schedule.helpers import add_feed, add_task


def deliveries(store, **where) -> list[Delivery]:
    with store.session() as s:
        q = select(Delivery).order_by(Delivery.feed_id)
        for k, v in where.items():
            q = q.where(getattr(Delivery, k) == v)
        return list(s.scalars(q))


def queue(store, clock, settings, run_id) -> int:
    with store.session() as s:
        return queue_run_notifications(s, clock.now(), run_id, settings)


def test_one_delivery_per_feed_with_new_articles_and_idempotent(store, clock, fast_settings):
    for f in ("F1", "F2", "F3"):
        add_feed(store, clock.now(), f)
    tid = add_task(store, clock.now(), feeds=["F1", "F2", "F3"],
                   web_hook_url="https://hooks.example.org/x")
    run_id = add_run(store, clock.now(), tid, {"F1": 2, "F3": 1})
    assert queue(store, clock, fast_settings, run_id) == 2
    assert queue(store, clock, fast_settings, run_id) == 0  # idempotent
    rows = deliveries(store)
    assert [d.idempotency_key for d in rows] == [f"{run_id}:F1", f"{run_id}:F3"]
    # Queued with its template and context; rendered by the sender, outside the transaction.
    assert rows[0].content_type == UNRENDERED
    body = json.loads(rows[0].body)["context"]
    assert body["feed"]["id"] == "F1" and len(body["articles"]) == 2
    assert body["articles"][0]["title"] == "F1 article 0"  # newest first
    assert rows[0].channel == "generic" and rows[0].status == "pending"


def test_task_without_webhook_queues_nothing(store, clock, fast_settings):
    add_feed(store, clock.now(), "F1")
    tid = add_task(store, clock.now(), feeds=["F1"])
    run_id = add_run(store, clock.now(), tid, {"F1": 3})
    assert queue(store, clock, fast_settings, run_id) == 0
    assert deliveries(store) == []


def test_render_error_gives_dead_delivery_not_a_crash(store, clock, fast_settings):
    add_feed(store, clock.now(), "F1")
    # Saved around validation (as an older database might hold it).
    tid = add_task(store, clock.now(), feeds=["F1"], web_hook_url="https://h.example.org/x",
                   message_template="{{ feed.__class__.__mro__ }}")
    run_id = add_run(store, clock.now(), tid, {"F1": 1})
    assert queue(store, clock, fast_settings, run_id) == 1
    with Notifier(store, clock, fast_settings) as n:
        assert n.deliver_due() == 1  # rendered by the sender: dead, nothing sent
    [d] = deliveries(store)
    assert d.status == "dead" and "sandbox" in d.last_error


def _verify_signature(req, secret: str) -> None:
    ts = req.headers["x-cascade-timestamp"]
    expected = hmac.new(secret.encode(), f"{ts}.".encode() + req.body, hashlib.sha256)
    assert req.headers["x-cascade-signature"] == "sha256=" + expected.hexdigest()


def test_headers_signature_cookies_and_idempotency(store, clock, fast_settings, receiver):
    add_feed(store, clock.now(), "F1")
    tid = add_task(store, clock.now(), feeds=["F1"], web_hook_url=receiver.url + "/hook",
                   webhook_secret="s3cret", headers={"X-Api-Key": "abc", "Host": "evil"},
                   cookies="sid=1;  theme = dark ")
    run_id = add_run(store, clock.now(), tid, {"F1": 1})
    queue(store, clock, fast_settings, run_id)
    with Notifier(store, clock, fast_settings) as n:
        assert n.deliver_due() == 1
    [req] = receiver.requests
    assert req.path == "/hook" and req.host == "127.0.0.1"
    _verify_signature(req, "s3cret")
    assert req.headers["x-cascade-delivery"] == f"{run_id}:F1"
    assert req.headers["idempotency-key"] == f"{run_id}:F1"
    assert req.headers["x-api-key"] == "abc"
    assert req.headers["cookie"] == "sid=1; theme=dark"
    assert req.headers["content-type"] == "application/json"
    [d] = deliveries(store)
    assert d.status == "delivered" and d.attempts == 1 and d.last_status_code == 200


def test_fails_three_times_then_exactly_one_accepted(store, clock, fast_settings):
    accepted: list[str] = []

    def behaviour(req):
        if len(rec.requests) <= 3:
            return 503, {}, b"busy"
        accepted.append(req.headers["idempotency-key"])
        return 200, {}, b"ok"

    rec = Receiver(behaviour).start()
    try:
        add_feed(store, clock.now(), "F1")
        tid = add_task(store, clock.now(), feeds=["F1"], web_hook_url=rec.url + "/h")
        queue(store, clock, fast_settings, add_run(store, clock.now(), tid, {"F1": 1}))
        n = Notifier(store, clock, fast_settings)
        waits = []
        for _ in range(10):
            n.deliver_due()
            [d] = deliveries(store)
            if d.status != "pending":
                break
            waits.append((d.next_attempt_at - clock.now()).total_seconds())
            assert n.deliver_due() == 0  # not due before its backoff
            clock.set(d.next_attempt_at)
        n.close()
        assert d.status == "delivered" and d.attempts == 4
        assert len(accepted) == 1 and len(rec.requests) == 4
        # Exponential backoff with jitter: base 2 -> [1,2], [2,4], [4,8] seconds.
        assert 1 <= waits[0] <= 2 and 2 <= waits[1] <= 4 and 4 <= waits[2] <= 8
    finally:
        rec.stop()


def test_gives_up_after_max_attempts(store, clock, fast_settings):
    rec = Receiver(lambda r: (500, {}, b"kaput")).start()
    try:
        add_feed(store, clock.now(), "F1")
        tid = add_task(store, clock.now(), feeds=["F1"], web_hook_url=rec.url)
        queue(store, clock, fast_settings, add_run(store, clock.now(), tid, {"F1": 1}))
        with Notifier(store, clock, fast_settings) as n:
            for _ in range(8):
                n.deliver_due()
                clock.advance(120)
        [d] = deliveries(store)
        assert d.status == "dead" and d.attempts == 5 and len(rec.requests) == 5
        assert "gave up after 5 attempts" in d.last_error and "HTTP 500" in d.last_error
        # Operator retries it: back in line with a fresh budget.
        with store.session() as s:
            assert retry_dead(s, clock.now()) == 1
        assert deliveries(store)[0].status == "pending"
    finally:
        rec.stop()


def test_429_honours_retry_after_and_4xx_is_dead_at_once(store, clock, fast_settings):
    rec = Receiver(lambda r: (429, {"Retry-After": "45"}, b"slow down") if "/a" in r.path
                   else (404, {}, b"no such hook")).start()
    try:
        for f in ("F1", "F2"):
            add_feed(store, clock.now(), f)
        t1 = add_task(store, clock.now(), feeds=["F1"], web_hook_url=rec.url + "/a")
        t2 = add_task(store, clock.now(), feeds=["F2"], web_hook_url=rec.url + "/b")
        queue(store, clock, fast_settings, add_run(store, clock.now(), t1, {"F1": 1}))
        queue(store, clock, fast_settings, add_run(store, clock.now(), t2, {"F2": 1}))
        with Notifier(store, clock, fast_settings) as n:
            assert n.deliver_due() == 2
        a = deliveries(store, task_id=t1)[0]
        b = deliveries(store, task_id=t2)[0]
        assert a.status == "pending" and (a.next_attempt_at - clock.now()).total_seconds() >= 45
        assert b.status == "dead" and b.attempts == 1 and "HTTP 404" in b.last_error
    finally:
        rec.stop()


def test_restarted_notifier_sends_pending_and_expired_claims(store, clock, fast_settings,
                                                             receiver, sqlite_url):
    for f in ("F1", "F2"):
        add_feed(store, clock.now(), f)
    tid = add_task(store, clock.now(), feeds=["F1", "F2"], web_hook_url=receiver.url)
    queue(store, clock, fast_settings, add_run(store, clock.now(), tid, {"F1": 1, "F2": 1}))
    # A first process claimed one delivery, then died before sending it.
    crashed = Notifier(store, clock, fast_settings)
    jobs = crashed._claim(clock.now(), 1)
    assert len(jobs) == 1
    crashed.close()
    # The parent restarts: a new store (new engine) and a new notifier.
    from cascade_cli.store.engine import Store

    store2 = Store.from_url(sqlite_url)
    try:
        with Notifier(store2, clock, fast_settings) as n:
            assert n.deliver_due() == 1  # the free one at once
            assert n.deliver_due() == 0  # the claimed one waits for its lock to expire
            clock.advance(n.lock_seconds + 1)
            assert n.deliver_due() == 1
        assert {d.status for d in deliveries(store2)} == {"delivered"}
        assert len(receiver.requests) == 2
    finally:
        store2.dispose()


def test_hanging_receiver_times_out_without_blocking_others(store, clock, fast_settings,
                                                            receiver):
    release = threading.Event()

    def hang(req):
        release.wait(5)
        return 200, {}, b"too late"

    slow = Receiver(hang).start()
    try:
        for f in ("F1", "F2"):
            add_feed(store, clock.now(), f)
        t_slow = add_task(store, clock.now(), feeds=["F1"], web_hook_url=slow.url)
        t_ok = add_task(store, clock.now(), feeds=["F2"], web_hook_url=receiver.url)
        queue(store, clock, fast_settings, add_run(store, clock.now(), t_slow, {"F1": 1}))
        queue(store, clock, fast_settings, add_run(store, clock.now(), t_ok, {"F2": 1}))
        started = time.monotonic()
        with Notifier(store, clock, fast_settings) as n:
            assert n.deliver_due() == 2
        assert time.monotonic() - started < 3  # timeout 0.5 s, not the receiver's 5 s
        assert deliveries(store, task_id=t_ok)[0].status == "delivered"
        d = deliveries(store, task_id=t_slow)[0]
        assert d.status == "pending" and "timeout" in d.last_error
    finally:
        release.set()
        slow.stop()


def test_redirects_same_host_followed_other_host_refused(store, clock, fast_settings):
    other = Receiver().start()
    rec = Receiver(lambda r: (308, {"Location": "/final"}, b"") if r.path == "/old"
                   else (302, {"Location": other.url + "/steal"}, b"") if r.path == "/away"
                   else (200, {}, b"ok")).start()
    try:
        for f in ("F1", "F2"):
            add_feed(store, clock.now(), f)
        t1 = add_task(store, clock.now(), feeds=["F1"], web_hook_url=rec.url + "/old",
                      webhook_secret="k")
        t2 = add_task(store, clock.now(), feeds=["F2"], web_hook_url=rec.url + "/away",
                      webhook_secret="k")
        queue(store, clock, fast_settings, add_run(store, clock.now(), t1, {"F1": 1}))
        queue(store, clock, fast_settings, add_run(store, clock.now(), t2, {"F2": 1}))
        with Notifier(store, clock, fast_settings) as n:
            n.deliver_due()
        assert deliveries(store, task_id=t1)[0].status == "delivered"
        assert [r.path for r in rec.requests if r.path in ("/old", "/final")] == ["/old",
                                                                                   "/final"]
        d2 = deliveries(store, task_id=t2)[0]
        assert d2.status == "dead" and "another host" in d2.last_error
        assert other.requests == []  # secrets never leave for the other host
    finally:
        rec.stop()
        other.stop()


def test_garbage_receiver_is_retried_as_network_error(store, clock, fast_settings):
    garbage = GarbageServer()
    try:
        add_feed(store, clock.now(), "F1")
        tid = add_task(store, clock.now(), feeds=["F1"], web_hook_url=garbage.url)
        queue(store, clock, fast_settings, add_run(store, clock.now(), tid, {"F1": 1}))
        with Notifier(store, clock, fast_settings) as n:
            assert n.deliver_due() == 1
        [d] = deliveries(store)
        assert d.status == "pending" and d.attempts == 1
        assert "network error" in d.last_error or "timeout" in d.last_error
    finally:
        garbage.stop()


def test_connection_refused_is_retried(store, clock, fast_settings):
    add_feed(store, clock.now(), "F1")
    tid = add_task(store, clock.now(), feeds=["F1"], web_hook_url="http://127.0.0.1:9/hook")
    queue(store, clock, fast_settings, add_run(store, clock.now(), tid, {"F1": 1}))
    with Notifier(store, clock, fast_settings) as n:
        n.deliver_due()
    [d] = deliveries(store)
    assert d.status == "pending" and "network error" in d.last_error


def test_deleted_task_makes_delivery_dead(store, clock, fast_settings, receiver):
    add_feed(store, clock.now(), "F1")
    tid = add_task(store, clock.now(), feeds=["F1"], web_hook_url=receiver.url)
    queue(store, clock, fast_settings, add_run(store, clock.now(), tid, {"F1": 1}))
    with store.session() as s:
        s.delete(s.get(MessageTask, tid))
    with Notifier(store, clock, fast_settings) as n:
        n.deliver_due()
    [d] = deliveries(store)
    assert d.status == "dead" and "deleted" in d.last_error and receiver.requests == []


@pytest.mark.parametrize("answer,status", [
    ({"errcode": 0, "errmsg": "ok"}, "delivered"),
    ({"errcode": 93000, "errmsg": "invalid webhook url"}, "dead"),
    ({"errcode": 45009, "errmsg": "api freq out of limit"}, "pending"),
])
def test_wecom_error_inside_http_200(store, clock, fast_settings, answer, status):
    rec = Receiver(lambda r: (200, {}, json.dumps(answer).encode())).start()
    try:
        add_feed(store, clock.now(), "F1")
        tid = add_task(store, clock.now(), feeds=["F1"],
                       web_hook_url="http://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k")
        queue(store, clock, fast_settings, add_run(store, clock.now(), tid, {"F1": 1}))
        proxy = httpx.HTTPTransport(proxy=rec.url)
        with Notifier(store, clock, fast_settings, transport=proxy) as n:
            n.deliver_due()
        [d] = deliveries(store)
        assert d.status == status
        if status != "delivered":
            assert str(answer["errcode"]) in d.last_error
    finally:
        rec.stop()
