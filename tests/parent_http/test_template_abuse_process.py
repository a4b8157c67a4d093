"""A template that would run 10^10 loop iterations, through the real path (issue 16, point 2):
``serve-parent`` answers 422 within a second while other requests (``/healthz``, a heartbeat)
are answered meanwhile. (``cascade tasks add``: tests/foundation/test_cli_control_chars.py.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.parent_http.procs import (
    ParentProc,
    admin_headers,
    init_parent,
    plain_headers,
    write_config,
)

NESTED = ("{% for i in range(99999) %}{% for j in range(99999) %}{{ i }}{% endfor %}"
          "{% endfor %}")
P = "/api/v1/cascade"


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_nested_range_refused_fast_and_parent_keeps_serving(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    creds = init_parent(config, children=["c1"])
    with ParentProc(config) as parent, httpx.Client(base_url=parent.url, timeout=30) as c:
        token = creds["token"]
        r = c.post(f"{P}/feeds", headers=admin_headers(token),
                   json={"id": "F1", "url": "https://example.com/f.xml"})
        assert r.status_code == 200, r.text
        r = c.post(f"{P}/message-tasks", headers=admin_headers(token),
                   json={"name": "ok", "mps_id": ["F1"]})
        assert r.status_code == 200, r.text
        task_id = r.json()["data"]["id"]

        answers: list[httpx.Response] = []
        took: list[float] = []

        def abusive(path: str, method: str, body: dict[str, object]) -> None:
            started = time.monotonic()
            answers.append(c.request(method, f"{P}{path}", headers=admin_headers(token),
                                     json=body))
            took.append(time.monotonic() - started)

        others: list[float] = []
        for method, path, body in (
                ("POST", "/message-tasks", {"name": "bad", "mps_id": ["F1"],
                                            "message_template": NESTED}),
                ("PUT", f"/message-tasks/{task_id}", {"message_template": NESTED})):
            t = threading.Thread(target=abusive, args=(path, method, body))
            t.start()
            with httpx.Client(base_url=parent.url, timeout=5) as other:
                while t.is_alive():
                    started = time.monotonic()
                    assert other.get("/healthz").status_code == 200
                    hb = other.post(f"{P}/heartbeat", headers=plain_headers(
                        creds["children"]["c1"]), json={"running": []})
                    assert hb.status_code == 200, hb.text
                    others.append(time.monotonic() - started)
            t.join()
        for r in answers:
            assert r.status_code == 422, r.text
            assert r.json()["error"] == "invalid_template", r.text
            assert "loop iterations" in r.json()["message"] or "took more than" in \
                r.json()["message"], r.text
        assert max(took) < 1.5, took  # 0.5 s render bound + the request itself
        assert others and max(others) < 1.0, others
        # Nothing was saved: the task keeps its template, no task "bad".
        names = [t["name"] for t in c.get(f"{P}/message-tasks",
                                           headers=admin_headers(token)).json()["data"]]
        assert names == ["ok"]

