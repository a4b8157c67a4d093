"""End to end with real processes: `cascade serve-parent`, then `cascade doctor` on the child
while the parent is stopped, running, the node disabled, its key revoked; and on the parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.doctor.conftest import child_config, free_port, parent_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def cascade(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cascade_cli", *args], capture_output=True,
                          text=True, env=_env(), timeout=60)


def doctor(cfg: Path, *extra: str) -> tuple[int, dict[str, dict]]:
    proc = cascade("doctor", "--config", str(cfg), "--json", "--timeout", "3", *extra)
    out = json.loads(proc.stdout)
    return proc.returncode, {c["name"]: c for c in out["checks"]}


def test_child_doctor_against_a_real_serve_parent(tmp_path: Path) -> None:
    port = free_port()
    pcfg = parent_config(tmp_path, port=port)
    assert cascade("--config", str(pcfg), "init").returncode == 0
    made = cascade("--config", str(pcfg), "init", "--child", "n1", "--json")
    assert made.returncode == 0, made.stderr
    creds = json.loads(made.stdout)
    ccfg = child_config(tmp_path, f"http://127.0.0.1:{port}", creds["api_key"],
                        creds["api_secret"])

    # 1. parent not started: 请求父节点失败: Connection refused
    code, r = doctor(ccfg, "--check", "child")
    assert code == 1
    assert r["child.tcp"]["status"] == "failed"
    assert "cascade serve-parent" in r["child.tcp"]["fix"]

    proc = subprocess.Popen([sys.executable, "-m", "cascade_cli", "--config", str(pcfg),
                             "serve-parent", "--no-scheduler", "--no-notifier"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env())
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if "listening on" in line:
                break
            assert proc.poll() is None, "serve-parent exited early"
        else:
            pytest.fail("serve-parent did not start")

        # 2. running, nothing dispatched: 暂无任务
        code, r = doctor(ccfg, "--check", "child")
        assert r["child.credentials"]["status"] == "ok", r["child.credentials"]
        assert r["child.protocol"]["status"] == "ok"
        assert r["child.clock"]["status"] == "ok"
        assert r["child.work"]["status"] == "warning"
        assert "暂无任务" in r["child.work"]["summary"]
        assert code == 0

        # 3. node disabled on the parent
        assert cascade("--config", str(pcfg), "nodes", "disable", "n1").returncode == 0
        code, r = doctor(ccfg, "--check", "child.credentials")
        assert code == 1
        assert "403 node_disabled" in r["child.credentials"]["summary"]
        assert "cascade nodes enable" in r["child.credentials"]["fix"]

        # 4. key revoked
        assert cascade("--config", str(pcfg), "nodes", "enable", "n1").returncode == 0
        assert cascade("--config", str(pcfg), "nodes", "revoke", "n1").returncode == 0
        code, r = doctor(ccfg, "--check", "child.credentials")
        assert code == 1
        assert "401 invalid_credentials" in r["child.credentials"]["summary"]
        assert "cascade nodes rotate NAME" in r["child.credentials"]["fix"]

        # 5. the parent's own doctor sees the node
        code, r = doctor(pcfg, "--check", "parent")
        assert r["parent.database"]["status"] == "ok"
        assert r["parent.schema"]["status"] == "ok"
        assert code in (0, 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
