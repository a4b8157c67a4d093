"""``cascade runs``, ``runs show``, ``events``, the allocations table and the one ``--json``
shape of every listing, through real ``cascade`` processes at 100 columns (issue 19)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cascade_cli.cli.main import app
from tests.parent_http.procs import CASCADE, env_for

pytestmark = pytest.mark.slow
runner = CliRunner()


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**env_for(config), "COLUMNS": "100", "NO_COLOR": "1"}
    r = subprocess.run([*CASCADE, *args], env=env, capture_output=True, text=True, timeout=120,
                       cwd=config.parent)
    assert r.returncode == 0, f"cascade {' '.join(args)}: {r.stderr}"
    return r


def assert_fits(text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= 100, f"{len(line)} columns: {line!r}"


def test_runs_history_and_allocations_table(home: Path) -> None:
    listed = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)  # JSON: in process
    assert set(listed) == {"list", "total", "page"} and listed["total"] == 1
    [r] = listed["list"]
    assert len(r["id"]) == 32  # full ids in JSON
    assert r["task_name"] == "morning" and r["status"] == "finished"
    assert r["allocations_by_status"] == {"completed": 2}
    assert (r["failed_feeds"], r["feeds_reported"], r["new_articles"]) == (1, 4, 1)
    assert r["deliveries"] == {"pending": 1}

    out = run(home, "runs", "--task", "morning").stdout
    assert_fits(out)
    row = next(ln for ln in out.splitlines() if "morning" in ln)
    assert r["id"][-8:] in row and r["id"] not in row  # 8-character ids
    assert "finished (1/4 feeds failed)" in row and "2 completed" in row and "ago" in row
    assert "1 failed feeds" in out

    shown = run(home, "runs", "show", r["id"][-8:]).stdout
    assert_fits(shown)
    assert r["id"] in shown and "completed (1/2 failed)" in shown
    assert re.search(r"MP_WXS_1\s+c1\s+failed\s+0 \(0\).*HTTP 404 Not Found", shown), shown
    assert "Webhook deliveries" in shown and "pending" in shown
    detail = json.loads(runner.invoke(app, ["runs", "show", r["id"], "--json"]).stdout)
    assert {f["feed_id"]: f["status"] for f in detail["feed_results"]}["MP_WXS_1"] == "failed"
    assert len(detail["allocation_list"]) == 2 and len(detail["delivery_list"]) == 1

    out = run(home, "allocations", "--task", "morning").stdout  # a name, not only an id
    assert_fits(out)
    rows = [ln for ln in out.splitlines() if "morning" in ln and "c1" in ln]
    assert len(rows) == 2
    assert sum("completed (1/2 failed)" in ln for ln in rows) == 1
    assert all(re.match(r"^\s*[0-9a-f]{8}\s", ln) for ln in rows), rows
    assert "failed feeds 1" in out
    wide = run(home, "allocations", "--task", "morning", "--wide").stdout
    assert re.search(r"[0-9a-f]{32}", wide)


def test_events_and_follow(home: Path) -> None:
    out = run(home, "events", "--node", "c1").stdout
    assert "report_completion" in out or "completion" in out, out
    assert all("node=c1" in ln for ln in out.splitlines() if ln.strip()), out
    data = json.loads(runner.invoke(app, ["events", "--json"]).stdout)
    assert set(data) == {"list", "total", "page"} and data["total"] >= 3
    assert {"dispatch", "run_finished"} <= {e["operation"] for e in data["list"]}

    env = {**env_for(home), "COLUMNS": "100", "NO_COLOR": "1"}
    proc = subprocess.Popen([*CASCADE, "events", "--follow", "--interval", "0.2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=home.parent)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "node_created" in first or "dispatch" in first, first
        r = runner.invoke(app, ["nodes", "disable", "c1"])
        assert r.exit_code == 0, r.output
        deadline = time.monotonic() + 30
        seen = ""
        while time.monotonic() < deadline and "node_disabled" not in seen:
            seen = proc.stdout.readline()
        assert "node_disabled" in seen and "node=c1" in seen
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0


def test_every_listing_has_one_json_shape(home: Path) -> None:
    listings = [["allocations"], ["nodes", "list"], ["list-credentials"], ["feeds", "list"],
                ["feeds", "status"], ["tasks", "list"], ["tasks", "next"],
                ["deliveries", "list"], ["runs"], ["runs", "list"], ["events"],
                ["token", "list"]]
    for args in listings:
        r = runner.invoke(app, [*args, "--json"])
        assert r.exit_code == 0, (args, r.output)
        data: Any = json.loads(r.stdout)
        assert set(data) == {"list", "total", "page"}, args
        assert isinstance(data["list"], list) and data["total"] >= len(data["list"]), args
        assert set(data["page"]) == {"limit", "offset"}, args


def test_commands_take_the_short_ids_tables_show(home: Path) -> None:
    [d] = json.loads(runner.invoke(app, ["deliveries", "list", "--json"]).stdout)["list"]
    r = runner.invoke(app, ["deliveries", "retry", d["id"][-8:]])
    assert r.exit_code == 0 and "requeued 1" in r.stdout, r.output
    r = runner.invoke(app, ["deliveries", "retry", "zzzzzzzz"])
    assert r.exit_code == 1 and "not found" in r.output.lower(), r.output
    [run_] = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)["list"]
    r = runner.invoke(app, ["allocations", "--run", run_["id"][-8:], "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["total"] == 2, r.output
