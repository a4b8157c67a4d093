"""The remaining listings of issue 19 fit 100 columns with 8-character ids and relative times
(``--wide`` for the full ones): ``tasks list``, ``token list``, ``feeds list``, ``feeds
status``, ``tasks next`` and the "Dispatched" table; and every short id a table prints is
taken back (``nodes show``, ``tasks show``, ``allocations --task/--node``, ``token revoke``).
Through real ``cascade`` processes at COLUMNS=100."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cascade_cli.cli.main import app
from tests.observe.test_history_cli import assert_fits, run

pytestmark = pytest.mark.slow
runner = CliRunner()

LONG_URL = "https://feeds.example.com/" + "very-long-path/" * 6 + "rss.xml?format=full"
LONG_HOOK = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=" + "k" * 40
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")


def ok(*args: str) -> str:
    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r.stdout


def listing(*args: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(ok(*args, "--json"))["list"]
    return items


def test_remaining_tables_fit_100_columns(home: Path) -> None:
    ok("feeds", "add", LONG_URL, "--id", "MP_WXS_LONG", "--name", "一个名字很长的公众号")
    ok("tasks", "add", "evening", "--feeds", "MP_WXS_0,MP_WXS_LONG", "--cron", "0 18 * * *",
       "--webhook", LONG_HOOK)
    runner.invoke(app, ["token", "create", "--label", "nightly deploy of the reader"])
    evening = next(t for t in listing("tasks", "list") if t["name"] == "evening")
    assert len(evening["id"]) == 32

    out = run(home, "tasks", "list").stdout
    assert_fits(out)
    row = next(ln for ln in out.splitlines() if "evening" in ln)
    assert evening["id"][-8:] in row and evening["id"] not in row
    assert "qyapi.weixin.qq.com" in row and "…" in row  # the URL cut, not folded
    assert evening["id"] in ok("tasks", "list", "--wide")

    [token] = listing("token", "list")
    out = run(home, "token", "list").stdout
    assert_fits(out)
    row = next(ln for ln in out.splitlines() if "nightly" in ln)
    assert token["jti"][-8:] in row and token["jti"] not in row
    assert "ago" in row and "in 23h" in row and not ISO.search(out), out
    wide = ok("token", "list", "--wide")
    assert token["jti"] in wide and ISO.search(wide)

    out = run(home, "feeds", "list").stdout
    assert_fits(out)
    rows = [ln for ln in out.splitlines() if "MP_WXS_" in ln]
    assert len(rows) == 5, out  # one line per feed
    long_row = next(ln for ln in rows if "MP_WXS_LONG" in ln)
    assert "一个名字很长的公众号" in long_row and "https://feeds.example.com/" in long_row
    assert LONG_URL not in out and LONG_URL in ok("feeds", "list", "--wide")

    out = run(home, "feeds", "status").stdout
    assert_fits(out)
    assert len([ln for ln in out.splitlines() if "MP_WXS_" in ln]) == 5, out
    assert "ago" in out and not ISO.search(out), out  # fetched/newest as relative times
    assert ISO.search(ok("feeds", "status", "--wide"))

    out = run(home, "tasks", "next").stdout
    assert_fits(out)
    assert re.search(r"evening\s+0 18 \* \* \*\s+in \d+[smhd]\s+\d{4}-\d\d-\d\dT18:00:00Z",
                     out), out

    out = run(home, "dispatch", "--task", "evening").stdout
    assert_fits(out)
    runs = [r for r in listing("runs") if r["task_name"] == "evening"]
    assert len(runs) == 1
    row = next(ln for ln in out.splitlines() if ln.startswith("evening"))
    assert runs[0]["id"][-8:] in row and runs[0]["id"] not in out
    assert ok("runs", "show", runs[0]["id"][-8:]).count(runs[0]["id"]) >= 1


def test_short_ids_are_taken_back(home: Path) -> None:
    [node] = listing("nodes", "list")
    short_node = node["id"][-8:]
    assert short_node in ok("nodes", "list")
    shown = ok("nodes", "show", short_node)
    assert node["id"] in shown and "c1" in shown

    [task] = listing("tasks", "list")
    short_task = task["id"][-8:]
    assert short_task in ok("tasks", "list")
    assert task["id"] in ok("tasks", "show", short_task)
    out = ok("allocations", "--task", short_task)
    assert len([ln for ln in out.splitlines() if "morning" in ln]) == 2, out
    by_node = json.loads(ok("allocations", "--node", short_node, "--json"))
    assert by_node["total"] == 2

    # cascade events (a real process, as it prints) names the task, not its short id
    events = run(home, "events").stdout
    dispatch = next(ln for ln in events.splitlines() if "dispatch" in ln)
    assert "task=morning" in dispatch and short_task not in dispatch

    runner.invoke(app, ["token", "create"])
    [token] = listing("token", "list")
    assert token["jti"] in ok("token", "revoke", token["jti"][-8:])
    assert listing("token", "list")[0]["status"] == "revoked"

    # an unknown id is "not found"; an end shared by two ids lists both, never guesses
    r = runner.invoke(app, ["nodes", "show", "00000000"])
    assert r.exit_code == 1 and "node not found: 00000000" in r.output, r.output
    for name, ident in (("a", "aaaa0000deadbeef"), ("b", "bbbb0000deadbeef")):
        ok("tasks", "add", name, "--feeds", "MP_WXS_0", "--id", ident)
    r = runner.invoke(app, ["tasks", "show", "deadbeef"])
    assert r.exit_code == 2, r.output
    assert "matches several tasks" in r.output
    assert "aaaa0000deadbeef" in r.output and "bbbb0000deadbeef" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
