"""``cascade demo``: the whole system on this machine, offline, with real processes.

A temporary folder gets a parent config and SQLite database (``cascade init``), one child node
per child process (``cascade init --child``), the bundled sample feeds (served by a local HTTP
server in this process) and a task over them. Then ``serve-parent`` and the ``run-child``
processes start as real subprocesses, the task is dispatched, progress is shown live and a
summary table closes the run. Every process started here is stopped on exit or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cascade_cli.clock import SystemClock
from cascade_cli.config import load_settings
from cascade_cli.console import make_console, print_json
from cascade_cli.demo.server import FeedServer, manifest
from cascade_cli.domain.dispatch import dispatch
from cascade_cli.errors import CascadeError
from cascade_cli.private_file import write_private
from cascade_cli.protocol import FeedIn, MessageTaskIn
from cascade_cli.store import allocations as alloc_store
from cascade_cli.store import nodes as node_store
from cascade_cli.store.engine import Store
from cascade_cli.store.feeds import create_feed
from cascade_cli.store.tasks import create_task

TERMINAL = ("completed", "failed", "timeout")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DemoProcesses:
    """The subprocesses of one demo run; ``stop()`` ends them all (TERM, then KILL)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")}
        self.env["PYTHONUNBUFFERED"] = "1"

    def cascade(self, *args: str, config: Path) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "cascade_cli", "--config", str(config),
                               *args], capture_output=True, text=True, env=self.env,
                              cwd=self.root, timeout=60)
        if proc.returncode != 0:
            raise CascadeError(f"demo setup failed: cascade {' '.join(args)} exited "
                               f"{proc.returncode}: {proc.stderr.strip()[-500:]}")
        return proc

    def start(self, name: str, *args: str, config: Path) -> subprocess.Popen[bytes]:
        log = self.root / f"{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "cascade_cli", "--config",
                                     str(config), *args], stdout=fh, stderr=subprocess.STDOUT,
                                    env=self.env, cwd=self.root, start_new_session=True)
        self.procs.append((name, proc, log))
        return proc

    def check_alive(self) -> None:
        for name, proc, log in self.procs:
            if proc.poll() is not None:
                tail = log.read_text(encoding="utf-8", errors="replace").strip()[-800:]
                raise CascadeError(f"demo: {name} exited with status {proc.returncode}:\n{tail}")

    def stop(self, timeout: float = 10) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for _, proc, _ in reversed(self.procs):  # children first, the parent last
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, proc, _ in self.procs:
            try:
                codes[name] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                codes[name] = proc.wait()
        return codes


def _write_yaml(path: Path, data: dict[str, Any]) -> Path:
    # Mode 0600: the children's files hold their secrets (and a kept demo folder must pass
    # cascade doctor's permission check).
    write_private(path, yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def run_demo(app: Any, *, as_json: bool = False, keep: bool = False, n_children: int = 2,
             timeout: float = 120.0) -> int:
    err = make_console(stderr=True)
    root = Path(tempfile.mkdtemp(prefix="cascade-demo-"))
    procs = DemoProcesses(root)
    feeds_srv = FeedServer(delay=0.3).start()  # a little network latency, as in real life
    started = time.monotonic()
    try:
        summary = _run(err, root, procs, feeds_srv, n_children, timeout, as_json)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted: stopping the demo processes[/yellow]")
        procs.stop()
        raise
    finally:
        codes = procs.stop()
        feeds_srv.stop()
        if keep:
            err.print(f"kept the demo folder: {escape(str(root))}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    summary["exit_codes"] = codes
    summary["elapsed_s"] = round(time.monotonic() - started, 2)
    if keep:
        summary["folder"] = str(root)
    ok = summary["completed"] == summary["allocations"] and summary["allocations"] > 0
    if as_json:
        print_json(summary)
    else:
        _render(make_console(), summary)
    return 0 if ok else 1


def _run(err: Any, root: Path, procs: DemoProcesses, feeds_srv: FeedServer, n_children: int,
         timeout: float, as_json: bool) -> dict[str, Any]:
    clock = SystemClock()
    port = _free_port()
    parent_url = f"http://127.0.0.1:{port}"
    parent_cfg = _write_yaml(root / "parent.yaml", {
        "data_dir": "parent-data",
        "database": {"url": "sqlite:///cascade.db"},
        "parent": {"host": "127.0.0.1", "port": port, "public_url": parent_url,
                   "lease_ttl": 60, "reaper_interval": 2, "batch_size": 2,
                   "heartbeat_interval": 2, "scheduler": {"enabled": False},
                   "notify": {"enabled": False}},
        "log": {"level": "info"}})
    err.print(f"[bold]Cascade demo[/bold] in {escape(str(root))}")
    err.print(f"  feed server   {feeds_srv.base_url} ({len(manifest())} sample feeds)")
    procs.cascade("init", config=parent_cfg)
    names = [f"demo-child-{i + 1}" for i in range(n_children)]
    child_cfgs = []
    for name in names:
        creds = json.loads(procs.cascade("init", "--child", name, "--json",
                                         config=parent_cfg).stdout)
        child_cfgs.append(_write_yaml(root / f"{name}.yaml", {
            "cascade": {"enabled": True, "node_type": "child", "parent_api_url": parent_url,
                        "api_key": creds["api_key"], "api_secret": creds["api_secret"],
                        "heartbeat_interval": 2},
            "child": {"capacity": 2, "claim_wait": 2, "spool_path": f"{name}-spool.db",
                      "fetch_concurrency": 8},
            "log": {"level": "info"}}))
    settings = load_settings(parent_cfg, environ={})
    store = Store.from_url(settings.database_url)
    try:
        with store.session() as s:
            ids = []
            for m in manifest():
                create_feed(s, clock.now(), FeedIn(id=m["id"], mp_name=m["mp_name"],
                                                   url=feeds_srv.url_for(m["file"]),
                                                   kind=m["kind"]))
                ids.append(m["id"])
            task_id = create_task(s, clock.now(), MessageTaskIn(name="demo", mps_id=ids)).id
        procs.start("serve-parent", "serve-parent", config=parent_cfg)
        _wait_healthy(procs, parent_url, 30)
        err.print(f"  parent        {parent_url} (serve-parent, SQLite)")
        for name, cfg in zip(names, child_cfgs, strict=True):
            procs.start(name, "run-child", "--log-format", "json", config=cfg)
        _wait_online(procs, store, clock, settings, names, 30)
        err.print(f"  children      {', '.join(names)} (run-child, online)")
        t0 = time.monotonic()
        with store.session() as s:
            result = dispatch(s, clock.now(), settings, task_id=task_id).to_dict()
        total = int(result.get("allocations_created") or 0)
        err.print(f"  dispatched    task 'demo': {len(ids)} feeds in {total} allocations")
        rows = _watch(err, procs, store, alloc_store, task_id, total, timeout, as_json)
        took = time.monotonic() - t0
    finally:
        store.dispose()
    return _summarise(rows, names, len(ids), took, node_store)


def _wait_healthy(procs: DemoProcesses, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise CascadeError(f"demo: the parent did not answer on {url} within {timeout:g}s")


def _wait_online(procs: DemoProcesses, store: Any, clock: Any, settings: Any,
                 names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive()
        with store.session() as s:
            nodes = [n for n in node_store.list_nodes(s) if n.name in names]
            if len(nodes) == len(names) and all(
                    node_store.is_online(n, clock.now(), settings.parent.offline_after)
                    for n in nodes):
                return
        time.sleep(0.1)
    raise CascadeError("demo: the children did not come online")


def _watch(err: Any, procs: DemoProcesses, store: Any, alloc_store: Any, task_id: str,
           total: int, timeout: float, as_json: bool) -> list[dict[str, Any]]:
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=err,
                        transient=False, disable=not err.is_terminal and as_json)
    bar = progress.add_task("allocations", total=max(total, 1), detail="")
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    with Live(progress, console=err, refresh_per_second=10,
              transient=False) if err.is_terminal else contextlib.nullcontext():
        while True:
            procs.check_alive()
            with store.session() as s:
                rows, _ = alloc_store.list_allocations(s, task_id=task_id, limit=200)
            done = sum(1 for r in rows if r["status"] in TERMINAL)
            busy = sum(1 for r in rows if r["status"] in ("claimed", "executing"))
            arts = sum(int(r.get("article_count") or 0) for r in rows)
            progress.update(bar, completed=done,
                            detail=f"{busy} running, {arts} articles")
            if rows and done == len(rows):
                break
            if time.monotonic() > deadline:
                raise CascadeError(f"demo: not finished after {timeout:g}s ({done}/{len(rows)} "
                                   "allocations); rerun with --keep and read the logs")
            time.sleep(0.2)
    if not err.is_terminal and not as_json:
        err.print(f"  finished      {len(rows)}/{len(rows)} allocations")
    return rows


def _summarise(rows: list[dict[str, Any]], names: list[str], n_feeds: int, took: float,
               node_store: Any) -> dict[str, Any]:
    per_node: dict[str, dict[str, Any]] = {n: {"node": n, "allocations": 0, "feeds": 0,
                                               "feeds_failed": 0, "articles": 0,
                                               "new_articles": 0} for n in names}
    for r in rows:
        node = per_node.setdefault(r.get("node_name") or "-", {
            "node": r.get("node_name") or "-", "allocations": 0, "feeds": 0, "feeds_failed": 0,
            "articles": 0, "new_articles": 0})
        node["allocations"] += 1
        node["feeds"] += len(r.get("feed_ids") or [])
        summary = r.get("result_summary") or {}
        node["feeds_failed"] += int(summary.get("failed") or summary.get("feeds_failed") or 0)
        node["articles"] += int(r.get("article_count") or 0)
        node["new_articles"] += int(r.get("new_article_count") or 0)
    return {
        "allocations": len(rows),
        "completed": sum(1 for r in rows if r["status"] == "completed"),
        "failed": sum(1 for r in rows if r["status"] in ("failed", "timeout")),
        "feeds": n_feeds,
        "articles": sum(n["articles"] for n in per_node.values()),
        "new_articles": sum(n["new_articles"] for n in per_node.values()),
        "seconds": round(took, 2),
        "nodes": list(per_node.values()),
    }


def _render(out: Any, summary: dict[str, Any]) -> None:
    t = Table(title="Cascade demo summary", header_style="bold")
    for col in ("node", "allocations", "feeds", "failed feeds", "articles", "new"):
        t.add_column(col, justify="left" if col == "node" else "right")
    for n in summary["nodes"]:
        t.add_row(n["node"], str(n["allocations"]), str(n["feeds"]), str(n["feeds_failed"]),
                  str(n["articles"]), str(n["new_articles"]))
    t.add_section()
    t.add_row("[bold]total[/bold]", str(summary["allocations"]), str(summary["feeds"]),
              str(sum(n["feeds_failed"] for n in summary["nodes"])), str(summary["articles"]),
              str(summary["new_articles"]))
    out.print(t)
    status = "[green]all allocations completed[/green]" if \
        summary["completed"] == summary["allocations"] else \
        f"[red]{summary['failed']} allocation(s) failed[/red]"
    out.print(f"{status} in {summary['seconds']:.2f}s after dispatch "
              f"({summary['elapsed_s']:.1f}s including start-up and shut-down)")
    out.print("[dim]next: 'cascade init' on your parent host, 'cascade init --child NAME' per "
              "child, then 'cascade run-child' there (docs/child.md)[/dim]")
