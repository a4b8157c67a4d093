"""Real processes: a ``serve-parent`` subprocess on a temporary SQLite database and
``run-child`` subprocesses, each with its own generated config file."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from cascade_cli.clock import SystemClock
from cascade_cli.config import Settings, load_settings
from cascade_cli.domain.dispatch import dispatch
from cascade_cli.protocol import FeedIn, MessageTaskIn
from cascade_cli.store import allocations as alloc_store
from cascade_cli.store.engine import Store
from cascade_cli.store.feeds import create_feed
from cascade_cli.store.tasks import create_task
from tests.child.harness import Parent
from tests.child.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_for(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Deployment:
    def __init__(self, tmp: Path, database_url: str = "sqlite:///cascade.db",
                 **parent: Any) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.parent_cfg = self._yaml("parent.yaml", {
            "data_dir": "parent-data", "database": {"url": database_url},
            "parent": {"host": "127.0.0.1", "port": self.port, "batch_size": 2,
                       "lease_ttl": 60, "reaper_interval": 1, "heartbeat_interval": 1,
                       "scheduler": {"enabled": False}, "notify": {"enabled": False},
                       **parent}})
        self.cascade("init")
        self.settings: Settings = load_settings(self.parent_cfg, environ={})
        self.store = Store.from_url(self.settings.database_url)
        self.clock = SystemClock()
        self.parent: subprocess.Popen[bytes] | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def _yaml(self, name: str, data: dict[str, Any]) -> Path:
        path = self.tmp / name
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    def cascade(self, *args: str, config: Path | None = None) -> str:
        proc = subprocess.run([sys.executable, "-m", "cascade_cli", "--config",
                               str(config or self.parent_cfg), *args], capture_output=True,
                              text=True, env=self.env, cwd=self.tmp, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def _spawn(self, name: str, *args: str, config: Path) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        return subprocess.Popen([sys.executable, "-m", "cascade_cli", "--config", str(config),
                                 *args], stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                cwd=self.tmp, start_new_session=True)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    # --- parent ----------------------------------------------------------------------------

    def start_parent(self) -> None:
        self.parent = self._spawn("parent", "serve-parent", config=self.parent_cfg)

        def healthy() -> bool:
            assert self.parent is not None and self.parent.poll() is None, self.log("parent")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            return False

        wait_for(healthy, 30, "serve-parent")

    def stop_parent(self) -> None:
        if self.parent and self.parent.poll() is None:
            self.parent.send_signal(signal.SIGTERM)
            self.parent.wait(15)

    # --- children --------------------------------------------------------------------------

    def child_config(self, name: str, **child: Any) -> Path:
        creds = json.loads(self.cascade("init", "--child", name, "--json"))
        cfg = {"claim_wait": 1, "fetch_timeout": 10, "drain_timeout": 10,
               "spool_path": f"{name}-spool.db", **child}
        return self._yaml(f"{name}.yaml", {
            "cascade": {"enabled": True, "node_type": "child", "parent_api_url": self.url,
                        "api_key": creds["api_key"], "api_secret": creds["api_secret"],
                        "heartbeat_interval": 1},
            "child": cfg, "log": {"level": "info"}})

    def start_child(self, name: str, *args: str, config: Path | None = None,
                    **child: Any) -> subprocess.Popen[bytes]:
        config = config or self.child_config(name, **child)
        proc = self._spawn(name, "run-child", *args, config=config)
        self.children[name] = proc
        return proc

    # --- data ------------------------------------------------------------------------------

    def task(self, feeds: list[dict[str, Any]], name: str = "t1") -> str:
        with self.store.session() as s:
            for f in feeds:
                create_feed(s, self.clock.now(), FeedIn(**f))
            return create_task(s, self.clock.now(), MessageTaskIn(
                name=name, mps_id=[f["id"] for f in feeds])).id

    def dispatch(self, task_id: str) -> dict[str, Any]:
        with self.store.session() as s:
            return dispatch(s, self.clock.now(), self.settings, task_id=task_id).to_dict()

    def allocations(self, task_id: str) -> list[dict[str, Any]]:
        with self.store.session() as s:
            return alloc_store.list_allocations(s, task_id=task_id, limit=200)[0]

    def statuses(self, task_id: str) -> list[str]:
        return sorted(a["status"] for a in self.allocations(task_id))

    def article_count(self) -> tuple[int, int]:
        return Parent.article_count(self)  # type: ignore[arg-type]

    def close(self) -> None:
        for proc in list(self.children.values()) + ([self.parent] if self.parent else []):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.store.dispose()
