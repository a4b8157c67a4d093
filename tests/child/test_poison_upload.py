"""A payload the parent cannot take never holds an allocation (and its run) open for ever
(issue 16, point 1).

* A feed item titled ``bad\\x00title`` through the real path: ``serve-parent`` on PostgreSQL,
  ``run-child --burst``, a local feed server. The child cleans the text before sending, the
  parent would clean it too; the allocation completes, the run finishes and its notification
  reaches a local webhook receiver with the cleaned title.
* A parent that answers 500 to every upload of one feed's articles: the child sends it
  ``child.upload_attempts`` times, then reports that feed failed with the reason; the other
  feed's articles arrive, the allocation completes, the run finishes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cascade_cli.child.spool import Spool
from cascade_cli.child.worker import ChildWorker
from cascade_cli.client import AsyncParentClient, ParentClient
from cascade_cli.domain.templates import validate_template
from cascade_cli.protocol import FeedIn, MessageTaskIn, UploadAnswer
from cascade_cli.store.feeds import create_feed
from cascade_cli.store.models import Article, FeedResult, ScheduleRun
from cascade_cli.store.tasks import create_task
from cascade_cli.web.app import create_app
from cascade_cli.web.envelope import error_response
from tests.child.deployment import Deployment, wait_for
from tests.child.harness import Parent, child_settings
from tests.child.servers import ScriptedServer, UvicornThread, reply
from tests.dbservers import fresh_database
from tests.notify.receivers import Receiver


def _json_feed(items: list[dict[str, Any]]) -> str:
    return json.dumps({"version": "https://jsonfeed.org/version/1.1", "title": "t",
                       "items": items})


def _feed_server(feeds: dict[str, list[dict[str, Any]]]) -> ScriptedServer:
    return ScriptedServer({f"/{name}.json": (lambda h, body=_json_feed(items): reply(
        h, 200, body, "application/feed+json")) for name, items in feeds.items()})


def _runs(store: Any) -> list[str]:
    with store.session() as s:
        return [r.status for r in s.scalars(select(ScheduleRun))]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_feed_item_with_nul_on_postgres_real_processes(tmp_path: Path) -> None:
    items = [{"id": "g1", "url": "https://e.org/1", "title": "bad\u0000title",
              "content_html": "x\u0000y\u0007z", "authors": [{"name": "a\u0000b"}]},
             {"id": "g\u00002", "url": "https://e.org/2\u0000", "title": "fine"}]
    receiver = Receiver().start()
    with fresh_database("postgres") as url, _feed_server({"poison": items}) as srv:
        dep = Deployment(tmp_path, database_url=url.replace("postgresql+psycopg",
                                                            "postgresql"),
                         notify={"enabled": True, "poll_interval": 0.2, "timeout": 5})
        try:
            dep.start_parent()
            template = '{"titles": {{ articles|map(attribute="title")|list|tojson }}}'
            validate_template(template, 1)
            with dep.store.session() as s:
                create_feed(s, dep.clock.now(), FeedIn(id="POISON", url=f"{srv.url}/poison.json",
                                                       kind="rss", mp_name="poison"))
                task_id = create_task(s, dep.clock.now(), MessageTaskIn(
                    name="t1", mps_id=["POISON"], web_hook_url=f"{receiver.url}/hook",
                    message_type=1, message_template=template), checked=(template, 1)).id
            dep.dispatch(task_id)
            proc = dep.start_child("c1", "--burst")
            assert proc.wait(60) == 0, dep.log("c1")
            assert dep.statuses(task_id) == ["completed"], dep.log("c1") + dep.log("parent")
            assert _runs(dep.store) == ["finished"]
            with dep.store.session() as s:
                arts = sorted((a.guid, a.title, a.url, a.content, a.author)
                              for a in s.scalars(select(Article)))
            assert arts == [("g1", "badtitle", "https://e.org/1", "xyz", "ab"),
                            ("g2", "fine", "https://e.org/2", None, None)]
            # The run's notification is sent, with the title cleaned of its NUL.
            wait_for(lambda: receiver.requests, 20, "the run's notification")
            [delivery] = receiver.requests
            assert sorted(delivery.json()["titles"]) == ["badtitle", "fine"], delivery.body
            assert b"\\u0000" not in delivery.body and b"\x00" not in delivery.body
            assert "Traceback" not in dep.log("parent")
        finally:
            dep.close()
            receiver.stop()


class FailUploads:
    """Fault injection in front of the real app: 500 to every upload holding ``marker``."""

    def __init__(self, app: Any, marker: bytes) -> None:
        self.app, self.marker, self.refused = app, marker, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/upload-articles"):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if self.marker in body:
            self.refused += 1
            await error_response(500, "internal_error", "internal server error")(
                scope, receive, send)
            return
        replayed = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Any:
            return replayed.pop() if replayed else await receive()

        await self.app(scope, replay, send)


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[tuple[Parent, FailUploads]]:
    parent = Parent(tmp_path)
    fault = FailUploads(create_app(parent.store, parent.clock, parent.settings,
                                   admin_secret=b"x" * 32), b"POISON-ARTICLE")
    parent.server = UvicornThread(fault).__enter__()
    yield parent, fault
    parent.stop()


@pytest.mark.timeout(60)
def test_persistent_500_on_upload_fails_the_feed_after_n_attempts(
        tmp_path: Path, faulty: tuple[Parent, FailUploads]) -> None:
    parent, fault = faulty
    feeds = {"good": [{"id": f"ok{i}", "url": f"https://e.org/ok{i}", "title": "ok"}
                      for i in range(3)],
             "bad": [{"id": "p1", "url": "https://e.org/p1", "title": "POISON-ARTICLE"}]}
    with _feed_server(feeds) as srv:
        task_id = parent.task([{"id": name.upper(), "url": f"{srv.url}/{name}.json",
                                "kind": "rss"} for name in feeds])
        settings = child_settings(tmp_path, parent.url, parent.node("c1"), upload_attempts=3)
        c = settings.cascade
        with ParentClient(c.parent_api_url, c.api_key, c.api_secret) as client:
            client.heartbeat()
        parent.dispatch(task_id)

        async def go() -> ChildWorker:
            async with AsyncParentClient(c.parent_api_url, c.api_key, c.api_secret,
                                         retries=2, backoff_base=0.05) as client:
                spool = Spool(settings.spool_path)
                try:
                    worker = ChildWorker(settings, client, spool, burst=True,
                                         install_signals=False)
                    await asyncio.wait_for(worker.run(), 45)
                    assert spool.is_empty()
                finally:
                    spool.close()
                return worker

        asyncio.run(go())
    # The poison feed's upload is sent child.upload_attempts times, never more.
    assert fault.refused == 3
    assert {a["status"] for a in parent.allocations(task_id)} == {"completed"}
    assert _runs(parent.store) == ["finished"]
    with parent.store.session() as s:
        results = {r.feed_id: (r.status, r.error) for r in s.scalars(select(FeedResult))}
        titles = sorted(a.guid for a in s.scalars(select(Article)))
    assert titles == ["ok0", "ok1", "ok2"]
    assert results["GOOD"] == ("success", None)
    status, error = results["BAD"]
    assert status == "failed" and "500" in error and "dropped" in error, error


def test_500_on_a_batch_is_narrowed_to_the_feed_that_causes_it(tmp_path: Path) -> None:
    """Several feeds in one refused batch: after the attempts, one feed at a time (one send
    each), so only the feed the parent cannot take is reported failed."""
    from cascade_cli.config import load_settings
    from cascade_cli.errors import ParentServerError

    sent: list[str] = []
    reported: list[list[dict[str, Any]]] = []

    class Client:
        base_url = "http://parent"

        async def upload_articles_json(self, alloc_id: str, raws: list[bytes], *,
                                       epoch: int | None = None) -> UploadAnswer:
            body = (b"[" + b",".join(raws) + b"]").decode()
            sent.append(body)
            if "POISON" in body:
                raise ParentServerError("500 from the parent", status=500)
            return UploadAnswer(new_count=len(json.loads(body)))

        async def report_completion(self, alloc_id: str, task_id: str | None,
                                    results: list[dict[str, Any]], *a: Any, **kw: Any) -> None:
            reported.append(results)

    settings = load_settings(environ={}, cwd=tmp_path, overrides={
        "child": {"spool_path": str(tmp_path / "s.db"), "upload_attempts": 2}})
    spool = Spool(settings.spool_path)
    rows = [(f, Spool.encode_articles([{"title": t, "url": f"u-{f}"}]), 1)
            for f, t in (("F1", "ok"), ("F2", "POISON"), ("F3", "ok"))]
    spool.add_completion("a1", "t1", 1, [{"feed_id": f, "status": "success"}
                                         for f in ("F1", "F2", "F3")], 3, articles=rows)
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    worker = ChildWorker(settings, Client(), spool,  # type: ignore[arg-type]
                         install_signals=False, sleep=sleep)
    assert asyncio.run(worker._flush_allocation("a1")) == "completed"
    assert pauses == [0.5]  # one pause between the batch's two attempts; single tries: none
    # 2 sends of the whole batch, then F1 (ok), F2 (refused once), F3 (ok).
    assert len(sent) == 5 and sum("POISON" in b for b in sent) == 3
    assert [(r["feed_id"], r["status"]) for r in reported[0]] == \
        [("F1", "success"), ("F2", "failed"), ("F3", "success")]
    assert "500" in reported[0][1]["error"] and spool.is_empty()
    spool.close()


def test_500_on_the_completion_ends_the_allocation_failed(tmp_path: Path) -> None:
    from cascade_cli.config import load_settings
    from cascade_cli.errors import ParentServerError

    calls: list[str] = []
    statuses: list[tuple[str, str | None]] = []

    class Client:
        base_url = "http://parent"

        async def report_completion(self, *a: Any, **kw: Any) -> None:
            calls.append("completion")
            raise ParentServerError("500 from the parent", status=500)

        async def set_status(self, alloc_id: str, status: str, *, error_message: str | None = None,
                             epoch: int | None = None) -> None:
            statuses.append((status, error_message))

    settings = load_settings(environ={}, cwd=tmp_path, overrides={
        "child": {"spool_path": str(tmp_path / "s.db"), "upload_attempts": 2}})
    spool = Spool(settings.spool_path)
    spool.add_completion("a1", "t1", 1, [{"feed_id": "F1", "status": "success"}], 0)
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    worker = ChildWorker(settings, Client(), spool,  # type: ignore[arg-type]
                         install_signals=False, sleep=sleep)
    assert asyncio.run(worker._flush_allocation("a1")) == "failed"
    assert calls == ["completion", "completion"] and pauses == [0.5]
    assert len(statuses) == 1 and statuses[0][0] == "failed" and "500" in (statuses[0][1] or "")
    assert spool.is_empty()
    spool.close()
