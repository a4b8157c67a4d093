"""Issue 18 end to end: a real ``cascade serve-parent`` process, the we-mp-rss data imported
with the CLI, and the original child's request sequence over real HTTP with its existing
key and secret."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from tests.migration import wemprss_db
from tests.migration.legacy_child import LegacyChild
from tests.parent_http.procs import ParentProc, admin_headers, cli, init_parent, write_config

pytestmark = pytest.mark.slow


def test_imported_child_runs_the_original_sequence_against_serve_parent(tmp_path) -> None:
    src = f"sqlite:///{tmp_path / 'wemprss.db'}"
    wemprss_db.build(src)
    config = write_config(tmp_path)
    info = init_parent(config)
    out = cli(config, "import", "we-mp-rss", "--database", src, "--json").stdout
    summary = json.loads(out)
    assert len(summary["nodes"]["created"]) == 2 and summary["tasks"]["created"]

    with ParentProc(config, "--no-scheduler", "--no-notifier") as proc:
        async def run() -> LegacyChild:
            async with httpx.AsyncClient(base_url=proc.url, timeout=30) as client:
                child = LegacyChild(client, wemprss_db.CHILD_KEY, wemprss_db.CHILD_SECRET)
                await child.send_heartbeat()
                assert await child.sync_feeds() == 3
                assert await child.sync_message_tasks() == 3  # task-2 is disabled
                r = await client.post("/api/v1/cascade/dispatch-task",
                                      headers=admin_headers(info["token"]))
                assert r.status_code == 200 and r.json()["data"]["allocations_created"] >= 1
                while True:
                    did_a = await child.worker_once()
                    did_b = await child.claim_and_execute_task()
                    await child.send_heartbeat()
                    if not did_a and not did_b:
                        break
                await child.report_task_result("task-1", [{"feed_id": "MP_WXS_3941",
                                                           "success": True}])
                r = await client.get("/api/v1/cascade/allocations",
                                     headers=admin_headers(info["token"]))
                allocs = r.json()["data"]["list"]
                assert allocs and {a["status"] for a in allocs} == {"completed"}
                r = await client.get("/api/v1/cascade/feed-status",
                                     headers=admin_headers(info["token"]))
                counts = {f["feed_id"]: f["article_count"] for f in r.json()["data"]}
                uploaded = {a["mp_id"] for a in child.uploaded}
                assert uploaded and all(counts[fid] == 3 for fid in uploaded)
                assert sum(counts.values()) == len(child.uploaded)  # each stored once
                return child

        child = anyio.run(run)
    bad = [(r.request.url.path, r.status_code, r.text) for r in child.responses
           if r.status_code != 200 or r.json().get("code") != 0]
    assert bad == [] and child.errors == []
    assert not any("Traceback" in line for line in proc.stderr_lines)
    assert all(wemprss_db.CHILD_SECRET not in line for line in proc.stderr_lines)
