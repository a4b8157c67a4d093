"""Issue 5 through the real path: a ``cascade serve-parent`` process without its notifier fires
a cron tick, a child works it over plain HTTP and the run finishes, its notification still to
be queued (issue 17: the notifier queues finished runs); the parent is SIGKILLed, restarted
with the notifier, which queues it and sends it to a real receiver that fails three times
first - exactly one delivery is accepted."""

from __future__ import annotations

import signal
import time

import httpx
import pytest
from sqlalchemy import select

from cascade_cli.domain.notify import delivery_dict
from cascade_cli.store.engine import Store
from cascade_cli.store.models import Delivery, ScheduleRun
from tests.notify.receivers import Receiver
from tests.parent_http.procs import (
    ParentProc,
    admin_headers,
    init_parent,
    plain_headers,
    write_config,
)

pytestmark = pytest.mark.slow


def _deliveries(cfg) -> list[dict]:
    # Read the outbox directly: a CLI subprocess per look would double the test's runtime.
    store = Store.from_url(f"sqlite:///{cfg.parent / 'data' / 'cascade.db'}")
    try:
        with store.session() as s:
            return [delivery_dict(d) for d in s.scalars(select(Delivery))]
    finally:
        store.dispose()


def _runs(cfg) -> list[tuple[str, bool]]:
    """(status, notifications queued) of every run."""
    store = Store.from_url(f"sqlite:///{cfg.parent / 'data' / 'cascade.db'}")
    try:
        with store.session() as s:
            return [(r.status, r.notified_at is not None)
                    for r in s.scalars(select(ScheduleRun))]
    finally:
        store.dispose()


def test_cron_in_serve_parent_then_pending_delivery_survives_a_crash(tmp_path):
    accepted: list[str] = []

    def behaviour(req):
        if len(rec.requests) <= 3:
            return 503, {}, b"busy"
        accepted.append(req.headers["idempotency-key"])
        return 200, {}, b"ok"

    rec = Receiver(behaviour).start()
    cfg = write_config(tmp_path, scheduler={"tick_interval": 0.2},
                       notify={"poll_interval": 0.2, "backoff_base": 0.2, "backoff_max": 0.4,
                               "timeout": 2, "max_attempts": 10})
    try:
        made = init_parent(cfg, ["c1"])
        child, admin = made["children"]["c1"], admin_headers(made["token"])

        # First life: scheduler on, notifier off, so the run's notification waits for one.
        first = ParentProc(cfg, "--no-notifier")
        try:
            with httpx.Client(base_url=first.url + "/api/v1/cascade",
                              headers=plain_headers(child), timeout=30) as c:
                assert c.post("/heartbeat", json={}).status_code == 200
                for fid in ("F1", "F2"):
                    r = c.post("/feeds", headers=admin, json={
                        "id": fid, "mp_name": fid, "url": f"https://example.org/{fid}.xml"})
                    assert r.status_code == 200, r.text
                r = c.post("/message-tasks", headers=admin, json={
                    "name": "news", "mps_id": ["F1", "F2"], "cron_exp": "* * * * * *",
                    "web_hook_url": rec.url + "/hook", "headers": {"X-Hook-Token": "tok-123"},
                    "cookies": "sid=cookie-456", "webhook_secret": "sig-789"})
                assert r.status_code == 200, r.text
                # Children never see where or how the parent notifies (LESSONS: webhook URLs,
                # headers and cookies were handed to every child).
                secrets = (rec.url, "tok-123", "cookie-456", "sig-789")
                listed = c.get("/message-tasks").text
                assert "news" in listed and not any(x in listed for x in secrets)
                done: list[str] = []
                deadline = time.monotonic() + 30
                while sorted(done) != ["F1", "F2"] and time.monotonic() < deadline:
                    r = c.post("/claim-task", params={"wait": 5, "max": 1})
                    assert r.status_code == 200, r.text
                    pkg = r.json()["data"]
                    if pkg is None:
                        continue
                    assert not any(x in r.text for x in secrets)
                    feeds = [f["id"] for f in pkg["feeds"]]
                    done += feeds
                    base = {"allocation_id": pkg["allocation_id"], "epoch": pkg["epoch"]}
                    if "F1" in feeds:  # only F1 has news
                        r = c.post("/upload-articles", json={**base, "feed_id": "F1", "articles": [
                            {"feed_id": "F1", "title": f"News {i}",
                             "url": f"https://n.example/{i}", "publish_time": 1777626000 + i}
                            for i in range(2)]})
                        assert r.status_code == 200, r.text
                        assert r.json()["data"]["new_count"] == 2
                    r = c.post("/report-completion", json={
                        **base, "task_id": pkg["task_id"],
                        "article_count": 2 if "F1" in feeds else 0, "results": [
                            {"feed_id": f, "status": "success",
                             "article_count": 2 if f == "F1" else 0} for f in feeds]})
                    assert r.status_code == 200, r.text
                assert sorted(done) == ["F1", "F2"], "the cron tick never produced the work"
            # The run finished; nothing queued it yet (its allocations settle in the
            # completions' commits, a moment after the answers).
            deadline = time.monotonic() + 10
            while "finished" not in {st for st, _ in _runs(cfg)} and time.monotonic() < deadline:
                time.sleep(0.1)
            assert ("finished", False) in _runs(cfg)
            assert _deliveries(cfg) == []
        finally:
            assert first.stop(signal.SIGKILL) != 0
        assert rec.requests == []

        # Second life: the notifier queues the finished run's one notification (for the one
        # feed with new articles) and gets it accepted once.
        with ParentProc(cfg, "--no-scheduler"):
            deadline = time.monotonic() + 30
            while not accepted and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.5)  # nothing more may arrive once accepted
            [done] = _deliveries(cfg)
        assert done["status"] == "delivered" and done["attempts"] == 4, done
        assert done["feed_id"] == "F1"
        assert ("finished", True) in _runs(cfg) and ("finished", False) not in _runs(cfg)
        assert accepted == [done["idempotency_key"]]
        assert len(rec.requests) == 4
        body = rec.requests[-1].json()
        assert body["feed"]["id"] == "F1"
        assert sorted(a["title"] for a in body["articles"]) == ["News 0", "News 1"]
        sent = rec.requests[-1].headers
        assert sent["x-hook-token"] == "tok-123" and sent["cookie"] == "sid=cookie-456"
        assert sent["x-cascade-signature"].startswith("sha256=")
    finally:
        rec.stop()
