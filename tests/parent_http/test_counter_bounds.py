"""Numbers too large for the database's INTEGER columns are a 422 from the real owner,
never a 500, and the allocation is left as it was."""

from __future__ import annotations

import pytest

from tests.parent_http.conftest import envelope_ok
from tests.parent_http.test_node_flow import _dispatched, _online, _snapshot

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("http_fast_path")]


@pytest.mark.parametrize("bad", [
    {"article_count": 2**31},
    {"results": [{"feed_id": "{feed}", "status": "success", "article_count": 2**40}]},
    {"results": [{"feed_id": "{feed}", "status": "success", "duration_ms": 2**31}]},
])
async def test_oversized_counters_are_422_and_change_nothing(api, bad):
    a = api.node("a", capacity=1)
    await _online(api, a)
    _, task_id, _ = await _dispatched(api, n_feeds=1)
    pkg = envelope_ok(await api.as_node(a, "POST", "/claim-task"))
    feed = pkg["feeds"][0]["id"]
    body = {"allocation_id": pkg["allocation_id"], "task_id": task_id, "epoch": pkg["epoch"],
            "article_count": 1, "results": []}
    for key, value in bad.items():
        body[key] = [dict(r, feed_id=feed) for r in value] if key == "results" else value
    before = _snapshot(api.store)
    r = await api.as_node(a, "POST", "/report-completion", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    assert _snapshot(api.store) == before
