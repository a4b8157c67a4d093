"""Real ``cascade serve-parent`` processes for the end-to-end tests and the benchmark."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

CASCADE = [sys.executable, "-m", "cascade_cli"]
REPO = Path(__file__).resolve().parents[2]


def write_config(folder: Path, db_url: str | None = None, **parent: Any) -> Path:
    lines = ["data_dir: ./data", "log:", "  level: warning"]
    if db_url:
        lines += ["database:", f"  url: {json.dumps(db_url)}", "  pool_size: 20"]
    if parent:
        lines.append("parent:")
        for key, value in parent.items():
            if isinstance(value, dict):
                lines.append(f"  {key}:")
                lines += [f"    {k}: {json.dumps(v)}" for k, v in value.items()]
            else:
                lines.append(f"  {key}: {json.dumps(value)}")
    path = folder / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def env_for(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")}
    env["CASCADE_CONFIG"] = str(config)
    env["PYTHONPATH"] = str(REPO)
    return env


def cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*CASCADE, *args], env=env_for(config), capture_output=True, text=True,
                       timeout=120, cwd=config.parent)
    if check and r.returncode != 0:
        raise AssertionError(f"cascade {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r


def init_parent(config: Path, children: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    cli(config, "init")
    creds = {}
    for name in children:
        out = cli(config, "init", "--child", name, "--json").stdout
        creds[name] = json.loads(out)
    token = cli(config, "token", "create", "--ttl", "2h").stdout.strip()
    return {"children": creds, "token": token}


class ParentProc:
    """``cascade serve-parent --port 0``; ``.url`` once the startup line is read."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.config = config
        self.proc = subprocess.Popen(
            [*CASCADE, "serve-parent", "--host", "127.0.0.1", "--port", "0", *extra],
            env=env_for(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=config.parent)
        self.stderr_lines: list[str] = []
        self.startup_line = self._read_startup()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", self.startup_line)
        assert m, self.startup_line
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._drain, daemon=True).start()

    def _read_startup(self) -> str:
        assert self.proc.stdout is not None
        timer = threading.Timer(30, self.proc.kill)
        timer.start()
        try:
            line = self.proc.stdout.readline()
        finally:
            timer.cancel()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"serve-parent did not start: {err}")
        return line.strip()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def __enter__(self) -> ParentProc:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.stop()


def admin_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def plain_headers(child: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"AK-SK {child['api_key']}:{child['api_secret']}"}


def add_task(url: str, token: str, n_feeds: int, name: str = "t1") -> str:
    """Feeds and one task through the admin API; returns the task id."""
    with httpx.Client(base_url=url, headers=admin_headers(token), timeout=30) as c:
        ids = []
        for i in range(n_feeds):
            fid = f"F_{name}_{i}"
            r = c.post("/api/v1/cascade/feeds", json={"id": fid, "mp_name": fid,
                                                      "url": f"https://example.com/{fid}.xml"})
            assert r.status_code == 200, r.text
            ids.append(fid)
        r = c.post("/api/v1/cascade/message-tasks", json={"name": name, "mps_id": ids})
        assert r.status_code == 200, r.text
        return r.json()["data"]["id"]
