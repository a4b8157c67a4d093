"""Cascade's own share of a child's work, in instructions: a figure the machine's load does not
move. One command, JSON on standard output:

    .venv/bin/python bench/bench_child_instructions.py [--feeds 200,600] [--parser fastfeedparser]

Why: ``bench_child.py`` splits the children's CPU seconds into fetch, parse and Cascade by
subtracting a plain loop's CPU, measured in another process at another moment; on a shared
2-core machine one such figure moves by 10 percentage points between runs. Here both sides are
counted by valgrind's callgrind, which counts executed instructions, the same for the same
program and input whatever else the machine does.

Method:
* a local feed server serves ``/synthetic/<n>.xml`` (the documents of ``bench_child.py``);
* **plain loop** (``bench_child.py --baseline``: the child's own HTTP client and parse, one feed
  after the other, nothing else) under callgrind, over the first ``A`` and then the first ``B``
  URLs (``--feeds A,B``);
* **child**: a real ``serve-parent`` (not under valgrind) and one ``run-child --burst`` under
  callgrind (capacity 4, fetch concurrency 32, 50 feeds per allocation, uploads of 500
  articles: the settings of ``bench_child.py``), given a task of ``A`` and then, in a fresh
  process, one of ``B`` other feeds;
* per feed = (instructions with ``B`` feeds - instructions with ``A``) / (B - A): start-up,
  imports and exit are the same in both and cancel out; what remains is the cost of a feed,
  its share of allocations, claims, uploads and completions included;
* ``cascade_share_pct`` = (child per feed - plain loop per feed) / child per feed.

Not counted: the kernel's work (system calls: sockets, the spool's file writes) and the time
the child waits. ``bench_child.py`` measures CPU seconds, kernel included, at full speed.
Under valgrind the child runs ~50x slower, so timers (heartbeats every 5 s) fire more often per
feed than at full speed: a small overstatement of Cascade's part. PYTHONHASHSEED is fixed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_child import start_feed_server  # noqa: E402

COLLECTED = re.compile(rb"==\d+== Collected : (\d+)")


def valgrind_prefix() -> list[str]:
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    return ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]


def instructions(stderr: bytes) -> int:
    found = COLLECTED.findall(stderr)
    if not found:
        tail = stderr.decode(errors="replace")[-2000:]
        raise RuntimeError("callgrind printed no total:\n" + tail)
    return int(found[-1])


def plain_loop_instructions(urls: list[str], parser: str, folder: Path,
                            env: dict[str, str]) -> int:
    urls_file = folder / f"plain-{len(urls)}.txt"
    urls_file.write_text("\n".join(urls))
    out = subprocess.run([*valgrind_prefix(), sys.executable, str(ROOT / "bench/bench_child.py"),
                          "--baseline", str(urls_file), "--parser", parser],
                         capture_output=True, env=env, cwd=ROOT, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.decode(errors="replace")[-2000:])
    return instructions(out.stderr)


class ParentUnderTest:
    """A real parent (full speed) with one child node, and tasks over given feed URLs."""

    def __init__(self, folder: Path, env: dict[str, str], parser: str) -> None:
        from cascade_cli.demo.runner import DemoProcesses, _free_port, _wait_healthy

        self.folder = folder
        self.env = env
        self.procs = DemoProcesses(folder)
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.config = folder / "parent.yaml"
        self.config.write_text(yaml.safe_dump({
            "data_dir": "parent-data", "database": {"url": "sqlite:///cascade.db"},
            "parent": {"host": "127.0.0.1", "port": port, "batch_size": 50,
                       "offline_after": 3600,
                       "scheduler": {"enabled": False}, "notify": {"enabled": False}},
            "log": {"level": "warning"}}))
        self.procs.cascade("init", config=self.config)
        self.creds = json.loads(self.procs.cascade(
            "init", "--child", "bench-1", "--capacity", "4", "--json",
            config=self.config).stdout)
        self.parser = parser
        self.parent = self.procs.start("serve-parent", "serve-parent", config=self.config)
        _wait_healthy(self.procs, self.url, 30)

    def child_config(self, name: str) -> Path:
        cfg = self.folder / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump({
            "cascade": {"enabled": True, "node_type": "child", "parent_api_url": self.url,
                        "api_key": self.creds["api_key"],
                        "api_secret": self.creds["api_secret"], "heartbeat_interval": 5},
            "child": {"capacity": 4, "fetch_concurrency": 32, "per_host_concurrency": 32,
                      "claim_wait": 0, "spool_path": f"{name}-spool.db",
                      "upload_batch_size": 500, "feed_parser": self.parser,
                      "fetch_timeout": 600},
            "log": {"level": "warning"}}))
        return cfg

    def dispatch(self, name: str, urls: list[str], first_id: int) -> tuple[str, int]:
        from cascade_cli.client import ParentClient
        from cascade_cli.clock import SystemClock
        from cascade_cli.config import load_settings
        from cascade_cli.domain.dispatch import dispatch
        from cascade_cli.protocol import FeedIn, MessageTaskIn
        from cascade_cli.store.engine import Store
        from cascade_cli.store.feeds import create_feed
        from cascade_cli.store.tasks import create_task

        settings = load_settings(self.config, environ={})
        store = Store.from_url(settings.database_url)
        clock = SystemClock()
        ids = [f"B{first_id + i}" for i in range(len(urls))]
        with store.session() as s:
            for fid, url in zip(ids, urls, strict=True):
                create_feed(s, clock.now(), FeedIn(id=fid, mp_name=fid, url=url))
            task_id = create_task(s, clock.now(), MessageTaskIn(name=name, mps_id=ids)).id
        # The node must be online to be given work; the child itself starts after the dispatch.
        with ParentClient(self.url, self.creds["api_key"], self.creds["api_secret"]) as client:
            client.heartbeat()
        with store.session() as s:
            created = dispatch(s, clock.now(), settings, task_id=task_id).allocations_created
        store.dispose()
        return task_id, created

    def completed(self, task_id: str) -> tuple[int, int]:
        from cascade_cli.config import load_settings
        from cascade_cli.store import allocations as alloc_store
        from cascade_cli.store.engine import Store

        store = Store.from_url(load_settings(self.config, environ={}).database_url)
        with store.session() as s:
            allocs, _ = alloc_store.list_allocations(s, task_id=task_id, limit=10_000)
        store.dispose()
        done = [a for a in allocs if a.get("status") == "completed"]
        return len(done), sum(int(a.get("article_count") or 0) for a in done)

    def stop(self) -> None:
        self.procs.stop()


def child_instructions(parent: ParentUnderTest, name: str, urls: list[str],
                       first_id: int) -> dict[str, Any]:
    task_id, created = parent.dispatch(name, urls, first_id)
    cfg = parent.child_config(name)
    t0 = time.perf_counter()
    out = subprocess.run([*valgrind_prefix(), sys.executable, "-m", "cascade_cli",
                          "--config", str(cfg), "run-child", "--burst"],
                         capture_output=True, env=parent.env, cwd=parent.folder, timeout=3600)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"run-child --burst exited {out.returncode}:\n"
                           + out.stderr.decode(errors="replace")[-3000:])
    done, articles = parent.completed(task_id)
    if done != created:
        raise RuntimeError(f"{name}: {done} of {created} allocations completed")
    return {"feeds": len(urls), "allocations": created, "articles": articles,
            "instructions": instructions(out.stderr), "wall_s": round(wall, 1)}


def run(small: int, large: int, parser: str, keep: bool) -> dict[str, Any]:
    from cascade_cli.demo.runner import DemoProcesses

    folder = Path(tempfile.mkdtemp(prefix="cascade-bench-instr-"))
    env = {**DemoProcesses(folder).env, "PYTHONHASHSEED": "0"}
    feed_proc, feed_port = start_feed_server(env)
    url = f"http://127.0.0.1:{feed_port}/synthetic/{{}}.xml".format
    result: dict[str, Any] = {
        "method": "callgrind instruction counts; per feed = difference between a run of "
                  f"{large} and one of {small} feeds, divided by {large - small} (see "
                  "python bench/bench_child_instructions.py --help)",
        "parser": parser, "feeds": [small, large],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()}}
    parent = None
    try:
        plain = {}
        for n in (small, large):
            print(f"plain loop, {n} feeds (callgrind)", file=sys.stderr, flush=True)
            plain[n] = plain_loop_instructions([url(i) for i in range(n)], parser, folder, env)
        parent = ParentUnderTest(folder, env, parser)
        child = {}
        # Other feeds than the plain loop's: the same documents (n mod the server's set),
        # different feed ids, so nothing is "not modified" and no article is a duplicate.
        offset = 100_000
        for n in (small, large):
            print(f"run-child --burst, {n} feeds (callgrind)", file=sys.stderr, flush=True)
            child[n] = child_instructions(parent, f"bench-{n}",
                                          [url(offset + i) for i in range(n)], offset)
            offset += n
        d = large - small
        plain_per_feed = (plain[large] - plain[small]) / d
        child_per_feed = (child[large]["instructions"] - child[small]["instructions"]) / d
        result.update({
            "plain_loop_instructions": {str(k): v for k, v in plain.items()},
            "child_runs": {str(k): v for k, v in child.items()},
            "plain_loop_per_feed": round(plain_per_feed),
            "child_per_feed": round(child_per_feed),
            "cascade_per_feed": round(child_per_feed - plain_per_feed),
            "cascade_share_pct": round(100 * (child_per_feed - plain_per_feed)
                                       / child_per_feed, 1)})
    finally:
        if parent is not None:
            parent.stop()
        feed_proc.terminate()
        feed_proc.wait(10)
        if keep:
            result["folder"] = str(folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feeds", default="200,600",
                    help="A,B: the two feed counts whose difference is measured (multiples "
                         "of 200: the child's 4 slots get allocations of 50 feeds)")
    ap.add_argument("--parser", default="fastfeedparser",
                    choices=["feedparser", "fastfeedparser"])
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    try:
        small, large = (int(x) for x in args.feeds.split(","))
    except ValueError:
        ap.error("--feeds: two numbers, A,B (e.g. 200,600)")
    if not 0 <= small < large:
        ap.error("--feeds: A must be smaller than B")
    print(json.dumps(run(small, large, args.parser, args.keep), indent=2))


if __name__ == "__main__":
    main()
