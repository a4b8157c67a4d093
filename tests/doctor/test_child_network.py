"""Guide problem 2 (请求父节点失败): each network failure named separately, built for real."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from cascade_cli.clock import SystemClock, isoformat_z
from tests.doctor.conftest import child_config, diagnose, free_port

NET = ["child.settings", "child.dns", "child.tcp", "child.http", "child.credentials",
       "child.clock", "child.protocol"]


def test_stopped_parent_is_connection_refused(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here any more
    cfg = child_config(tmp_path, f"http://127.0.0.1:{port}")
    r, report = diagnose(tmp_path, cfg, NET)
    assert r["child.dns"].status == "ok"
    assert r["child.tcp"].status == "failed"
    assert "connection refused" in r["child.tcp"].summary
    assert "Connection refused" in r["child.tcp"].summary  # the guide's symptom string
    assert "cascade serve-parent" in (r["child.tcp"].fix or "")
    assert f"grep {port}" in (r["child.tcp"].fix or "")
    assert r["child.http"].status == "skipped"
    assert r["child.credentials"].status == "skipped"
    assert report.exit_code == 1


def test_unresolvable_host_is_dns(tmp_path: Path) -> None:
    cfg = child_config(tmp_path, "http://no-such-parent.invalid:8001")
    r, _ = diagnose(tmp_path, cfg, NET)
    assert r["child.dns"].status == "failed"
    assert "cannot resolve 'no-such-parent.invalid'" in r["child.dns"].summary
    assert "/etc/hosts" in (r["child.dns"].fix or "")
    assert r["child.tcp"].status == "skipped"


def test_wrong_port_with_another_http_service_is_404(tmp_path: Path, scripted) -> None:
    other = scripted(lambda h: (404, {"detail": "Not Found"}, {}))  # e.g. a web UI on that port
    cfg = child_config(tmp_path, other.url)
    r, _ = diagnose(tmp_path, cfg, NET)
    assert r["child.tcp"].status == "ok"
    http = r["child.http"]
    assert http.status == "failed"
    assert "404 Not Found" in http.summary and "请求父节点失败: 404 - Not Found" in http.summary
    assert "/api/v1/cascade/heartbeat" in http.summary
    assert "check the port" in (http.fix or "")
    assert other.requests[0][1] == "/api/v1/cascade/heartbeat"
    assert r["child.credentials"].status == "skipped"


def test_wrong_path_prefix_behind_real_parent(tmp_path: Path, live_parent) -> None:
    creds = live_parent.node("n1")
    cfg = child_config(tmp_path, live_parent.url + "/cascade", creds.api_key, creds.api_secret)
    r, _ = diagnose(tmp_path, cfg, NET)
    http = r["child.http"]
    assert http.status == "failed"
    assert http.data["url"].endswith("/cascade/api/v1/cascade/heartbeat")
    assert "without the path '/cascade'" in (http.fix or "")
    assert live_parent.url.replace("127.0.0.1", "127.0.0.1") in (http.fix or "")


@pytest.mark.parametrize("suffix", ["/api/v1/cascade", "/api/v1/wx/cascade/"])
def test_prefix_pasted_into_parent_api_url_is_normalised(tmp_path: Path, live_parent,
                                                         suffix: str) -> None:
    # The guide shows full API paths; a base URL pasted with the prefix means the same parent.
    creds = live_parent.node("n1")
    cfg = child_config(tmp_path, live_parent.url + suffix, creds.api_key, creds.api_secret)
    r, _ = diagnose(tmp_path, cfg, ["child.http", "child.credentials"])
    assert r["child.http"].status == "ok", r["child.http"]
    assert r["child.credentials"].status == "ok", r["child.credentials"]


def test_silent_server_is_a_network_timeout(tmp_path: Path, silent_server: str) -> None:
    cfg = child_config(tmp_path, silent_server)
    r, _ = diagnose(tmp_path, cfg, NET, timeout=0.5)
    assert r["child.tcp"].status == "ok"
    assert r["child.http"].status == "failed"
    assert "no HTTP answer" in r["child.http"].summary
    assert "firewall" in (r["child.http"].fix or "")


def _fake_parent(skew: float = 0.0, protocol: object = 1):
    def answer(h):
        if h.path.endswith("/heartbeat"):
            if "Authorization" not in h.headers:
                return 401, {"code": 401, "message": "missing", "data": None,
                             "error": "missing_credentials"}, {}
            now = SystemClock().now() + timedelta(seconds=skew)
            data = {"status": "alive", "node_id": "x", "node_name": "fake",
                    "server_time": isoformat_z(now)}
            if protocol is not None:
                data["protocol"] = protocol
            return 200, {"code": 0, "message": "ok", "data": data}, {}
        return 404, {"code": 404, "message": "Not Found", "data": None}, {}
    return answer


def test_skewed_parent_clock_fails_signed_requests(tmp_path: Path, scripted) -> None:
    srv = scripted(_fake_parent(skew=-3600))  # the parent is one hour behind this host
    cfg = child_config(tmp_path, srv.url)
    r, _ = diagnose(tmp_path, cfg, NET)
    clock = r["child.clock"]
    assert clock.status == "failed"
    assert "3600 s ahead of the parent" in clock.summary
    assert "signed requests fail beyond 300 s" in clock.summary
    assert "timedatectl set-ntp true" in (clock.fix or "")


def test_small_drift_is_a_warning_and_plain_mode_only_warns(tmp_path: Path, scripted) -> None:
    srv = scripted(_fake_parent(skew=60))
    r, _ = diagnose(tmp_path, child_config(tmp_path, srv.url), ["child.clock"])
    assert r["child.clock"].status == "warning"
    srv2 = scripted(_fake_parent(skew=3600))
    cfg = child_config(tmp_path, srv2.url, auth_mode="plain")
    r, _ = diagnose(tmp_path, cfg, ["child.clock", "child.auth_mode"])
    assert r["child.clock"].status == "warning"
    assert "plain AK-SK still works" in r["child.clock"].summary
    assert r["child.auth_mode"].status == "warning"
    assert "cascade.auth_mode: signed" in (r["child.auth_mode"].fix or "")


def test_protocol_mismatch_and_missing_version(tmp_path: Path, scripted) -> None:
    srv = scripted(_fake_parent(protocol=2))
    r, _ = diagnose(tmp_path, child_config(tmp_path, srv.url), ["child.protocol"])
    assert r["child.protocol"].status == "failed"
    assert "parent speaks 2, this child 1" in r["child.protocol"].summary
    assert "same Cascade release" in (r["child.protocol"].fix or "")
    srv = scripted(_fake_parent(protocol=None))
    r, _ = diagnose(tmp_path, child_config(tmp_path, srv.url), ["child.protocol"])
    assert r["child.protocol"].status == "warning"


def test_server_error_and_foreign_service(tmp_path: Path, scripted) -> None:
    srv = scripted(lambda h: (503, {"code": 503, "message": "db down", "data": None}, {}))
    r, _ = diagnose(tmp_path, child_config(tmp_path, srv.url), ["child.http"])
    assert r["child.http"].status == "failed"
    assert "503" in r["child.http"].summary
    assert "cascade doctor' on the parent" in (r["child.http"].fix or "")
    srv = scripted(lambda h: (200, b"<html>hello</html>", {}))
    r, _ = diagnose(tmp_path, child_config(tmp_path, srv.url), ["child.http"])
    assert r["child.http"].status == "failed"
    assert "another service" in r["child.http"].summary
