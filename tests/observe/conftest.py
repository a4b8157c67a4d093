"""A parent database with history, for the tests of what operators see."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cascade_cli.cli.main import app
from cascade_cli.clock import SystemClock
from cascade_cli.config import load_settings
from cascade_cli.domain.notify import Notifier
from cascade_cli.protocol import ArticleIn, ReportCompletionIn, UploadArticlesIn
from cascade_cli.store import allocations
from cascade_cli.store.engine import Store
from cascade_cli.store.nodes import get_node

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A parent database with one finished run of task ``morning``: two allocations of two
    feeds, one feed failed (HTTP 404), one new article, one webhook delivery pending."""
    for key in [k for k in os.environ if k.startswith("CASCADE_")]:
        monkeypatch.delenv(key)
    config = tmp_path / "config.yaml"
    config.write_text("data_dir: data\nparent:\n  batch_size: 2\n", encoding="utf-8")
    monkeypatch.setenv("CASCADE_CONFIG", str(config))
    monkeypatch.chdir(tmp_path)

    def ok(*args: str) -> str:
        r = runner.invoke(app, list(args))
        assert r.exit_code == 0, r.output
        return r.stdout

    ok("init")
    ok("init", "--child", "c1", "--capacity", "4")
    for i in range(4):
        ok("feeds", "add", f"https://example.com/{i}.xml", "--id", f"MP_WXS_{i}")
    ok("tasks", "add", "morning", "--feeds", "MP_WXS_0,MP_WXS_1,MP_WXS_2,MP_WXS_3",
       "--webhook", "http://127.0.0.1:9/hook")
    ok("dispatch")

    settings = load_settings(str(config))
    store = Store.from_url(settings.database_url)
    try:
        now = SystemClock().now()
        with store.session() as s:
            node = get_node(s, "c1")
            claimed = allocations.claim(s, now, node, settings, max_count=4)
            assert len(claimed) == 2
            for alloc in claimed:
                feeds = list(alloc.feed_ids)
                if "MP_WXS_0" in feeds:
                    allocations.upload_articles(s, now, node, UploadArticlesIn(
                        allocation_id=alloc.id, epoch=alloc.epoch, articles=[ArticleIn(
                            feed_id="MP_WXS_0", id="a1", title="t",
                            url="https://example.com/a1")]), settings)
                results = [{"feed_id": f, "status": "failed", "error": "HTTP 404 Not Found"}
                           if f == "MP_WXS_1" else {"feed_id": f, "status": "success"}
                           for f in feeds]
                allocations.report_completion(s, now, node, ReportCompletionIn.model_validate(
                    {"allocation_id": alloc.id, "epoch": alloc.epoch, "results": results}),
                    settings)
        # A running parent's notifier queues the finished run's notification (not sent here).
        with Notifier(store, SystemClock(), settings) as notifier:
            assert notifier.queue_finished() == 1
    finally:
        store.dispose()
    yield config


