"""What a real ``cascade serve-parent`` tells on standard error (issue 19, "See what is
happening"): dispatches, cron fires, finished runs, lease expiries, node online/offline and
webhook outcomes at INFO, claims and uploads only at DEBUG, an optional access log, UTC
timestamps with their zone, one ``cascade.*`` namespace, no secret; and the counters of
``/metrics`` that go with them."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.parent_http.procs import (
    ParentProc,
    add_task,
    admin_headers,
    init_parent,
    plain_headers,
)

pytestmark = pytest.mark.slow
P = "/api/v1/cascade"
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR)\s+(\S+): ")


class _Hook(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        n = int(self.headers.get("content-length") or 0)
        _Hook.received.append(self.rfile.read(n))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def _config(folder: Path, level: str, access_log: bool) -> Path:
    path = folder / "config.yaml"
    path.write_text("\n".join([
        "data_dir: ./data",
        "log:", f"  level: {level}", f"  access_log: {json.dumps(access_log)}",
        "parent:", "  reaper_interval: 0.2", "  offline_after: 2.5", "  lease_ttl: 1",
        "  scheduler:", "    tick_interval: 0.2", "  notify:", "    poll_interval: 0.2",
    ]) + "\n")
    return path


def _wait_for(proc: ParentProc, pattern: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while time.monotonic() < deadline:
        for line in list(proc.stderr_lines):
            if rx.search(line):
                return line
        time.sleep(0.05)
    raise AssertionError(f"no log line matching {pattern!r} in:\n" + "".join(proc.stderr_lines))


def _claim(url: str, child: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(url + P + "/claim-task", headers=plain_headers(child))
    data = r.json()["data"]
    assert data, r.text
    return data  # type: ignore[no-any-return]


def test_serve_parent_logs_the_work(tmp_path: Path, webhook: str) -> None:
    config = _config(tmp_path, "debug", access_log=True)
    info = init_parent(config, ["c1"])
    child = info["children"]["c1"]
    admin = admin_headers(info["token"])
    with ParentProc(config) as proc:
        url = proc.url
        httpx.post(url + P + "/heartbeat", headers=plain_headers(child))
        _wait_for(proc, r"cascade\.nodes: node c1 online")

        # a run from dispatch to webhook: one feed ok with a new article, one failed
        task_id = add_task(url, info["token"], 2, name="t1")
        r = httpx.put(url + P + f"/message-tasks/{task_id}", headers=admin,
                      json={"web_hook_url": webhook})
        assert r.status_code == 200, r.text
        assert httpx.post(url + P + "/dispatch-task", headers=admin,
                          params={"task_id": "t1"}).json()["code"] == 0
        _wait_for(proc, r"cascade\.dispatch: dispatched task t1 \(api\): run \w+, "
                        r"2 allocations, 2 feeds")
        r = httpx.post(url + P + "/claim-task", headers=plain_headers(child),
                       params={"max": 2})
        pkgs = r.json()["data"]
        assert len(pkgs) == 2, r.text
        for pkg in pkgs:
            _wait_for(proc, rf"DEBUG\s+cascade\.node: claim: node c1 took allocation "
                            rf"{pkg['allocation_id']} \(task t1, 1 feeds\)")
        for pkg in pkgs:
            alloc, epoch, feed = pkg["allocation_id"], pkg["epoch"], pkg["feeds"][0]["id"]
            if feed == "F_t1_0":
                r = httpx.post(url + P + "/upload-articles", headers=plain_headers(child), json={
                    "allocation_id": alloc, "epoch": epoch, "articles": [
                        {"feed_id": feed, "id": "a1", "title": "hello",
                         "url": "https://example.com/a1"}]})
                assert r.json()["code"] == 0, r.text
                _wait_for(proc, rf"cascade\.node: upload: node c1, allocation {alloc}: "
                                r"1 articles, 1 new")
                result = {"feed_id": feed, "status": "success", "article_count": 1}
            else:
                result = {"feed_id": feed, "status": "failed", "error": "HTTP 404"}
            r = httpx.post(url + P + "/report-completion", headers=plain_headers(child),
                           json={"allocation_id": alloc, "epoch": epoch, "results": [result]})
            assert r.json()["code"] == 0, r.text
        _wait_for(proc, r"INFO\s+cascade\.runs: run \w+ of task t1 finished: allocations "
                        r"2 completed; 1 feeds failed; 1 new articles$")
        _wait_for(proc, r"INFO\s+cascade\.notify: run \w+ of task t1: 1 notifications queued$")
        _wait_for(proc, r"INFO\s+cascade\.notify: webhook delivery \w+ of task t1, feed F_t1_0 "
                        r"\(generic, attempt 1/\d+\) delivered \(HTTP 200\)")

        # a lease that runs out: requeued
        add_task(url, info["token"], 1, name="t2")
        httpx.post(url + P + "/dispatch-task", headers=admin, params={"task_id": "t2"})
        held = _claim(url, child)["allocation_id"]
        _wait_for(proc, rf"INFO\s+cascade\.reaper: lease expired: allocation {held} of task t2 "
                        r"held by node c1 \(attempt 1 of 3\): requeued")

        # no heartbeat for offline_after: offline
        _wait_for(proc, r"WARNING\s+cascade\.nodes: node c1 offline: no heartbeat")

        # a cron task fires every second
        cron_id = add_task(url, info["token"], 1, name="t3")
        httpx.put(url + P + f"/message-tasks/{cron_id}", headers=admin,
                  json={"cron_exp": "* * * * * *"})
        _wait_for(proc, r"INFO\s+cascade\.scheduler: cron fired task t3 for \S+Z: run \w+")

        httpx.get(url + "/healthz")
        _wait_for(proc, r"INFO\s+cascade\.access: 127\.0\.0\.1 GET /healthz 200 [\d.]+ms")

        metrics = httpx.get(url + "/metrics").text
        proc.stop()
    for line in ("process_cpu_seconds_total", 'cascade_feed_fetches_total{status="failed"} 1.0',
                 'cascade_feed_fetches_total{status="success"} 1.0',
                 'cascade_webhook_deliveries_total{outcome="delivered"} 1.0',
                 'cascade_scheduler_ticks_total{action="fired"}',
                 'cascade_lease_expiries_total{outcome="requeued"}'):
        assert line in metrics, line
    text = "".join(proc.stderr_lines)
    for secret in (child["api_secret"], info["token"]):
        assert secret not in text
    for line in proc.stderr_lines:
        if line.startswith(("Traceback", " ")):
            continue
        m = STAMP.match(line)
        assert m, f"not a log line with a UTC timestamp: {line!r}"
        # one namespace: only a library's warning or error may come under another name
        assert m.group(2).startswith("cascade.") or m.group(1) in ("WARNING", "ERROR"), line

    # The same database at INFO without the access log: no claim, no request line.
    _config(tmp_path, "info", access_log=False)
    with ParentProc(config, "--no-scheduler", "--no-notifier") as proc:
        add_task(proc.url, info["token"], 1, name="t4")
        httpx.post(proc.url + P + "/dispatch-task", headers=admin,
                   params={"task_id": "t4"})
        _wait_for(proc, r"cascade\.dispatch: dispatched task t4")
        _claim(proc.url, child)
        time.sleep(0.3)
        proc.stop()
    text = "".join(proc.stderr_lines)
    assert "claim: node" not in text
    assert "cascade.access" not in text
