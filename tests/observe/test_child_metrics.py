"""A real ``run-child`` with ``child.metrics_port`` serves its own /metrics: process
metrics, claims, finished allocations and per-feed fetch outcomes (issue 19)."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cascade_cli.demo.server import FeedServer, manifest
from tests.child.deployment import Deployment, free_port, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(tmp_path)
    yield d
    d.close()


def _value(text: str, sample: str) -> float:
    m = re.search(rf"^{re.escape(sample)} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_child_serves_its_own_metrics(dep: Deployment) -> None:
    port = free_port()
    with FeedServer() as srv:
        good = [{"id": m["id"], "url": srv.url_for(m["file"]), "kind": m["kind"],
                 "mp_name": m["mp_name"]} for m in manifest()[:2]]
        bad = {"id": "MISSING", "url": srv.url_for("no-such-feed.xml"), "kind": "rss",
               "mp_name": "missing"}
        dep.start_parent()
        task_id = dep.task([*good, bad])
        cfg = dep.child_config("c1", metrics_port=port)
        proc = dep.start_child("c1", config=cfg)
        url = f"http://127.0.0.1:{port}/metrics"

        def scrape() -> str | None:
            assert proc.poll() is None, dep.log("c1")
            try:
                return httpx.get(url, timeout=2).text
            except httpx.HTTPError:
                return None

        assert "process_cpu_seconds_total" in wait_for(scrape, 30, "child /metrics")
        dep.dispatch(task_id)

        def fetched() -> str | None:
            text = scrape() or ""
            done = _value(text, 'cascade_child_allocations_total{outcome="completed"}')
            return text if done >= 2 else None

        text = wait_for(fetched, 60, "two completed allocations in /metrics")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, dep.log("c1")
    assert _value(text, "cascade_child_allocations_claimed_total") == 2
    assert _value(text, 'cascade_child_feed_fetches_total{status="success"}') == 2
    assert _value(text, 'cascade_child_feed_fetches_total{status="failed"}') == 1
    assert _value(text, "cascade_child_articles_total") > 0
    assert _value(text, "cascade_child_feed_fetch_seconds_count") == 3
    assert "metrics on http://127.0.0.1:" in dep.log("c1")
